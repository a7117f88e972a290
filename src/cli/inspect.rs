//! Commands that look at a net without training it: summary, layers, time, bench,
//! bench-data.

use anyhow::{bail, Result};
use fkpnet::config::solver::{Layout, Precision};
use fkpnet::graph::Graph;
use fkpnet::{config, train};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Summary {
    /// A net file (nets/*.yaml) or a solver file (its net is shown).
    config: PathBuf,
    /// Override a key, e.g. --set layers.fc1.num_output=256
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl Summary {
    pub fn run(self) -> Result<()> {
        print!("{}", fkpnet::report::summary::table(&load_graph(&self.config, &self.sets)?));
        Ok(())
    }
}

pub fn layers() -> Result<()> {
    let width = fkpnet::layers::KINDS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for k in fkpnet::layers::KINDS {
        println!("{:<width$}  {}  keys: {}", k.name, k.about, (k.fields)().join(", "));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Time {
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
    /// The precision the layers compute in.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// The memory layout of images (auto: channels-last for conv nets on CPU).
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    layout: Layout,
    /// Override a key, e.g. --set layers.fc1.num_output=256
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl Time {
    pub fn run(self) -> Result<()> {
        if self.batch < 1 || self.iterations < 1 {
            bail!("--batch and --iterations must be >= 1");
        }
        let g = load_graph(&self.config, &self.sets)?;
        let device = train::parse_device(&self.device)?;
        let opts = train::build_options(&g, device, self.precision, self.layout);
        print!("{}", fkpnet::timing::time_net(&g, self.batch, self.iterations, device, opts).table());
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Bench {
    /// A net file or a solver file.
    config: PathBuf,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// The precision the layers compute in.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// auto (the default for the device), nchw or channels_last.
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    layout: Layout,
    /// Timed training steps after warm-up (inference runs twice as many).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl Bench {
    pub fn run(self) -> Result<()> {
        if self.batch < 1 || self.iterations < 1 {
            bail!("--batch and --iterations must be >= 1");
        }
        let g = load_graph(&self.config, &[])?;
        let device = train::parse_device(&self.device)?;
        let build = train::build_options(&g, device, self.precision, self.layout);
        let opts = fkpnet::bench::Options { batch: self.batch, iterations: self.iterations, device, build };
        let r = fkpnet::bench::run(&g, &opts);
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print!("{}", r.text());
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct BenchData {
    /// A Kaggle CSV, or a solver file whose data is an image dataset.
    csv: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl BenchData {
    pub fn run(self) -> Result<()> {
        let r = fkpnet::bench::data(&self.csv)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{} faces: parse {:.3} s, from cache {:.3} s", r.faces, r.parse_s, r.cache_s);
        }
        Ok(())
    }
}

fn is_solver(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).ok().and_then(|v| v.get("net").cloned()).is_some()
}

/// A net file, or a solver file's net, compiled (a solver's against its data's
/// keypoint count).
pub fn load_graph(path: &Path, sets: &[String]) -> Result<Graph> {
    let sets = config::parse_sets(sets)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if is_solver(&text) {
        let r = config::load_solver(path, &sets)?;
        let spec = fkpnet::data::spec(&r.solver.data, &r.net)?;
        return Graph::compile(&r.net, &r.net_source, spec.targets() as i64);
    }
    let (net, src) = config::load_net(path, &sets)?;
    Graph::compile(&net, &src, None)
}
