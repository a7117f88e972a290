//! The command line, one file per group of commands, one `run` per command: each
//! parses its arguments into the library's types, calls the library, prints.

mod caffe;
mod compare;
mod inspect;
mod models;
mod sweep;
mod sweep_executors;
mod training;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fkpnet", version, about = "Declarative, Caffe-style facial keypoint nets on libtorch")]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// CPU threads libtorch uses (default: all cores). Give each of several trainings
    /// on one machine its share: oversubscribed cores run them several times slower.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    threads: Option<i32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a net's layers: output shapes, parameters, forward FLOPs, fillers.
    Summary(inspect::Summary),
    /// Train a net as a solver file says; results go to a new run directory.
    Train(training::Train),
    /// Train every solver with every combination of the swept values (or a random
    /// search), then compare them as `diff` does and score their ensemble:
    /// `fkpnet sweep S --set base_lr=1e-3,3e-4 --set layers.fc1.num_output=256,500`,
    /// `fkpnet sweep A.yaml B.yaml`; `sweep plan|run|collect|slurm|parallel|k8s` for
    /// sweeps run elsewhere (a cluster).
    Sweep(sweep::Sweep),
    /// Print the fully resolved solver config (overrides applied, net inline).
    Config(training::Config),
    /// List the layer types a net may use.
    Layers,
    /// RMSE in pixels per keypoint and overall, the loss in both conventions, and NME.
    Test(models::Test),
    /// Keypoints in each image's own pixels, for photos (every face the face
    /// detector finds), folders of them (recursively) or the rows of Kaggle CSVs; one
    /// row per face.
    Predict(models::Predict),
    /// Kaggle's submission file (RowId,Location) for test.csv and IdLookupTable.csv.
    Submit(models::Submit),
    /// Faces as PNG files, as the net sees them (optionally with labels drawn): a Kaggle
    /// CSV's, the built-in generator's, or a solver file's data.
    Extract(models::Extract),
    /// A frozen model: model.safetensors, net.yaml, data.yaml and a README with PyTorch code.
    Export(models::Export),
    /// Compare runs: config differences, a side-by-side table and an overlay plot.
    Diff(compare::Diff),
    /// Plot the curves of runs (.png, or .svg).
    Plot(compare::Plot),
    /// Convert Caffe prototxt (a net, optionally its solver) into fkpnet YAML.
    ImportCaffe(caffe::ImportCaffe),
    /// Training and inference throughput (images/s), GFLOP/s and peak memory.
    Bench(inspect::Bench),
    /// Seconds to load a Kaggle CSV (parsing it, and from fkpnet's binary cache), or a
    /// solver file's image dataset (decoding and cutting out every face, and from the cache).
    BenchData(inspect::BenchData),
    /// Time forward and backward per layer, like `caffe time`.
    Time(inspect::Time),
}

/// What every command may need besides its own arguments.
pub struct Context {
    pub threads: Option<i32>,
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    let ctx = Context { threads: cli.threads };
    match cli.cmd {
        Cmd::Summary(a) => a.run(),
        Cmd::Train(a) => a.run(&ctx),
        Cmd::Sweep(a) => a.run(&ctx),
        Cmd::Config(a) => a.run(),
        Cmd::Layers => inspect::layers(),
        Cmd::Test(a) => a.run(),
        Cmd::Predict(a) => a.run(),
        Cmd::Submit(a) => a.run(),
        Cmd::Extract(a) => a.run(),
        Cmd::Export(a) => a.run(),
        Cmd::Diff(a) => a.run(),
        Cmd::Plot(a) => a.run(),
        Cmd::ImportCaffe(a) => a.run(),
        Cmd::Bench(a) => a.run(),
        Cmd::BenchData(a) => a.run(),
        Cmd::Time(a) => a.run(),
    }
}

/// How the user started fkpnet, for commands it prints to be run as they are: the
/// `./fkpnet` wrapper names itself in FKPNET_PROGRAM (it execs the release binary).
fn program() -> String {
    std::env::var("FKPNET_PROGRAM")
        .ok()
        .or_else(|| std::env::args().next())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "fkpnet".into())
}

/// The comparison's outputs, as diff and sweep take them.
#[derive(clap::Args)]
pub struct CurvesOut {
    /// Write the overlaid curves here (.png, or .svg).
    #[arg(short = 'o', long = "out")]
    pub out: Option<std::path::PathBuf>,
    /// What to compare: val_rmse_px, val_loss, train_loss, train_rmse_px, or the field's
    /// val_nme, val_fr, val_auc (in %).
    #[arg(long, default_value = "val_rmse_px")]
    pub metric: fkpnet::report::diff::Metric,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    pub force: bool,
}

/// Refuse an existing output file unless --force.
fn check_out(out: Option<&std::path::Path>, force: bool) -> Result<()> {
    match out {
        Some(o) => fkpnet::run::check_new_output(o, force),
        None => Ok(()),
    }
}
