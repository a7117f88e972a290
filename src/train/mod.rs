//! Training: a solver file in, a run directory out. The loop runs in Caffe's order
//! (test every test_interval, and at 0 when test_initialization -> forward/backward
//! iter_size times -> display -> update -> snapshot; a final test after the last
//! update), owned by `Trainer`: `trainer` holds the loop, `state` the loop's running
//! state that snapshots carry, `resume` how a snapshot continues its run, `batches`
//! the seeded batch order, `progress` what a run shows and how Ctrl-C stops it.

mod batches;
mod passes;
pub mod progress;
mod resume;
mod state;
mod trainer;

pub use resume::resume_command;
pub use state::{BestVal, LoopState};

use crate::config::solver::{Layout, Precision};
use crate::config::Resolved;
use crate::graph::Graph;
use crate::layers::BuildOptions;
use anyhow::{bail, Result};
use std::path::PathBuf;
use tch::Device;

#[derive(Default)]
pub struct Options {
    pub runs_dir: PathBuf,
    pub name: Option<String>,
    /// Print nothing but errors and the final line.
    pub quiet: bool,
    /// Resume from a `.solverstate` (its weights are the `.safetensors` beside it).
    pub resume: Option<PathBuf>,
    /// Initialise from these weights (finetune), by tensor name.
    pub weights: Option<PathBuf>,
    /// Resume even where the solver's resolved config differs from the snapshot's run.
    pub allow_config_change: bool,
    /// Asked after each val test with (iteration, val RMSE in px): Some(reason) stops
    /// the run there (a sweep's stopping rule; the run ends as an early stop does).
    pub judge: Option<Judge>,
}

pub type Judge = Box<dyn Fn(i64, f64) -> Result<Option<String>>>;

pub struct Outcome {
    pub run_dir: PathBuf,
    pub best: Option<BestVal>,
    pub final_train_loss: Option<f64>,
    pub seconds: f64,
    /// The iteration it ended at.
    pub iterations: i64,
    /// Set when Ctrl-C/SIGTERM stopped training: the snapshot to resume from.
    pub interrupted: Option<PathBuf>,
    /// How it ended before max_iter: the solver's early_stop, or the judge's reason.
    pub stopped: Option<String>,
}

/// Train as `r` says; results go to a new run directory.
pub fn train(r: &Resolved, opts: &Options) -> Result<Outcome> {
    trainer::Trainer::new(r, opts)?.run()
}

/// `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_device(s: &str) -> Result<Device> {
    let dev = match s {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Device::Cuda(n),
            None => bail!("device `{s}`: expected cpu, cuda, cuda:N or auto"),
        },
    };
    if let Device::Cuda(n) = dev {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            bail!("device `{s}`: no such CUDA device ({count} found); use device: cpu or auto");
        }
    }
    Ok(dev)
}

/// Precision and layout in force. `layout: auto` picks channels-last for nets with
/// layers that compute faster in it (conv) on CPU, where it measured faster (README,
/// "Speed").
pub fn build_options(graph: &Graph, device: Device, precision: Precision, layout: Layout) -> BuildOptions {
    let prefers = graph.nodes.iter().any(|n| n.layer.prefers_channels_last());
    let channels_last = match layout {
        Layout::Nchw => false,
        Layout::ChannelsLast => true,
        Layout::Auto => prefers && device == Device::Cpu,
    };
    BuildOptions { bf16: precision == Precision::Bf16, channels_last }
}
