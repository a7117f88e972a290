//! The `fkpnet` command line: parse arguments, call the library, print errors.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fkpnet::{config, graph::Graph, train};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fkpnet", version, about = "Declarative, Caffe-style facial keypoint nets on libtorch")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a net's layers: output shapes, parameters, forward FLOPs, fillers.
    Summary {
        /// A net file (nets/*.yaml) or a solver file (its net is shown).
        config: PathBuf,
        /// Override a key, e.g. --set layers.fc1.num_output=256
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Train a net as a solver file says; results go to a new run directory.
    Train {
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
    },
    /// Print the fully resolved solver config (overrides applied, net inline).
    Config {
        solver: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List the layer types a net may use.
    Layers,
}

fn is_solver(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).ok().and_then(|v| v.get("net").cloned()).is_some()
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Summary { config: path, sets } => {
            let sets = config::parse_sets(&sets)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let (net, src) = if is_solver(&text) {
                let r = config::load_solver(&path, &sets)?;
                (r.net, r.net_source)
            } else {
                config::load_net(&path, &sets)?
            };
            let g = Graph::compile(&net, &src, fkpnet::data::TARGETS as i64)?;
            print!("{}", g.summary());
        }
        Cmd::Train { solver, sets, name, runs_dir, quiet, snapshot, weights } => {
            let sets = config::parse_sets(&sets)?;
            let r = config::load_solver(&solver, &sets)?;
            let opts = train::Options { runs_dir, name, quiet, resume: snapshot, weights };
            let out = train::train(&r, &opts)?;
            println!("{}", out.run_dir.display());
            if out.interrupted.is_some() {
                std::process::exit(130);
            }
        }
        Cmd::Config { solver, sets } => {
            let sets = config::parse_sets(&sets)?;
            let r = config::load_solver(&solver, &sets)?;
            let g = Graph::compile(&r.net, &r.net_source, fkpnet::data::TARGETS as i64)?;
            let mut s = r.solver.clone();
            s.net = g.resolved();
            print!("{}", serde_yaml::to_string(&s)?);
        }
        Cmd::Layers => {
            for k in fkpnet::layers::KINDS {
                println!("{:<8} {}  keys: {}", k.name, k.about, (k.fields)().join(", "));
            }
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
