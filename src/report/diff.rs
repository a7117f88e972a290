//! `fkpnet diff`: what changed between runs' resolved configs, in user terms, and
//! their curves side by side.

use crate::run::{read_metrics, MetricsRow};
use anyhow::{bail, Context, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

pub use crate::config::diff::config_diff;
use std::collections::BTreeMap;

/// What to compare: a metrics.csv column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    ValRmse,
    ValLoss,
    TrainLoss,
    TrainRmse,
    ValNme,
    ValFr,
    ValAuc,
}

const METRICS: &[(&str, Metric)] = &[
    ("val_rmse_px", Metric::ValRmse),
    ("val_loss", Metric::ValLoss),
    ("train_loss", Metric::TrainLoss),
    ("train_rmse_px", Metric::TrainRmse),
    ("val_nme", Metric::ValNme),
    ("val_fr", Metric::ValFr),
    ("val_auc", Metric::ValAuc),
];

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        METRICS.iter().find(|(n, _)| *n == s).map(|(_, m)| *m).ok_or_else(|| {
            let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
            format!("unknown metric `{s}`; valid: {}", names.join(", "))
        })
    }
}

impl Metric {
    pub fn name(self) -> &'static str {
        METRICS.iter().find(|(_, m)| *m == self).map(|(n, _)| *n).expect("every metric is named")
    }

    pub fn of(self, r: &MetricsRow) -> Option<f64> {
        match self {
            Metric::ValRmse => r.val_rmse_px,
            Metric::ValLoss => r.val_loss,
            Metric::TrainLoss => r.train_loss,
            Metric::TrainRmse => r.train_rmse_px,
            Metric::ValNme => r.val_nme,
            Metric::ValFr => r.val_fr,
            Metric::ValAuc => r.val_auc,
        }
    }

    fn is_val(self) -> bool {
        matches!(self, Metric::ValRmse | Metric::ValLoss | Metric::ValNme | Metric::ValFr | Metric::ValAuc)
    }

    fn is_loss(self) -> bool {
        matches!(self, Metric::ValLoss | Metric::TrainLoss)
    }

    /// AUC grows as a net gets better; every other metric shrinks.
    pub fn higher_is_better(self) -> bool {
        self == Metric::ValAuc
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::ValRmse | Metric::TrainRmse => " px",
            Metric::ValNme | Metric::ValFr | Metric::ValAuc => " points of %",
            _ => "",
        }
    }
}

pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    pub config: Value,
    pub rows: Vec<MetricsRow>,
}

impl Run {
    /// A run dir, or a Caffe (glog) training log read as a run.
    pub fn load(dir: &Path) -> Result<Run> {
        let d = dir.display();
        if super::caffe_run::is_log(dir) {
            return super::caffe_run::load(dir);
        }
        if !dir.is_dir() {
            bail!("{d}: no such run directory (or a Caffe training log)");
        }
        let text = std::fs::read_to_string(dir.join("config.yaml"))
            .with_context(|| format!("{d} is not a run dir (no config.yaml)"))?;
        let config: Value = serde_yaml::from_str(&text).with_context(|| format!("{d}/config.yaml"))?;
        let rows = read_metrics(&dir.join("metrics.csv"))?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
        Ok(Run { name, dir: dir.to_path_buf(), config, rows })
    }

    pub fn loss_type(&self) -> String {
        self.config["net"]["loss"]["type"].as_str().unwrap_or("?").to_string()
    }

    /// (iteration, value) points of a metric.
    pub fn series(&self, m: Metric) -> Vec<(i64, f64)> {
        self.rows.iter().filter_map(|r| m.of(r).map(|v| (r.iter, v))).collect()
    }

    fn best(&self, m: Metric) -> Option<(i64, f64)> {
        let s = self.series(m).into_iter();
        if m.higher_is_better() {
            s.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            s.min_by(|a, b| a.1.total_cmp(&b.1))
        }
    }

    /// Trained on Kaggle's faces (the mean-face plateau of about 4 px is theirs).
    pub fn is_kaggle(&self) -> bool {
        self.config["data"]["format"].as_str().is_none_or(|f| f == "kaggle")
    }

    fn seconds_per_iter(&self) -> Option<f64> {
        self.rows.iter().rev().find(|r| r.iter > 0).map(|r| r.seconds / r.iter as f64)
    }
}

/// The metric to compare on: losses of different conventions are not comparable,
/// so those runs are compared on RMSE in pixels.
pub fn effective_metric(runs: &[Run], m: Metric) -> (Metric, Option<String>) {
    let losses: std::collections::BTreeSet<String> = runs.iter().map(Run::loss_type).collect();
    if m.is_loss() && losses.len() > 1 {
        let alt = if m == Metric::ValLoss { Metric::ValRmse } else { Metric::TrainRmse };
        let note = format!(
            "the runs use different losses ({}), so they are compared on {} instead of {}",
            losses.into_iter().collect::<Vec<_>>().join(", "),
            alt.name(),
            m.name()
        );
        return (alt, Some(note));
    }
    (m, None)
}

fn fmt(v: Option<f64>) -> String {
    v.map(
        |v| {
            if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-3) {
                format!("{v:.3e}")
            } else {
                format!("{v:.4}")
            }
        },
    )
    .unwrap_or_else(|| "-".into())
}

/// The side-by-side table, best/final values, time per iteration and the verdict.
pub fn table(runs: &[Run], m: Metric) -> String {
    let mut s = String::new();
    let w = runs.iter().map(|r| r.name.len()).max().unwrap_or(8).max(12);
    let series: Vec<BTreeMap<i64, f64>> = runs.iter().map(|r| r.series(m).into_iter().collect()).collect();
    let mut common: Vec<i64> =
        series[0].keys().copied().filter(|i| series.iter().all(|s| s.contains_key(i))).collect();
    if common.len() > 12 {
        let n = common.len();
        common = (0..12).map(|k| common[k * (n - 1) / 11]).collect();
        common.dedup();
    }
    s += &format!("{} at common iterations:\n{:>8}", m.name(), "iter");
    for r in runs {
        s += &format!("  {:>w$}", r.name);
    }
    s.push('\n');
    if common.is_empty() {
        s += "  (no iteration in common)\n";
    }
    for i in &common {
        s += &format!("{i:>8}");
        for ser in &series {
            s += &format!("  {:>w$}", fmt(ser.get(i).copied()));
        }
        s.push('\n');
    }
    let row = |label: &str, f: &dyn Fn(&Run) -> String| {
        let mut line = format!("{label:>8}");
        for r in runs {
            line += &format!("  {:>w$}", f(r));
        }
        line + "\n"
    };
    s += &row("best", &|r| r.best(m).map(|(i, v)| format!("{} @{i}", fmt(Some(v)))).unwrap_or("-".into()));
    s += &row("final", &|r| fmt(r.series(m).last().map(|p| p.1)));
    s += &row("s/iter", &|r| r.seconds_per_iter().map(|t| format!("{t:.4}")).unwrap_or("-".into()));
    s += &row("loss", &|r| r.loss_type());
    if let Some((_, base)) = runs[0].best(m) {
        for r in &runs[1..] {
            if let Some((_, v)) = r.best(m) {
                let first_better = if m.higher_is_better() { base >= v } else { base <= v };
                let (better, worse) =
                    if first_better { (&runs[0].name, &r.name) } else { (&r.name, &runs[0].name) };
                let d = (base - v).abs();
                s += &format!(
                    "best {}: {better} is better than {worse} by {d:.4}{} ({:.1}%)\n",
                    m.name(),
                    m.unit(),
                    100.0 * d / base.abs().max(v.abs())
                );
            }
        }
    }
    // The field's metrics beside the one compared, where the runs have them.
    for extra in [Metric::ValNme, Metric::ValFr, Metric::ValAuc] {
        if extra != m && runs.iter().all(|r| r.best(extra).is_some()) {
            s += &row(&format!("{}", extra.name()), &|r| {
                r.best(extra).map(|(i, v)| format!("{v:.3}% @{i}")).unwrap_or("-".into())
            });
        }
    }
    s
}

/// `fkpnet diff`'s output: each run's config against the first, the table, the plot
/// (written to `out` when given).
pub fn compare(runs: &[Run], metric: Metric, out: Option<&Path>) -> Result<String> {
    let (metric, note) = effective_metric(runs, metric);
    let mut s = String::new();
    for other in &runs[1..] {
        let lines = config_diff(&runs[0].config, &other.config);
        s += &format!(
            "config {} -> {}:{}\n",
            runs[0].name,
            other.name,
            if lines.is_empty() { " same" } else { "" }
        );
        for l in lines {
            s += &format!("  {l}\n");
        }
    }
    if let Some(n) = note {
        s += &format!("note: {n}\n");
    }
    s += &table(runs, metric);
    if metric.is_val() {
        for other in &runs[1..] {
            if let Some(why) = different_val_faces(&runs[0].config, &other.config) {
                s += &format!(
                    "warning: {} and {} were scored on different val faces ({why}), so this is not like for \
                     like; `fkpnet test RUN --data FILE` scores each on the same file\n",
                    runs[0].name, other.name
                );
            }
        }
    }
    if let Some(out) = out {
        super::plot::plot(runs, metric, out)?;
        s += &format!("plot: {}\n", out.display());
    }
    Ok(s)
}

/// The data keys that decide which faces a run's val tests score.
const VAL_KEYS: &[&str] =
    &["format", "train", "val", "images", "split", "seed", "labels", "split_group", "keypoints", "crop"];

/// Why two runs' val faces differ (the data keys that do), or None when they are the
/// same: equal keys, or files at other paths with the same bytes (a copy of the
/// data, or Caffe's HDF5 lists naming identical files). Runs without a config (a
/// train.log read on its own) are not judged.
fn different_val_faces(a: &Value, b: &Value) -> Option<String> {
    if a["data"].is_null() || b["data"].is_null() {
        return None;
    }
    let mut differ = Vec::new();
    for k in VAL_KEYS {
        let (x, y) = (&a["data"][*k], &b["data"][*k]);
        if x == y || (matches!(*k, "train" | "val" | "images") && same_file(x, y)) {
            continue;
        }
        let files = matches!(*k, "train" | "val" | "images");
        let gone: Vec<&str> = [x, y]
            .into_iter()
            .filter_map(|v| v.as_str())
            .filter(|f| files && *f != crate::data::SYNTHETIC && !Path::new(f).exists())
            .collect();
        differ.push(match gone.as_slice() {
            [] => format!("data.{k}"),
            g => format!("data.{k}: {} not here to compare", g.join(", ")),
        });
    }
    (!differ.is_empty()).then(|| differ.join("; "))
}

fn same_file(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else { return false };
    let (Ok(x), Ok(y)) = (std::fs::read(a), std::fs::read(b)) else { return false };
    if x == y {
        return true;
    }
    // HDF5 list files: the same number of listed files, each with the same bytes.
    let lines = |t: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(t)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    let (lx, ly) = (lines(&x), lines(&y));
    let h5 = |l: &[String]| !l.is_empty() && l.iter().all(|f| f.ends_with(".h5") || f.ends_with(".hdf5"));
    h5(&lx)
        && h5(&ly)
        && lx.len() == ly.len()
        && lx.iter().zip(&ly).all(|(p, q)| {
            let (base_a, base_b) = (
                Path::new(a).parent().unwrap_or(Path::new(".")),
                Path::new(b).parent().unwrap_or(Path::new(".")),
            );
            matches!((std::fs::read(base_a.join(p)), std::fs::read(base_b.join(q))), (Ok(u), Ok(v)) if u == v)
        })
}
