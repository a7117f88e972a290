//! `fkpnet sweep collect DIR`: each trial's status, the comparison `fkpnet diff`
//! prints (config differences, curves, best), the ensemble of the finished trials,
//! and the best trial's config as a file to train again.

use super::manifest::{Manifest, Status, TrialResult};
use crate::report::diff::{compare, Metric, Run};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct Collected {
    pub text: String,
    /// The run dirs of the trials with results, in trial order.
    pub run_dirs: Vec<PathBuf>,
    pub best: Option<PathBuf>,
}

/// One line for a result: `finished: best val 2.310 px at iteration 400 (12.3 s)`.
pub fn describe(r: &TrialResult) -> String {
    let best = match (r.best_val_rmse_px, r.best_iter) {
        (Some(v), Some(i)) => format!("best val {v:.3} px at iteration {i}"),
        _ => "no val split".into(),
    };
    let why = r.reason.as_deref().unwrap_or("").trim_start_matches("stopped by the sweep: ");
    let how = match r.status {
        Status::Finished => format!("finished {} iterations", r.iterations),
        Status::Stopped => format!("stopped at iteration {} ({why})", r.iterations),
        Status::EarlyStop => format!("early stop at iteration {}", r.iterations),
    };
    format!("{how}: {best} ({:.1} s)", r.seconds)
}

pub fn collect(dir: &Path, m: &Manifest, metric: Metric, plot: Option<&Path>) -> Result<Collected> {
    let runs_dir = m.runs_dir(dir);
    let done = super::finished(dir, m)?;
    if done.is_empty() {
        bail!(
            "no trial of {} has a result yet ({} planned): run them first (`fkpnet sweep run {}`)",
            dir.display(),
            m.trials.len(),
            dir.display()
        );
    }
    let mut text =
        format!("sweep {}: {} trials, {} with results\n", dir.display(), m.trials.len(), done.len());
    let width = m.trials.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    for t in &m.trials {
        let line = match done.iter().find(|(d, _)| d.index == t.index) {
            Some((_, r)) => describe(r),
            None => "no result yet".into(),
        };
        text += &format!("  {:>3}  {:width$}  {line}\n", t.index, t.name);
    }
    let run_dirs: Vec<PathBuf> = done.iter().map(|(_, r)| runs_dir.join(&r.run)).collect();
    let runs = run_dirs.iter().map(|d| Run::load(d)).collect::<Result<Vec<_>>>()?;
    if runs.len() > 1 {
        text += &compare(&runs, metric, plot)?;
    }
    // The ensemble of the trials that ran to their end (stopped ones lost on the way).
    let whole: Vec<PathBuf> = done
        .iter()
        .zip(&run_dirs)
        .filter(|((_, r), _)| r.status != Status::Stopped)
        .map(|(_, d)| d.clone())
        .collect();
    if whole.len() > 1 {
        text += &crate::report::test::ensemble_line(&whole);
        text += "\n";
    }
    let best = done
        .iter()
        .filter_map(|(t, r)| r.best_val_rmse_px.map(|v| (t, r, v)))
        .min_by(|a, b| a.2.total_cmp(&b.2));
    let best_file = match best {
        Some((t, r, v)) => {
            let path = dir.join("best.yaml");
            let config = std::fs::read_to_string(t.config_path(dir))?;
            let header = format!(
                "# The best trial of the sweep {}: trial {} ({}), val RMSE {v:.3} px at iteration {}.\n\
                 # fkpnet train {} trains it again.\n",
                dir.display(),
                t.index,
                t.name,
                r.best_iter.unwrap_or(0),
                path.display()
            );
            crate::run::write_text(&path, &(header + &config))?;
            text += &format!(
                "best trial: {} ({}), val RMSE {v:.3} px; its config: {}\n",
                t.index,
                t.name,
                path.display()
            );
            Some(path)
        }
        None => None,
    };
    Ok(Collected { text, run_dirs, best: best_file })
}
