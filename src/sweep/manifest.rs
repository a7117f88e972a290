//! The sweep directory: `sweep.yaml` (the manifest: the search space and every trial
//! with a stable id from its content), `trials/ID.yaml` (the resolved config each
//! trial trains), `results/ID.yaml` (written atomically when a trial ends) and the
//! stopping rule's ledger. Shared storage is the only thing executors share.

use super::stopping::StopRule;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's format; a sweep dir of another format is refused with what to do.
pub const FORMAT: u32 = 1;
pub const FILE: &str = "sweep.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The format of this file (see FORMAT).
    pub fkpnet_sweep: u32,
    /// The fkpnet version that planned it (for the reader; FORMAT decides).
    pub planned_by: String,
    /// Where the trials' run directories go: relative to the sweep dir, or absolute.
    pub runs_dir: String,
    pub space: Space,
    pub trials: Vec<Trial>,
}

/// What the trials came from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Space {
    pub solvers: Vec<String>,
    pub sets: Vec<String>,
    pub name: String,
    /// Random search: samples per grid point, and the sampler's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Stopping losing trials early at their val tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub index: usize,
    /// The first 12 hex digits of the SHA-256 of the trial's config: the same config
    /// gets the same id whenever and wherever it is planned.
    pub id: String,
    /// Its run directory's name.
    pub name: String,
    pub solver: String,
    /// The `--set KEY=VALUE`s that make this trial (swept and sampled keys).
    pub sets: Vec<String>,
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It trained to max_iter.
    Finished,
    /// The solver's own early_stop ended it.
    EarlyStop,
    /// The sweep's stopping rule ended it, losing at a val test.
    Stopped,
}

/// How a trial ended, written once to `results/ID.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialResult {
    pub id: String,
    pub name: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run directory (a name in the sweep's runs dir) of the attempt that ended
    /// it; earlier attempts, where it was resumed, are NAME, NAME_resumed, ...
    pub run: String,
    pub iterations: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_rmse_px: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_iter: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_train_loss: Option<f64>,
    pub seconds: f64,
}

impl Trial {
    pub fn config_path(&self, dir: &Path) -> PathBuf {
        dir.join("trials").join(format!("{}.yaml", self.id))
    }
    pub fn result_path(&self, dir: &Path) -> PathBuf {
        dir.join("results").join(format!("{}.yaml", self.id))
    }
    pub fn lock_path(&self, dir: &Path) -> PathBuf {
        dir.join("locks").join(format!("{}.lock", self.id))
    }
}

/// The stable id of a trial's config text.
pub fn content_id(config: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(config.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// Read `DIR/sweep.yaml`, refusing other formats with what to do.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: not a sweep directory (no readable {FILE}); `fkpnet sweep plan` makes one",
                dir.display()
            )
        })?;
        let value: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))?;
        match value.get("fkpnet_sweep").and_then(|v| v.as_u64()) {
            Some(f) if f == FORMAT as u64 => {}
            Some(f) => bail!(
                "{}: a sweep of format {f}, planned by fkpnet {}; this fkpnet ({}) reads format {FORMAT}. \
                 Plan the sweep again with this version (its trials' run directories stay usable by \
                 `fkpnet diff`), or run it with the fkpnet that planned it",
                path.display(),
                value.get("planned_by").and_then(|v| v.as_str()).unwrap_or("?"),
                env!("CARGO_PKG_VERSION")
            ),
            None => bail!("{}: no `fkpnet_sweep: {FORMAT}` line; not a sweep manifest", path.display()),
        }
        serde_yaml::from_value(value).map_err(|e| {
            anyhow::anyhow!("{}: {}", path.display(), crate::config::schema::explain(&e.to_string()))
        })
    }

    pub fn runs_dir(&self, dir: &Path) -> PathBuf {
        PathBuf::from(crate::config::absolute(dir, &self.runs_dir))
    }

    /// Trial `i`, or an error saying the range.
    pub fn trial(&self, i: usize) -> Result<&Trial> {
        self.trials.get(i).ok_or_else(|| {
            anyhow::anyhow!(
                "trial {i} is out of range: this sweep has {} trials, 0 to {}",
                self.trials.len(),
                self.trials.len().saturating_sub(1)
            )
        })
    }

    pub fn result(&self, dir: &Path, t: &Trial) -> Result<Option<TrialResult>> {
        let path = t.result_path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_yaml::from_str(&text)
                    .with_context(|| format!("{}: not a trial result", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The trials without a result yet.
    pub fn pending(&self, dir: &Path) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for t in &self.trials {
            if self.result(dir, t)?.is_none() {
                out.push(t.index);
            }
        }
        Ok(out)
    }
}

/// Write a new sweep dir, or find the same sweep already there (a rerun resumes it).
/// Returns whether it was there already. A different sweep in the dir is refused.
pub fn create(dir: &Path, m: &Manifest, configs: &[String]) -> Result<bool> {
    if dir.join(FILE).exists() {
        let old = Manifest::read(dir)?;
        if old.trials == m.trials && old.runs_dir == m.runs_dir {
            return Ok(true);
        }
        bail!(
            "{} holds another sweep ({}); choose another directory or --name (a sweep directory is never \
             overwritten)",
            dir.display(),
            how_they_differ(&old, m)
        );
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not a sweep directory; choose another (nothing in it is touched)",
            dir.display()
        );
    }
    for sub in ["trials", "results", "locks", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (t, text) in m.trials.iter().zip(configs) {
        crate::run::write_text(&t.config_path(dir), text)?;
    }
    // The manifest last: a dir with sweep.yaml has all its trial configs.
    crate::run::write_text(&dir.join(FILE), &serde_yaml::to_string(m)?)?;
    Ok(false)
}

/// What tells two sweeps apart, for the refusal: the trial count, a name, or a config
/// (same name, another id: a solver, net or data file changed since it was planned).
fn how_they_differ(old: &Manifest, new: &Manifest) -> String {
    if old.runs_dir != new.runs_dir {
        return format!("its runs go to {}, these to {}", old.runs_dir, new.runs_dir);
    }
    if old.trials.len() != new.trials.len() {
        return format!("{} trials there, {} planned now", old.trials.len(), new.trials.len());
    }
    for (a, b) in old.trials.iter().zip(&new.trials) {
        if a.name != b.name {
            return format!("its trial {} is {}, this one's {}", a.index, a.name, b.name);
        }
        if a.id != b.id {
            return format!(
                "trial {} ({}) would train another config than it did (id {} there, {} now): a solver, net \
                 or data file changed since it was planned",
                a.index, a.name, a.id, b.id
            );
        }
    }
    "its trials differ from these".into()
}

/// `results/ID.yaml`, atomically (temp + rename): a trial with one is done.
pub fn write_result(dir: &Path, t: &Trial, r: &TrialResult) -> Result<()> {
    crate::run::write_text(&t.result_path(dir), &serde_yaml::to_string(r)?)
}
