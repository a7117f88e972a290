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
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "val_rmse_px" => Metric::ValRmse,
            "val_loss" => Metric::ValLoss,
            "train_loss" => Metric::TrainLoss,
            "train_rmse_px" => Metric::TrainRmse,
            _ => {
                return Err(format!(
                    "unknown metric `{s}`; valid: val_rmse_px, val_loss, train_loss, train_rmse_px"
                ))
            }
        })
    }
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::ValRmse => "val_rmse_px",
            Metric::ValLoss => "val_loss",
            Metric::TrainLoss => "train_loss",
            Metric::TrainRmse => "train_rmse_px",
        }
    }

    pub fn of(self, r: &MetricsRow) -> Option<f64> {
        match self {
            Metric::ValRmse => r.val_rmse_px,
            Metric::ValLoss => r.val_loss,
            Metric::TrainLoss => r.train_loss,
            Metric::TrainRmse => r.train_rmse_px,
        }
    }

    fn is_loss(self) -> bool {
        matches!(self, Metric::ValLoss | Metric::TrainLoss)
    }
}

pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    pub config: Value,
    pub rows: Vec<MetricsRow>,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run> {
        let d = dir.display();
        if !dir.is_dir() {
            bail!("{d}: no such run directory");
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
        self.series(m).into_iter().min_by(|a, b| a.1.total_cmp(&b.1))
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
                let (better, worse, d) = if v < base {
                    (&r.name, &runs[0].name, base - v)
                } else {
                    (&runs[0].name, &r.name, v - base)
                };
                let unit = if m.is_loss() { "" } else { " px" };
                s += &format!(
                    "best {}: {better} is better than {worse} by {d:.4}{unit} ({:.1}%)\n",
                    m.name(),
                    100.0 * d / base.max(v)
                );
            }
        }
    }
    s
}
