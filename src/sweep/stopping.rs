//! Stopping losing trials early, at their val tests: asynchronous successive halving
//! (ASHA, as Ray Tune's AsyncHyperBandScheduler computes it) and the median rule (as
//! Google Vizier and Ray's MedianStoppingRule). Trials on any number of machines
//! report to one ledger file in the sweep dir, read and appended under an exclusive
//! lock, so concurrent trials see each other's results and never interleave a line.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::Path;

pub const LEDGER: &str = "ledger.tsv";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum StopRule {
    /// Rungs at grace, grace*reduction, grace*reduction^2, ... below max_iter; at each,
    /// a trial goes on only if its val metric is in the best 1/reduction of those
    /// recorded at that rung so far.
    Asha { grace: i64, reduction: f64, max_iter: i64 },
    /// From `grace` on, a trial stops when its best val metric so far is worse than the
    /// median of the other trials' running means up to the same iteration (with at
    /// least `min_trials` others there).
    Median { grace: i64, min_trials: usize },
}

impl StopRule {
    pub fn check(&self) -> Result<()> {
        match self {
            StopRule::Asha { grace, reduction, max_iter } => {
                if *grace < 1 {
                    bail!("--grace {grace}: the first rung must be at iteration 1 or later");
                }
                if !(*reduction >= 2.0) {
                    bail!("--reduction {reduction}: the reduction factor must be 2 or more (Ray's default is 4, Hyperband's 3)");
                }
                if *max_iter <= *grace {
                    bail!("--grace {grace} is not below max_iter {max_iter}: no rung would stop anything");
                }
            }
            StopRule::Median { grace, min_trials } => {
                if *grace < 0 || *min_trials < 1 {
                    bail!("--grace must be 0 or more and --min-trials 1 or more");
                }
            }
        }
        Ok(())
    }

    /// `asha (rungs at 100, 300, 900; reduction 3)` for the plan's printout.
    pub fn describe(&self) -> String {
        match self {
            StopRule::Asha { reduction, .. } => {
                let r: Vec<String> = self.rungs().iter().map(|m| m.to_string()).collect();
                format!("asha: rungs at iterations {}, the best 1/{reduction} go on", r.join(", "))
            }
            StopRule::Median { grace, min_trials } => {
                format!("median: from iteration {grace}, with {min_trials}+ others to compare")
            }
        }
    }

    /// ASHA's rung iterations, lowest first.
    pub fn rungs(&self) -> Vec<i64> {
        let StopRule::Asha { grace, reduction, max_iter } = *self else { return Vec::new() };
        let mut out = Vec::new();
        let mut m = grace as f64;
        while (m.round() as i64) < max_iter {
            out.push(m.round() as i64);
            m *= reduction;
        }
        out
    }
}

/// One ledger line: a trial's val metric at an iteration, and the ASHA rung it was
/// recorded at (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: String,
    pub iter: i64,
    pub value: f64,
    pub rung: Option<i64>,
}

/// numpy's percentile with linear interpolation (q in 0..=100), as Ray computes cutoffs.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The decision for `id` reporting `value` (lower is better) at `iter`, given the
/// ledger so far: Some(reason) to stop; and the rung to record this report at.
pub fn decide(
    rule: &StopRule,
    ledger: &[Report],
    id: &str,
    iter: i64,
    value: f64,
) -> (Option<String>, Option<i64>) {
    match rule {
        StopRule::Asha { reduction, .. } => {
            // Ray: the highest rung at or below this iteration that the trial has not
            // been recorded at; compared with the others recorded there before it.
            let rung = rule
                .rungs()
                .into_iter()
                .rev()
                .find(|&m| iter >= m && !ledger.iter().any(|r| r.id == id && r.rung == Some(m)));
            let Some(m) = rung else { return (None, None) };
            let recorded: Vec<f64> = ledger.iter().filter(|r| r.rung == Some(m)).map(|r| r.value).collect();
            if recorded.is_empty() {
                return (None, Some(m));
            }
            let cutoff = percentile(&recorded, 100.0 / reduction);
            let stop = (value > cutoff).then(|| {
                format!(
                    "asha rung {m}: val {value:.4} is not in the best 1/{reduction} of the {} trials there (cutoff {cutoff:.4})",
                    recorded.len() + 1
                )
            });
            (stop, Some(m))
        }
        StopRule::Median { grace, min_trials } => {
            if iter < *grace {
                return (None, None);
            }
            let mine = ledger.iter().filter(|r| r.id == id && r.iter <= iter).map(|r| r.value);
            let best = mine.fold(value, f64::min);
            let mut others: Vec<&str> = ledger.iter().filter(|r| r.id != id).map(|r| r.id.as_str()).collect();
            others.sort();
            others.dedup();
            // The others that have reached this iteration: their running mean up to it.
            let means: Vec<f64> = others
                .iter()
                .filter(|o| ledger.iter().any(|r| r.id == **o && r.iter >= iter))
                .map(|o| {
                    let v: Vec<f64> =
                        ledger.iter().filter(|r| r.id == *o && r.iter <= iter).map(|r| r.value).collect();
                    v.iter().sum::<f64>() / v.len().max(1) as f64
                })
                .collect();
            if means.len() < *min_trials {
                return (None, None);
            }
            let median = percentile(&means, 50.0);
            let stop = (best > median).then(|| {
                format!(
                    "median rule at iteration {iter}: best val {best:.4} is worse than the median {median:.4} of {} other trials' running means",
                    means.len()
                )
            });
            (stop, None)
        }
    }
}

fn parse_ledger(text: &str, path: &Path) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            anyhow::anyhow!(
                "{}:{}: not a ledger line (id, iter, value, rung): {line:?}",
                path.display(),
                n + 1
            )
        };
        let [id, iter, value, rung] = f.as_slice() else { return Err(bad()) };
        out.push(Report {
            id: id.to_string(),
            iter: iter.parse().map_err(|_| bad())?,
            value: value.parse().map_err(|_| bad())?,
            rung: if *rung == "-" { None } else { Some(rung.parse().map_err(|_| bad())?) },
        });
    }
    Ok(out)
}

/// Report a val test to the sweep's ledger and get the rule's decision, under an
/// exclusive lock on the ledger file (flock: safe between processes and machines on
/// shared storage that supports it).
pub fn report(dir: &Path, rule: &StopRule, id: &str, iter: i64, value: f64) -> Result<Option<String>> {
    let path = dir.join(LEDGER);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| format!("cannot open the sweep's ledger {}", path.display()))?;
    f.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    let mut text = String::new();
    f.seek(std::io::SeekFrom::Start(0))?;
    f.read_to_string(&mut text)?;
    let ledger = parse_ledger(&text, &path)?;
    let (stop, rung) = decide(rule, &ledger, id, iter, value);
    let rung = rung.map_or("-".to_string(), |m| m.to_string());
    f.write_all(format!("{id}\t{iter}\t{value}\t{rung}\n").as_bytes())?;
    f.sync_data()?;
    f.unlock()?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(id: &str, iter: i64, value: f64, rung: Option<i64>) -> Report {
        Report { id: id.into(), iter, value, rung }
    }

    #[test]
    fn percentile_interpolates_as_numpy() {
        // numpy.percentile([1, 2, 3, 4], q) for q = 0, 25, 50, 100/3, 100.
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 25.0), 1.75);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 100.0 / 3.0) - 2.0).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[5.0], 33.0), 5.0);
    }

    #[test]
    fn asha_follows_the_hand_computed_ladder() {
        let rule = StopRule::Asha { grace: 100, reduction: 3.0, max_iter: 1000 };
        assert_eq!(rule.rungs(), vec![100, 300, 900]);
        assert_eq!(StopRule::Asha { grace: 10, reduction: 2.0, max_iter: 80 }.rungs(), vec![10, 20, 40]);
        // Trials a..e reach rung 100 in turn with val 5, 4, 6, 3, 4.5 (lower is better).
        // a: first there, goes on. b: cutoff = 5 (one value), 4 <= 5 goes on.
        // c: cutoff = percentile([5,4], 33.3) = 4.333; 6 > it: stopped.
        // d: cutoff = percentile([5,4,6], 33.3) = 4.667; 3 goes on.
        // e: cutoff = percentile([5,4,6,3], 33.3) = 4.0; 4.5 stopped.
        let mut ledger = Vec::new();
        let mut stopped = Vec::new();
        for (id, v) in [("a", 5.0), ("b", 4.0), ("c", 6.0), ("d", 3.0), ("e", 4.5)] {
            let (stop, rung) = decide(&rule, &ledger, id, 100, v);
            assert_eq!(rung, Some(100));
            if stop.is_some() {
                stopped.push(id);
            }
            ledger.push(rep(id, 100, v, rung));
        }
        assert_eq!(stopped, ["c", "e"]);
        // Between rungs nothing is recorded or stopped.
        assert_eq!(decide(&rule, &ledger, "a", 200, 9.0), (None, None));
        // At 300: a first (goes on), then d better than a's 4.0 goes on, b worse stops.
        let (s, r) = decide(&rule, &ledger, "a", 300, 4.0);
        assert_eq!((s.is_none(), r), (true, Some(300)));
        ledger.push(rep("a", 300, 4.0, r));
        let (s, _) = decide(&rule, &ledger, "d", 300, 2.5);
        assert!(s.is_none());
        ledger.push(rep("d", 300, 2.5, Some(300)));
        // percentile([4.0, 2.5], 33.3) = 3.0; b's 3.5 is worse.
        let (s, _) = decide(&rule, &ledger, "b", 300, 3.5);
        assert!(s.unwrap().contains("cutoff 3.0000"));
        // A resumed trial reporting rung 100 again is not recorded twice.
        assert_eq!(decide(&rule, &ledger, "d", 100, 3.0).1, None);
    }

    #[test]
    fn median_rule_compares_best_so_far_with_the_others_running_means() {
        let rule = StopRule::Median { grace: 20, min_trials: 2 };
        let ledger = vec![
            rep("a", 10, 6.0, None),
            rep("a", 20, 4.0, None), // mean up to 20: 5.0
            rep("b", 10, 8.0, None),
            rep("b", 20, 6.0, None), // mean up to 20: 7.0
            rep("c", 10, 9.0, None), // not at 20 yet: not compared
        ];
        assert_eq!(decide(&rule, &ledger, "x", 10, 99.0).0, None, "before grace");
        // Median of 5.0 and 7.0 is 6.0: 6.5 is worse, 5.5 better.
        assert!(decide(&rule, &ledger, "x", 20, 6.5).0.is_some());
        assert!(decide(&rule, &ledger, "x", 20, 5.5).0.is_none());
        // Its best so far counts: an earlier 5.0 keeps it.
        let mut l = ledger.clone();
        l.push(rep("x", 10, 5.0, None));
        assert!(decide(&rule, &l, "x", 20, 6.5).0.is_none());
        // Fewer than min_trials others there: no decision.
        let few = StopRule::Median { grace: 20, min_trials: 3 };
        assert!(decide(&few, &ledger, "x", 20, 50.0).0.is_none());
    }

    #[test]
    fn the_ledger_is_shared_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let rule = StopRule::Asha { grace: 2, reduction: 2.0, max_iter: 8 };
        assert!(report(dir.path(), &rule, "a", 2, 1.0).unwrap().is_none());
        assert!(report(dir.path(), &rule, "b", 2, 2.0).unwrap().is_some(), "worse than a at rung 2");
        let text = std::fs::read_to_string(dir.path().join(LEDGER)).unwrap();
        assert_eq!(text, "a\t2\t1\t2\nb\t2\t2\t2\n");
        std::fs::write(dir.path().join(LEDGER), "garbage\n").unwrap();
        let e = report(dir.path(), &rule, "c", 2, 1.0).unwrap_err().to_string();
        assert!(e.contains("ledger.tsv:1") && e.contains("not a ledger line"), "{e}");
    }
}
