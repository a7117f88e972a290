//! Resuming from a snapshot: which run it continues, that the solver is the one it
//! was trained with, what the new run is called, the command that resumes it, and the
//! seed and resolved config a run (resumed or not) records.

use super::Options;
use crate::config::{Resolved, SolverConfig};
use crate::graph::Graph;
use crate::solver::state;
use anyhow::{bail, Result};
use std::path::Path;

pub fn default_run_name(r: &Resolved, resume: Option<&Path>) -> String {
    // A resumed run is named after the run it continues: full -> full_resumed (and a
    // resume of full_resumed is full_resumed_2, not full_resumed_resumed).
    if let Some(old) = resume.and_then(snapshot_run_name) {
        let base = match old.rfind("_resumed") {
            Some(i)
                if old[i + 8..]
                    .strip_prefix('_')
                    .unwrap_or(&old[i + 8..])
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                &old[..i]
            }
            _ => &old,
        };
        return format!("{base}_resumed");
    }
    // adam.yaml + lenet -> adam_lenet; vgg_adam.yaml -> vgg_adam; a run's config.yaml -> the net's name.
    let stem = r.solver_path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    if stem == "config" {
        r.net.name.clone()
    } else if stem.contains(&r.net.name) {
        stem.to_string()
    } else {
        format!("{stem}_{}", r.net.name)
    }
}

/// The name of the run dir a snapshot lies in.
fn snapshot_run_name(snapshot: &Path) -> Option<String> {
    let dir = std::path::absolute(snapshot).ok()?.parent()?.file_name()?.to_str()?.to_string();
    Some(dir)
}

/// The resolved config of the run a snapshot belongs to (its dir's config.yaml).
pub fn snapshot_run_config(snapshot: &Path) -> Option<serde_yaml::Value> {
    let text = std::fs::read_to_string(snapshot.parent()?.join("config.yaml")).ok()?;
    serde_yaml::from_str(&text).ok()
}

/// A resume continues the run it came from: a solver whose resolved config differs
/// (another data file, a dropped `--set`) would silently train something else from
/// its weights, which is a finetune. Refused unless asked for, with what differs.
pub fn check_resume_config(
    snapshot: &Path,
    resolved: &str,
    allow: bool,
    say: &dyn Fn(&str),
) -> Result<Vec<String>> {
    let Some(old) = snapshot_run_config(snapshot) else {
        say(&format!(
            "note: no readable config.yaml beside {}: cannot check that this solver is the one it was \
             trained with",
            snapshot.display()
        ));
        return Ok(Vec::new());
    };
    let new: serde_yaml::Value = serde_yaml::from_str(resolved)?;
    let changes = crate::config::diff::config_diff(&old, &new);
    if changes.is_empty() || allow {
        return Ok(changes);
    }
    let run = snapshot.parent().unwrap_or(Path::new("."));
    bail!(
        "--snapshot {}: this solver's resolved config differs from the run the snapshot belongs to \
         ({}):\n  {}\nTo continue that run as it was, resume from its own config: fkpnet train {} \
         --snapshot {}\nTo train with these changes from its weights, that is a finetune: --weights {} \
         (or pass --allow-config-change to resume the solver state anyway)",
        snapshot.display(),
        run.join("config.yaml").display(),
        changes.join("\n  "),
        run.join("config.yaml").display(),
        snapshot.display(),
        state::weights_of(snapshot).display()
    )
}

/// The command that resumes an interrupted run exactly: from the run's own resolved
/// config (every `--set` is in it), with the runs dir and thread count it ran with;
/// the new run is named after the old one (`NAME_resumed`). Shell-quoted, to be run
/// as printed from the directory fkpnet ran in.
pub fn resume_command(
    program: &str,
    run_dir: &Path,
    snapshot: &Path,
    runs_dir: &Path,
    threads: Option<i32>,
) -> String {
    let mut args: Vec<String> = vec![
        program.into(),
        "train".into(),
        run_dir.join("config.yaml").display().to_string(),
        "--snapshot".into(),
        snapshot.display().to_string(),
        "--runs-dir".into(),
        runs_dir.display().to_string(),
    ];
    if let Some(n) = threads {
        args.extend(["--threads".into(), n.to_string()]);
    }
    shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "))
}

/// The run's seed: the config's, or for a resume of a run with a random seed the
/// seed it used (so it draws what the interrupted one drew), or one from the clock.
pub fn seed_of(cfg: &SolverConfig, opts: &Options) -> Result<i64> {
    if cfg.random_seed >= 0 {
        return Ok(cfg.random_seed);
    }
    let resumed =
        opts.resume.as_deref().and_then(snapshot_run_config).and_then(|c| c["random_seed"].as_i64());
    match resumed {
        Some(s) => Ok(s),
        None => Ok((std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
            % (1 << 31)) as i64),
    }
}

/// The resolved config as written to the run dir: solver keys, the net inline with
/// every default, and the seed actually used.
pub fn resolved_yaml(r: &Resolved, graph: &Graph, seed: i64) -> Result<String> {
    let mut solver = r.solver.clone();
    solver.random_seed = seed;
    solver.net = graph.resolved();
    Ok(serde_yaml::to_string(&solver)?)
}
