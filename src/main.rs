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
    /// Convert Caffe prototxt (a net, optionally its solver) into fkpnet YAML.
    ImportCaffe {
        net: PathBuf,
        solver: Option<PathBuf>,
        /// Directory for the YAML files (created; existing files are never overwritten).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Input shape CxHxW for data layers that carry none (HDF5Data, Data).
        #[arg(long, default_value = "1x96x96")]
        input: String,
        /// data.train of the converted solver: Kaggle's training.csv or `synthetic`.
        #[arg(long, default_value = "synthetic")]
        data: String,
        /// Batch size when no data layer gives one.
        #[arg(long, default_value_t = 64)]
        batch: i64,
    },
    /// Time forward and backward per layer, like `caffe time`.
    Time {
        /// A net file or a solver file.
        config: PathBuf,
        /// Timed passes after warm-up.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Images per pass.
        #[arg(long, default_value_t = 64)]
        batch: i64,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

fn is_solver(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).ok().and_then(|v| v.get("net").cloned()).is_some()
}

/// A net file, or a solver file's net, compiled.
fn load_graph(path: &std::path::Path, sets: &[String]) -> Result<Graph> {
    let sets = config::parse_sets(sets)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let (net, src) = if is_solver(&text) {
        let r = config::load_solver(path, &sets)?;
        (r.net, r.net_source)
    } else {
        config::load_net(path, &sets)?
    };
    Graph::compile(&net, &src, fkpnet::data::TARGETS as i64)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Summary { config: path, sets } => {
            print!("{}", load_graph(&path, &sets)?.summary());
        }
        Cmd::Time { config: path, iterations, batch, device, sets } => {
            if batch < 1 || iterations < 1 {
                anyhow::bail!("--batch and --iterations must be >= 1");
            }
            let g = load_graph(&path, &sets)?;
            let device = train::parse_device(&device)?;
            print!("{}", fkpnet::timing::time_net(&g, batch, iterations, device).table());
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
        Cmd::ImportCaffe { net, solver, out, input, data, batch } => {
            let dims: Vec<i64> = input.split('x').filter_map(|d| d.parse().ok()).collect();
            let input: [i64; 3] = dims
                .try_into()
                .ok()
                .filter(|d: &[i64; 3]| d.iter().all(|v| *v > 0))
                .ok_or_else(|| anyhow::anyhow!("--input {input}: expected CxHxW, e.g. 1x96x96"))?;
            let opts = fkpnet::caffe::Options { input, data, batch };
            let imported = fkpnet::caffe::import(&net, solver.as_deref(), &opts)?;
            std::fs::create_dir_all(&out)?;
            let mut files = vec![(format!("{}.yaml", imported.net_name), imported.net_yaml.clone())];
            if let (Some(y), Some(s)) = (&imported.solver_yaml, &solver) {
                let stem = s.file_stem().and_then(|s| s.to_str()).unwrap_or("solver");
                files.push((format!("{stem}.yaml"), y.clone()));
            }
            for (name, _) in &files {
                if out.join(name).exists() {
                    anyhow::bail!(
                        "{} exists; choose another -o (nothing is overwritten)",
                        out.join(name).display()
                    );
                }
            }
            for n in &imported.notes {
                eprintln!("note: {n}");
            }
            for (name, text) in files {
                fkpnet::run::write_text(&out.join(&name), &text)?;
                println!("{}", out.join(name).display());
            }
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
