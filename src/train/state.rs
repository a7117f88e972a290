//! The train loop's own running state. A snapshot carries it (beside the solver's
//! history), so a resumed run reports exactly what the uninterrupted one would: the
//! display window, the smoothed loss, the plateau and early-stop counters, the best
//! val result. Stored in the solverstate by field name (`loop.window_sq`, ...).

use crate::config::solver::LrPolicy;
use crate::config::SolverConfig;
use anyhow::{anyhow, Result};
use std::collections::{HashMap, VecDeque};
use tch::{Kind, Tensor};

/// The best val result so far (the lowest weighted val loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestVal {
    pub loss: f64,
    pub rmse_px: f64,
    pub iter: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopState {
    /// Squared error and its count since the last display: the displayed train RMSE.
    pub window_sq: f64,
    pub window_count: f64,
    /// The last `average_loss` iterations' losses: the displayed (smoothed) train loss.
    pub recent_losses: VecDeque<f64>,
    /// lr_policy plateau's reductions of the rate so far.
    pub lr_drops: i64,
    /// Tests since the val loss last improved: overall (early_stop) and since the last
    /// reduction (plateau).
    pub tests_since_best: i64,
    pub tests_since_drop: i64,
    pub best: Option<BestVal>,
}

/// What a val test means for the schedule.
#[derive(Debug, Default, PartialEq)]
pub struct AfterTest {
    /// lr_policy plateau lowers the rate now.
    pub lr_drop: bool,
    /// early_stop ends training now.
    pub stop: bool,
}

impl LoopState {
    /// Count a val test (improved or not) as plateau and early_stop see it.
    pub fn after_test(&mut self, improved: bool, cfg: &SolverConfig) -> AfterTest {
        (self.tests_since_best, self.tests_since_drop) =
            if improved { (0, 0) } else { (self.tests_since_best + 1, self.tests_since_drop + 1) };
        let mut out = AfterTest::default();
        if cfg.lr_policy == LrPolicy::Plateau && self.tests_since_drop >= cfg.patience.unwrap_or(1) {
            self.lr_drops += 1;
            self.tests_since_drop = 0;
            out.lr_drop = true;
        }
        out.stop = cfg.early_stop > 0 && self.tests_since_best >= cfg.early_stop;
        out
    }

    /// One iteration's loss into the smoothing window of `average_loss`; the smoothed loss.
    pub fn record_loss(&mut self, loss: f64, average_loss: i64) -> f64 {
        self.recent_losses.push_back(loss);
        if self.recent_losses.len() > average_loss as usize {
            self.recent_losses.pop_front();
        }
        self.recent_losses.iter().sum::<f64>() / self.recent_losses.len() as f64
    }

    /// The solverstate entries, by field name.
    pub fn to_entries(&self) -> Vec<(String, Tensor)> {
        let one = |v: f64| Tensor::from_slice(&[v]);
        let mut e = vec![
            ("loop.window_sq".to_string(), one(self.window_sq)),
            ("loop.window_count".into(), one(self.window_count)),
            (
                "loop.recent_losses".into(),
                Tensor::from_slice(&self.recent_losses.iter().copied().collect::<Vec<f64>>()),
            ),
            ("loop.lr_drops".into(), Tensor::from_slice(&[self.lr_drops])),
            ("loop.tests_since_best".into(), Tensor::from_slice(&[self.tests_since_best])),
            ("loop.tests_since_drop".into(), Tensor::from_slice(&[self.tests_since_drop])),
        ];
        if let Some(b) = self.best {
            e.push(("loop.best".into(), Tensor::from_slice(&[b.loss, b.rmse_px, b.iter as f64])));
        }
        e
    }

    /// From a solverstate's entries; also reads those written before 2026-12-01
    /// (`fkpnet.loop`, a positional list, and `fkpnet.best`).
    pub fn from_entries(e: &HashMap<String, Tensor>, file: &str) -> Result<LoopState> {
        let f64s = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default();
        let best = |t: Option<&Tensor>| {
            t.map(f64s).filter(|v| v.len() == 3).map(|v| BestVal {
                loss: v[0],
                rmse_px: v[1],
                iter: v[2] as i64,
            })
        };
        if let Some(old) = e.get("fkpnet.loop") {
            let v = f64s(old);
            let [sq, count, drops, since_best, since_drop, losses @ ..] = v.as_slice() else {
                return Err(anyhow!("{file}: `fkpnet.loop` is too short for a loop state"));
            };
            return Ok(LoopState {
                window_sq: *sq,
                window_count: *count,
                recent_losses: losses.iter().copied().collect(),
                lr_drops: *drops as i64,
                tests_since_best: *since_best as i64,
                tests_since_drop: *since_drop as i64,
                best: best(e.get("fkpnet.best")),
            });
        }
        let get =
            |n: &str| e.get(n).ok_or_else(|| anyhow!("{file}: no `{n}` entry; not an fkpnet solverstate"));
        let scalar = |n: &str| -> Result<f64> {
            f64s(get(n)?).first().copied().ok_or_else(|| anyhow!("{file}: `{n}` is empty"))
        };
        Ok(LoopState {
            window_sq: scalar("loop.window_sq")?,
            window_count: scalar("loop.window_count")?,
            recent_losses: f64s(get("loop.recent_losses")?).into_iter().collect(),
            lr_drops: scalar("loop.lr_drops")? as i64,
            tests_since_best: scalar("loop.tests_since_best")? as i64,
            tests_since_drop: scalar("loop.tests_since_drop")? as i64,
            best: best(e.get("loop.best")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LoopState {
        LoopState {
            window_sq: 1.25,
            window_count: 60.0,
            recent_losses: [0.5, 0.25].into_iter().collect(),
            lr_drops: 2,
            tests_since_best: 3,
            tests_since_drop: 1,
            best: Some(BestVal { loss: 0.125, rmse_px: 2.5, iter: 480 }),
        }
    }

    #[test]
    fn the_loop_state_round_trips_by_name_and_old_solverstates_still_read() {
        let s = sample();
        let e: HashMap<String, Tensor> = s.to_entries().into_iter().collect();
        assert_eq!(LoopState::from_entries(&e, "x").unwrap(), s);
        let old: HashMap<String, Tensor> = [
            ("fkpnet.loop".to_string(), Tensor::from_slice(&[1.25, 60.0, 2.0, 3.0, 1.0, 0.5, 0.25])),
            ("fkpnet.best".to_string(), Tensor::from_slice(&[0.125, 2.5, 480.0])),
        ]
        .into_iter()
        .collect();
        assert_eq!(LoopState::from_entries(&old, "x").unwrap(), s);
        let e = LoopState::from_entries(&HashMap::new(), "s.solverstate").unwrap_err().to_string();
        assert!(e.contains("s.solverstate: no `loop.window_sq`"), "{e}");
    }

    #[test]
    fn plateau_and_early_stop_count_tests_without_improvement() {
        let cfg: SolverConfig = serde_yaml::from_str(
            "net: x\ndata: {train: synthetic}\nbase_lr: 0.1\nmax_iter: 1\nbatch_size: 1\nlr_policy: plateau\ngamma: 0.5\npatience: 2\nearly_stop: 3\n",
        )
        .unwrap();
        let mut s = LoopState::default();
        assert_eq!(s.after_test(false, &cfg), AfterTest::default());
        assert_eq!(s.after_test(false, &cfg), AfterTest { lr_drop: true, stop: false });
        assert_eq!(s.after_test(false, &cfg), AfterTest { lr_drop: false, stop: true });
        assert_eq!((s.lr_drops, s.tests_since_best, s.tests_since_drop), (1, 3, 1));
        s.after_test(true, &cfg);
        assert_eq!((s.tests_since_best, s.tests_since_drop), (0, 0));
        assert_eq!(s.record_loss(1.0, 2), 1.0);
        assert_eq!(s.record_loss(3.0, 2), 2.0);
        assert_eq!(s.record_loss(5.0, 2), 4.0, "a window of the last 2");
    }
}
