//! Running one trial: skipped when it has a result, refused while another process
//! holds its lock, resumed from its latest snapshot when an earlier attempt was
//! killed, and ended by writing its result atomically.

use super::manifest::{self, Manifest, Status, TrialResult};
use super::stopping;
use crate::train;
use anyhow::{bail, Context, Result};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

pub enum TrialOutcome {
    /// Trained to its end now.
    Done(TrialResult),
    /// It had a result already.
    Skipped(TrialResult),
    /// Another process holds its lock (it is running elsewhere).
    Busy,
    /// Ctrl-C/SIGTERM: snapshotted in this run dir; running the trial again resumes it.
    Interrupted { run_dir: PathBuf, snapshot: PathBuf },
}

/// Run trial `i` of the sweep in `dir`.
pub fn run_trial(dir: &Path, m: &Manifest, i: usize, quiet: bool) -> Result<TrialOutcome> {
    let t = m.trial(i)?;
    if let Some(r) = m.result(dir, t)? {
        return Ok(TrialOutcome::Skipped(r));
    }
    // Held for the whole training: a requeued task or a second executor started on the
    // same trial waits its turn instead of training it twice.
    let lock_path = t.lock_path(dir);
    let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(TrialOutcome::Busy),
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
    // It may have finished between the first look and the lock.
    if let Some(r) = m.result(dir, t)? {
        return Ok(TrialOutcome::Skipped(r));
    }
    let config = t.config_path(dir);
    let r = crate::config::load_solver(&config, &[])
        .with_context(|| format!("trial {i} ({}): its config {}", t.name, config.display()))?;
    let runs = m.runs_dir(dir);
    let (name, resume) = next_attempt(&runs, &t.name)?;
    if let Some(s) = &resume {
        if !quiet {
            eprintln!("trial {i} ({}): resuming from {}", t.name, s.display());
        }
    }
    let judge = m.space.stop.clone().map(|rule| {
        let (dir, id) = (dir.to_path_buf(), t.id.clone());
        Box::new(move |iter: i64, v: f64| stopping::report(&dir, &rule, &id, iter, v)) as train::Judge
    });
    let opts =
        train::Options { runs_dir: runs, name: Some(name), quiet, resume, judge, ..Default::default() };
    let out = train::train(&r, &opts)?;
    if let Some(snapshot) = out.interrupted {
        return Ok(TrialOutcome::Interrupted { run_dir: out.run_dir, snapshot });
    }
    let status = match &out.stopped {
        None => Status::Finished,
        Some(w) if w.starts_with("stopped by the sweep") => Status::Stopped,
        Some(_) => Status::EarlyStop,
    };
    let result = TrialResult {
        id: t.id.clone(),
        name: t.name.clone(),
        status,
        reason: out.stopped.clone(),
        run: out.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        iterations: out.iterations,
        best_val_rmse_px: out.best.map(|b| b.rmse_px),
        best_iter: out.best.map(|b| b.iter),
        final_train_loss: out.final_train_loss,
        seconds: out.seconds,
    };
    manifest::write_result(dir, t, &result)?;
    drop(lock);
    Ok(TrialOutcome::Done(result))
}

/// The run name for this attempt of a trial and the snapshot it resumes from: `NAME`
/// the first time; after a killed attempt, `NAME_resumed` (then `_resumed_2`, ...)
/// from the latest snapshot of any earlier attempt, or from the start where none
/// snapshotted. Earlier attempts' directories are left as they are.
pub fn next_attempt(runs: &Path, name: &str) -> Result<(String, Option<PathBuf>)> {
    let attempt = |k: usize| match k {
        0 => name.to_string(),
        1 => format!("{name}_resumed"),
        k => format!("{name}_resumed_{k}"),
    };
    let mut k = 0;
    let mut latest: Option<(i64, PathBuf)> = None;
    while runs.join(attempt(k)).exists() {
        for (iter, st) in snapshots(&runs.join(attempt(k)))? {
            if latest.as_ref().is_none_or(|(i, _)| iter >= *i) {
                latest = Some((iter, st));
            }
        }
        k += 1;
        if k > 1000 {
            bail!("{}: more than 1000 attempts of trial {name}", runs.display());
        }
    }
    Ok((attempt(k), latest.map(|(_, s)| s)))
}

/// A run dir's snapshots with both their files (`PREFIX_iter_N.solverstate` and
/// `.safetensors`), by iteration.
fn snapshots(run: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(run).with_context(|| format!("cannot list {}", run.display()))? {
        let p = e?.path();
        let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".solverstate"))
        else {
            continue;
        };
        let iter = stem.rsplit_once("_iter_").and_then(|(_, i)| i.parse::<i64>().ok());
        if let Some(iter) = iter.filter(|_| crate::solver::state::weights_of(&p).is_file()) {
            out.push((iter, p));
        }
    }
    Ok(out)
}
