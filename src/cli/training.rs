//! Commands that train: train, and config (what a training would resolve to).

use super::{program, Context};
use anyhow::Result;
use fkpnet::{config, train};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Train {
    /// A solver file (solvers/*.yaml) or a run's config.yaml.
    solver: PathBuf,
    /// Override any solver, data or net key, e.g. --set base_lr=3e-4 --set data.train=synthetic
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run name (default: from the solver and net); an existing run is never overwritten.
    #[arg(long)]
    name: Option<String>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Only print errors and the final line.
    #[arg(long, short)]
    quiet: bool,
    /// Resume from a snapshot's .solverstate (as `caffe train --snapshot`).
    #[arg(long, value_name = "FILE.solverstate", conflicts_with = "weights")]
    snapshot: Option<PathBuf>,
    /// Initialise from trained weights, matched by tensor name (as `caffe train --weights`).
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// On a non-finite loss: stop (default) or skip the batch (same as --set on_nan=...).
    #[arg(long, value_parser = ["stop", "skip"])]
    on_nan: Option<String>,
    /// With --snapshot: resume even though this solver's resolved config differs from
    /// the snapshot's run (by default that is refused, with what differs).
    #[arg(long, requires = "snapshot")]
    allow_config_change: bool,
}

impl Train {
    pub fn run(mut self, ctx: &Context) -> Result<()> {
        if let Some(v) = &self.on_nan {
            self.sets.push(format!("on_nan={v}"));
        }
        let r = config::load_solver(&self.solver, &config::parse_sets(&self.sets)?)?;
        let opts = train::Options {
            runs_dir: self.runs_dir.clone(),
            name: self.name,
            quiet: self.quiet,
            resume: self.snapshot,
            weights: self.weights,
            allow_config_change: self.allow_config_change,
            judge: None,
        };
        let out = train::train(&r, &opts)?;
        println!("{}", out.run_dir.display());
        if let Some(st) = &out.interrupted {
            let cmd = train::resume_command(&program(), &out.run_dir, st, &self.runs_dir, ctx.threads);
            eprintln!("Resume with:\n  {cmd}");
            std::process::exit(130);
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Config {
    /// A solver file (solvers/*.yaml) or a run's config.yaml
    solver: PathBuf,
    /// Override a key, e.g. --set base_lr=3e-4
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl Config {
    pub fn run(self) -> Result<()> {
        let r = config::load_solver(&self.solver, &config::parse_sets(&self.sets)?)?;
        let spec = fkpnet::data::spec(&r.solver.data, &r.net)?;
        let g = fkpnet::graph::Graph::compile(&r.net, &r.net_source, spec.targets() as i64)?;
        // The solver's keys first, every one with its value in force, then the net.
        let mut v = config::schema::with_every_key(|| serde_yaml::to_value(&r.solver))?;
        if let serde_yaml::Value::Mapping(m) = &mut v {
            m.shift_remove("net");
            m.insert("net".into(), g.resolved());
        }
        print!("{}", serde_yaml::to_string(&v)?);
        Ok(())
    }
}
