//! Commands that train: train, sweep, and config (what a training would resolve to).

use super::{check_out, program, Context};
use anyhow::Result;
use fkpnet::report::diff::{Metric, Run};
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
pub struct Sweep {
    /// One or more solver files, each trained with every combination of the values.
    #[arg(required = true)]
    solvers: Vec<PathBuf>,
    /// KEY=V1,V2,...: a swept key (values split at commas outside [] and {}); a single
    /// value is a fixed override for every run.
    #[arg(long = "set", value_name = "KEY=V1,V2")]
    sets: Vec<String>,
    /// Run names are PREFIX-key=value-...; default: the solver file's name (with
    /// several solvers, PREFIX-SOLVER-key=value-...).
    #[arg(long)]
    name: Option<String>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Only print errors and each run's final line.
    #[arg(long, short)]
    quiet: bool,
    /// Write the overlaid curves here (.png, or .svg).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// What to compare: val_rmse_px, val_loss, train_loss, train_rmse_px, or the field's
    /// val_nme, val_fr, val_auc (in %).
    #[arg(long, default_value = "val_rmse_px")]
    metric: Metric,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    force: bool,
}

impl Sweep {
    pub fn run(self, ctx: &Context) -> Result<()> {
        check_out(self.out.as_deref(), self.force)?;
        let plan = fkpnet::sweep::plan(&self.solvers, &self.sets, self.name.as_deref(), &self.runs_dir)?;
        eprintln!("sweep: {} runs, one after another:", plan.runs.len());
        for (n, _) in &plan.runs {
            eprintln!("  {}", self.runs_dir.join(n).display());
        }
        let started = std::time::Instant::now();
        let (dirs, interrupted) = fkpnet::sweep::run(&plan, &self.runs_dir, self.quiet)?;
        println!("trained {} runs in {:.1} min", dirs.len(), started.elapsed().as_secs_f64() / 60.0);
        let runs = dirs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
        if runs.len() > 1 {
            print!("{}", fkpnet::report::diff::compare(&runs, self.metric, self.out.as_deref())?);
            println!("{}", fkpnet::report::test::ensemble_line(&dirs));
        }
        if let (Some(snap), Some(last)) = (interrupted, dirs.last()) {
            eprintln!(
                "sweep interrupted after {} of {} runs; resume the last with:\n  {}",
                dirs.len(),
                plan.runs.len(),
                train::resume_command(&program(), last, &snap, &self.runs_dir, ctx.threads)
            );
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
