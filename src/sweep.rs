//! `fkpnet sweep SOLVER... [--set KEY=V1,V2 ...]`: train every solver with every
//! combination of the values, one run after another, then compare them as `fkpnet
//! diff` does and score their ensemble.

use crate::config::{self, Resolved};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// One `--set KEY=V1,V2,...`: the key and its values (commas inside [] or {} belong to
/// the value, so `--set stepvalue=[100,200],[300]` is two values).
pub fn parse_axis(s: &str) -> Result<(String, Vec<String>)> {
    let Some((key, values)) = s.split_once('=') else {
        bail!("--set {s}: expected KEY=V1,V2,... (e.g. --set base_lr=1e-3,3e-4)");
    };
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in values.chars() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    if key.trim().is_empty() || out.iter().any(|v| v.is_empty()) {
        bail!("--set {s}: expected KEY=V1,V2,... with no empty values");
    }
    Ok((key.trim().to_string(), out))
}

/// Every combination, first axis slowest: each a list of `KEY=VALUE` overrides.
pub fn grid(axes: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for (key, values) in axes {
        out = out
            .into_iter()
            .flat_map(|sets: Vec<String>| {
                values.iter().map(move |v| {
                    let mut s = sets.clone();
                    s.push(format!("{key}={v}"));
                    s
                })
            })
            .collect();
    }
    out
}

/// `lenet_best-base_lr=3e-4-num_output=256`: the prefix and each key's last part.
/// With no swept keys, the prefix alone.
pub fn run_name(prefix: &str, sets: &[String]) -> String {
    if sets.is_empty() {
        return prefix.to_string();
    }
    let parts: Vec<String> = sets
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            let k = k.rsplit('.').next().unwrap_or(k);
            let v: String = v
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || ".-+_".contains(c) { c } else { '_' })
                .collect();
            format!("{k}={v}")
        })
        .collect();
    format!("{prefix}-{}", parts.join("-"))
}

pub struct Plan {
    pub runs: Vec<(String, Resolved)>,
}

/// Load and check every variant before anything trains, so a typo in the last value
/// fails at once, not hours in; existing run names are refused here too.
/// A `--set` with one value applies to every run; one with several is an axis. Runs
/// are named `NAME-key=value-...`, where NAME is `--name` (default: the solver file's
/// name); with several solvers, each run's NAME also carries its solver's name.
pub fn plan(solvers: &[PathBuf], sets: &[String], name: Option<&str>, runs_dir: &Path) -> Result<Plan> {
    let (mut fixed, mut axes) = (Vec::new(), Vec::new());
    for s in sets {
        match parse_axis(s) {
            Ok((key, values)) if values.len() > 1 => axes.push((key, values)),
            // One value, or not KEY=VALUE at all: load_solver's --set parsing says why.
            _ => fixed.push(s.clone()),
        }
    }
    let combos = grid(&axes);
    if solvers.len() * combos.len() < 2 {
        bail!(
            "nothing to sweep: give two or more solver files, or a --set KEY=V1,V2 with two or more values"
        );
    }
    let mut runs: Vec<(String, Resolved)> = Vec::new();
    for solver in solvers {
        let stem = solver.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep");
        let prefix = match name {
            Some(n) if solvers.len() > 1 => format!("{n}-{stem}"),
            Some(n) => n.to_string(),
            None => stem.to_string(),
        };
        for sets in &combos {
            let name = run_name(&prefix, sets);
            if runs_dir.join(&name).exists() {
                bail!(
                    "run {} already exists; choose another --name prefix (runs are never overwritten)",
                    runs_dir.join(&name).display()
                );
            }
            if runs.iter().any(|(n, _)| *n == name) {
                bail!(
                    "two runs of this sweep would both be named {name}: give each solver file its own name"
                );
            }
            let what = || {
                format!("{}{}{}", solver.display(), if sets.is_empty() { "" } else { " " }, sets.join(" "))
            };
            let all: Vec<String> = fixed.iter().chain(sets).cloned().collect();
            let overrides = config::parse_sets(&all)?;
            let r =
                config::load_solver(solver, &overrides).map_err(|e| anyhow::anyhow!("{}: {e:#}", what()))?;
            crate::data::spec(&r.solver.data, &r.net)
                .and_then(|spec| crate::graph::Graph::compile(&r.net, &r.net_source, spec.targets() as i64))
                .map_err(|e| anyhow::anyhow!("{}: {e:#}", what()))?;
            runs.push((name, r));
        }
    }
    Ok(Plan { runs })
}

/// Train the plan's runs in order; returns their directories (fewer when interrupted,
/// with the snapshot to resume the interrupted one from).
pub fn run(plan: &Plan, runs_dir: &Path, quiet: bool) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let mut dirs = Vec::new();
    for (i, (name, r)) in plan.runs.iter().enumerate() {
        eprintln!("sweep: run {}/{}: {name}", i + 1, plan.runs.len());
        let opts = crate::train::Options {
            runs_dir: runs_dir.to_path_buf(),
            name: Some(name.clone()),
            quiet,
            ..Default::default()
        };
        let out = crate::train::train(r, &opts)?;
        dirs.push(out.run_dir);
        if out.interrupted.is_some() {
            return Ok((dirs, out.interrupted));
        }
    }
    Ok((dirs, None))
}
