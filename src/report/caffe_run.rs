//! A Caffe training log read as a run, so `fkpnet diff runs/mine caffe_train.log` and
//! `fkpnet plot` put the original Caffe run beside fkpnet's: train losses at display
//! points (`Iteration N (... iter/s, ...), loss = L`), test losses (`Test net output
//! #k: NAME = V (* W = ...)`), rates (`Iteration N, lr = R`), and the solver and net
//! Caffe printed at the start, converted by the importer into the config `diff`
//! compares. Both glog prefixes are read: `I1128 10:49:37.245 ...` and glog 0.6's
//! `I20261128 10:49:37.245 ...` (which Caffe's own parse_log.py misreads).
//!
//! Losses are Caffe's. Where the net ends in a EuclideanLoss on 30 values (Kaggle's 15
//! keypoints, labels (xy - 48) / 48 as Caffe setups for this data scale them), the
//! RMSE in pixels is 48 * sqrt(2 L / 30), as fkpnet reports it.

use super::diff::Run;
use crate::run::MetricsRow;
use anyhow::{bail, Context, Result};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Whether `path` is a glog-style log (a file whose first line has glog's prefix).
pub fn is_log(path: &Path) -> bool {
    path.is_file()
        && std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().next().map(|l| glog(l).is_some()))
            .unwrap_or(false)
}

/// (seconds of the day, message) of a glog line; None for other lines.
fn glog(line: &str) -> Option<(f64, &str)> {
    let mut parts = line.splitn(5, ' ');
    let head = parts.next()?;
    let (sev, date) = head.split_at_checked(1)?;
    if !matches!(sev, "I" | "W" | "E" | "F")
        || !(date.len() == 4 || date.len() == 8)
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let time = parts.next()?;
    let hms: Vec<f64> = time.split(':').map(|v| v.parse::<f64>()).collect::<Result<_, _>>().ok()?;
    let [h, m, s] = hms[..] else { return None };
    // The thread id may be padded with spaces; the message starts after the first "] ".
    let rest = line.split_once("] ")?.1;
    Some((h * 3600.0 + m * 60.0 + s, rest))
}

/// `Iteration 24, lr = 0.001` -> 24; and the rest after the comma or parenthesis.
fn iteration(msg: &str) -> Option<(i64, &str)> {
    let rest = msg.strip_prefix("Iteration ")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((rest[..end].parse().ok()?, &rest[end..]))
}

/// `    Test net output #0: loss = 2.10513 (* 1 = 2.10513 loss)` -> (loss, 2.10513, Some(2.10513)).
fn output(msg: &str, which: &str) -> Option<(String, f64, Option<f64>)> {
    let rest = msg.trim_start().strip_prefix(which)?;
    let (_, rest) = rest.split_once(": ")?;
    let (name, rest) = rest.split_once(" = ")?;
    let (value, weighted) = match rest.split_once(" (* ") {
        Some((v, w)) => (v, w.split_once(" = ").and_then(|(_, x)| x.trim_end_matches(" loss)").parse().ok())),
        None => (rest, None),
    };
    Some((name.to_string(), value.trim().parse().ok()?, weighted))
}

/// What a log holds: rows by iteration and the protobuf text dumps.
#[derive(Default)]
struct Parsed {
    rows: BTreeMap<i64, MetricsRow>,
    solver: String,
    net: String,
    /// The TEST net Caffe printed second: its TEST-only layers (the val data layer).
    test_net: String,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let (mut start, mut day, mut last_t) = (None::<f64>, 0.0, 0.0);
    // Which dump the unprefixed lines belong to (0: none, 1: solver, 2: the TRAIN net,
    // 3: the TEST net).
    let (mut dump, mut nets) = (0, 0);
    let mut testing = None::<i64>;
    for line in text.lines() {
        let Some((t, msg)) = glog(line) else {
            match dump {
                1 => p.solver += &format!("{line}\n"),
                2 => p.net += &format!("{line}\n"),
                3 => p.test_net += &format!("{line}\n"),
                _ => {}
            }
            continue;
        };
        if t + day < last_t {
            day += 86_400.0; // past midnight
        }
        last_t = t + day;
        let secs = last_t - *start.get_or_insert(last_t);
        dump = 0;
        if msg.starts_with("Initializing solver from parameters") {
            dump = 1;
        } else if msg.starts_with("Initializing net from parameters") {
            nets += 1;
            dump = match nets {
                1 => 2,
                2 => 3,
                _ => 0,
            };
        }
        if let Some((iter, rest)) = iteration(msg) {
            if rest.starts_with(", Testing net (#0)") {
                testing = Some(iter);
            } else if let Some(l) = rest.split_once("loss = ").map(|(_, l)| l) {
                // `Iteration N (x iter/s, ...), loss = L` (display) or the final `Iteration N, loss = L`.
                if let Ok(l) = l.trim().parse::<f64>() {
                    row(&mut p.rows, iter, secs).train_loss = Some(l);
                }
            } else if let Some(lr) = rest.strip_prefix(", lr = ") {
                row(&mut p.rows, iter, secs).lr = lr.trim().parse().ok();
            }
            continue;
        }
        if let (Some(iter), Some((name, v, weighted))) = (testing, output(msg, "Test net output #")) {
            let r = row(&mut p.rows, iter, secs);
            match (name.as_str(), weighted) {
                (_, Some(w)) => r.val_loss = Some(r.val_loss.unwrap_or(0.0) + w),
                ("rmse_px", None) => r.val_rmse_px = Some(v),
                ("nme_pct", None) => r.val_nme = Some(v),
                ("failure_pct", None) => r.val_fr = Some(v),
                ("auc_pct", None) => r.val_auc = Some(v),
                _ => {}
            }
        }
    }
    p
}

/// The row of `iter`, made when first seen; its time is the latest line's.
fn row(rows: &mut BTreeMap<i64, MetricsRow>, iter: i64, secs: f64) -> &mut MetricsRow {
    let r = rows.entry(iter).or_insert_with(|| MetricsRow { iter, ..Default::default() });
    r.seconds = secs;
    r
}

/// The log's run: its rows, and its solver and net converted as `fkpnet import-caffe`
/// converts them (empty where the log has no dumps, as fkpnet's own train.log).
pub fn load(path: &Path) -> Result<Run> {
    let f = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {f}"))?;
    let parsed = parse(&text);
    if parsed.rows.is_empty() {
        bail!("{f}: no training or test lines (Iteration N ..., Test net output ...) in this log");
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::path::PathBuf::from(crate::config::absolute(dir, "."));
    let config = config_of(&parsed, &dir).unwrap_or(Value::Mapping(Default::default()));
    let mut rows: Vec<MetricsRow> = parsed.rows.into_values().collect();
    // EuclideanLoss on Kaggle's 30 values: RMSE in pixels as fkpnet reports it.
    let outputs =
        config["net"]["layers"].as_sequence().and_then(|l| l.last()).and_then(|l| l["num_output"].as_i64());
    if config["net"]["loss"]["type"].as_str() == Some("euclidean") && outputs == Some(30) {
        let px = |l: f64| 48.0 * (2.0 * l / 30.0).sqrt();
        for r in &mut rows {
            r.val_rmse_px = r.val_rmse_px.or(r.val_loss.map(px));
            r.train_rmse_px = r.train_rmse_px.or(r.train_loss.map(px));
        }
    }
    let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("caffe").to_string();
    Ok(Run { name, dir: path.to_path_buf(), config, rows })
}

/// The solver and net Caffe printed, imported (in a scratch folder) as fkpnet config.
/// Relative data sources are taken as relative to the log's folder (`log_dir`): Caffe
/// read them from where it ran, which the log does not say, and a log usually sits
/// beside its prototxts.
fn config_of(p: &Parsed, log_dir: &Path) -> Option<Value> {
    if p.net.is_empty() {
        return None;
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("fkpnet-caffe-log-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let (net, solver) = (dir.join("net.prototxt"), dir.join("solver.prototxt"));
    let net_text = format!("{}{}", p.net, test_only_layers(&p.test_net));
    let imported = std::fs::write(&net, net_text)
        .and_then(|()| {
            std::fs::write(&solver, format!("{}net: \"net.prototxt\"\n", strip_net_field(&p.solver)))
        })
        .ok()
        .and_then(|()| crate::caffe::import(&net, Some(&solver), &Default::default()).ok());
    let _ = std::fs::remove_dir_all(&dir);
    let moved = |v: &mut String| {
        if let Ok(rest) = Path::new(v.as_str()).strip_prefix(&dir) {
            *v = crate::config::absolute(log_dir, &rest.display().to_string());
        }
    };
    // Resolved as a run's config.yaml is (every default filled in), so `diff` compares
    // like with like.
    let imported = imported?;
    let mut solver: crate::config::SolverConfig =
        serde_yaml::from_str(imported.solver_yaml.as_deref()?).ok()?;
    moved(&mut solver.data.train);
    if let Some(val) = solver.data.val.as_mut() {
        moved(val);
    }
    let net: crate::config::NetConfig = serde_yaml::from_str(&imported.net_yaml).ok()?;
    let src = crate::config::NetSource {
        path: net_path_for_errors(),
        text: imported.net_yaml.clone(),
        sets: vec![],
    };
    solver.net = crate::graph::Graph::compile(&net, &src, None).ok()?.resolved();
    serde_yaml::to_value(solver).ok()
}

/// The top-level `layer { ... }` blocks of a printed net that hold `phase: TEST`
/// (a TEST-only data layer), to add to the TRAIN net so the import sees both phases as
/// in a train_val prototxt.
fn test_only_layers(net: &str) -> String {
    let (mut out, mut block, mut depth) = (String::new(), String::new(), 0usize);
    for line in net.lines() {
        if depth == 0 && !line.starts_with("layer {") {
            continue;
        }
        block += &format!("{line}\n");
        depth += line.matches('{').count();
        depth -= line.matches('}').count().min(depth);
        if depth == 0 {
            if block.contains("phase: TEST") {
                out += &block;
            }
            block.clear();
        }
    }
    out
}

fn net_path_for_errors() -> std::path::PathBuf {
    std::path::PathBuf::from("the log's net")
}

/// The solver dump without its `net:` (the net comes from the dump that follows) and
/// its `train_state` block (which the solver file format does not take).
fn strip_net_field(solver: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for line in solver.lines() {
        let t = line.trim();
        if depth == 0 && t.starts_with("train_state") {
            depth = 1;
            continue;
        }
        if depth > 0 {
            depth += t.matches('{').count();
            depth -= t.matches('}').count().min(depth);
            continue;
        }
        if !t.starts_with("net:") {
            out += &format!("{line}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_glog_prefixes_and_caffes_line_shapes() {
        assert_eq!(
            glog("I20261128 10:49:37.245481 18921 solver.cpp:347] Iteration 0, Testing net (#0)").unwrap().1,
            "Iteration 0, Testing net (#0)"
        );
        assert_eq!(
            glog("I1128 10:49:37.5 18921 solver.cpp:347] x").unwrap().0,
            10.0 * 3600.0 + 49.0 * 60.0 + 37.5
        );
        assert!(glog("test_iter: 1").is_none() && glog("Iteration 3").is_none());
        assert_eq!(iteration("Iteration 24, lr = 0.001"), Some((24, ", lr = 0.001")));
        assert_eq!(
            output("    Test net output #0: loss = 2.10513 (* 1 = 2.10513 loss)", "Test net output #"),
            Some(("loss".into(), 2.10513, Some(2.10513)))
        );
        assert_eq!(
            output("    Test net output #1: rmse_px = 4.5", "Test net output #"),
            Some(("rmse_px".into(), 4.5, None))
        );
        let log = "I1128 23:59:59.0 1 solver.cpp:347] Iteration 0, Testing net (#0)\n\
                   I1128 23:59:59.5 1 solver.cpp:414]     Test net output #0: loss = 2 (* 0.5 = 1 loss)\n\
                   I1129 00:00:01.0 1 solver.cpp:239] Iteration 0 (0 iter/s, 1s/24 iters), loss = 3\n\
                   I1129 00:00:01.0 1 sgd_solver.cpp:112] Iteration 0, lr = 0.01\n\
                   I1129 00:00:09.0 1 solver.cpp:327] Iteration 48, loss = 0.5\n";
        let p = parse(log);
        let r0 = &p.rows[&0];
        assert_eq!((r0.val_loss, r0.train_loss, r0.lr, r0.seconds), (Some(1.0), Some(3.0), Some(0.01), 2.0));
        assert_eq!((p.rows[&48].train_loss, p.rows[&48].seconds), (Some(0.5), 10.0), "past midnight");
    }
}
