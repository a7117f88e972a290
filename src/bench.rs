//! `fkpnet bench`: training steps (forward, loss, backward, solver update) and
//! inference per second after warm-up, achieved GFLOP/s from the graph's FLOP count,
//! and the process's peak memory.

use crate::config::{LossConfig, LossKind, SolverConfig};
use crate::graph::Graph;
use crate::layers::BuildOptions;
use crate::loss;
use crate::peak::{self, Peak};
use crate::solver::Solver;
use crate::timing::sync;
use serde::Serialize;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

pub struct Options {
    pub batch: i64,
    pub iterations: usize,
    pub device: Device,
    pub build: BuildOptions,
}

#[derive(Serialize, Debug)]
pub struct Result {
    pub net: String,
    pub batch: i64,
    pub precision: &'static str,
    pub layout: &'static str,
    pub device: String,
    pub threads: i32,
    pub train_ms_per_step: f64,
    pub train_img_per_s: f64,
    pub infer_img_per_s: f64,
    /// 3 x forward FLOPs per image (forward + backward), times images per second.
    pub train_gflop_per_s: f64,
    pub infer_gflop_per_s: f64,
    /// The process's peak resident memory (VmHWM), MiB.
    pub peak_mem_mib: f64,
    /// On CPU: the measured peak of the same number of threads (see `peak`).
    pub cpu_peak: Option<Peak>,
    /// train_gflop_per_s as a share of that peak, in the bench's precision (bf16's
    /// where it was measured), percent.
    pub train_pct_of_peak: Option<f64>,
}

/// Peak resident set size of this process in MiB (Linux), 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(graph: &Graph, o: &Options) -> Result {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(o.device);
    let (net, params) = graph.build(&vs.root(), o.build);
    let yaml = format!(
        "net: x\ndata: {{train: synthetic}}\ntype: Adam\nbase_lr: 0.001\nmomentum: 0.9\nmax_iter: 1\nbatch_size: {}\n",
        o.batch
    );
    let cfg: SolverConfig = serde_yaml::from_str(&yaml).expect("valid bench solver");
    let mut solver = Solver::new(&cfg, &params);
    let mut shape = vec![o.batch];
    shape.extend(&graph.input);
    let x = net.input(&Tensor::rand(shape.as_slice(), (Kind::Float, o.device)));
    // Targets of the net's own output size (2 per keypoint, whatever the set).
    let outputs = graph.nodes.last().map_or(30, |n| n.output.iter().product::<i64>());
    let y = Tensor::rand([o.batch, outputs], (Kind::Float, o.device));
    let loss_cfg = LossConfig::of(LossKind::Mse);
    let mut step = || {
        let (pred, tape) = net.forward_train(&x);
        let s = loss::sums(&loss_cfg, &pred, &y, 1.0); // mse: no pixel-sized parameter
        tape.backward(&loss::normalise(loss_cfg.kind, &s.loss, &s.count, o.batch));
        solver.step(&params, 1e-3);
    };
    // oneDNN builds its kernels on the first calls; a few more steps settle the allocator.
    let warmup = 8;
    for _ in 0..warmup {
        step();
    }
    sync(o.device);
    let t = Instant::now();
    for _ in 0..o.iterations {
        step();
    }
    sync(o.device);
    let train_s = t.elapsed().as_secs_f64() / o.iterations as f64;

    let infer = || {
        let _g = tch::no_grad_guard();
        let _ = net.forward_t(&x, false);
    };
    for _ in 0..warmup {
        infer();
    }
    sync(o.device);
    let t = Instant::now();
    let n_inf = o.iterations * 2;
    for _ in 0..n_inf {
        infer();
    }
    sync(o.device);
    let infer_s = t.elapsed().as_secs_f64() / n_inf as f64;
    let flops = graph.flops() as f64;
    let train_ips = o.batch as f64 / train_s;
    let infer_ips = o.batch as f64 / infer_s;
    let train_gflop_per_s = 3.0 * flops * train_ips / 1e9;
    let threads = tch::get_num_threads();
    let cpu_peak = (o.device == Device::Cpu).then(|| peak::measure(threads as usize)).flatten();
    let train_pct_of_peak = cpu_peak.and_then(|p| {
        let peak = if o.build.bf16 { p.bf16_gflop_per_s? } else { p.fp32_gflop_per_s };
        Some(100.0 * train_gflop_per_s / peak)
    });
    Result {
        net: graph.name.clone(),
        batch: o.batch,
        precision: if o.build.bf16 { "bf16" } else { "fp32" },
        layout: if o.build.channels_last { "channels_last" } else { "nchw" },
        device: format!("{:?}", o.device).to_lowercase(),
        threads,
        train_ms_per_step: train_s * 1e3,
        train_img_per_s: train_ips,
        infer_img_per_s: infer_ips,
        train_gflop_per_s,
        infer_gflop_per_s: flops * infer_ips / 1e9,
        peak_mem_mib: peak_rss_mib(),
        cpu_peak,
        train_pct_of_peak,
    }
}

impl Result {
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} batch {} {} {} on {} ({} threads)\n  train_img_per_s   {:.1}  ({:.1} ms/step, {:.1} GFLOP/s)\n  \
             infer_img_per_s   {:.1}  ({:.1} GFLOP/s)\n  peak_mem_mib      {:.0}\n",
            self.net,
            self.batch,
            self.precision,
            self.layout,
            self.device,
            self.threads,
            self.train_img_per_s,
            self.train_ms_per_step,
            self.train_gflop_per_s,
            self.infer_img_per_s,
            self.infer_gflop_per_s,
            self.peak_mem_mib
        );
        if let Some(p) = self.cpu_peak {
            let bf16 = p.bf16_gflop_per_s.map_or(String::new(), |b| format!(", bf16 {b:.0}"));
            t += &format!(
                "  cpu_peak          fp32 {:.0}{bf16} GFLOP/s (measured: {} threads, {} loops)\n",
                p.fp32_gflop_per_s, p.threads, p.isa
            );
        }
        if let Some(pct) = self.train_pct_of_peak {
            t += &format!("  train_of_peak     {pct:.0}% of the {} peak\n", self.precision);
        }
        // Without AMX, x86 bf16 dot products run at about half the fp32 FMA rate.
        let bf16_share = self.cpu_peak.and_then(|p| Some(p.bf16_gflop_per_s? / p.fp32_gflop_per_s));
        if let (Some(share), "bf16") = (bf16_share, self.precision) {
            if share < 0.75 {
                t += &format!(
                    "  note              bf16 arithmetic peaks at {:.0}% of fp32 on this CPU (no AMX): \
                     conv-bound nets train faster in fp32 here\n",
                    100.0 * share
                );
            }
        }
        t
    }
}

/// Seconds to parse a Kaggle CSV, and to read it back from the binary cache.
#[derive(Serialize, Debug)]
pub struct DataResult {
    pub faces: usize,
    pub parse_s: f64,
    pub cache_s: f64,
}

/// A solver file's image dataset: decoding and cutting out every face, then reading
/// them back from the cache.
pub fn image_data(solver: &std::path::Path) -> anyhow::Result<DataResult> {
    use crate::data::{cache, images};
    let r = crate::config::load_solver(solver, &[])?;
    let spec = crate::data::spec(&r.solver.data, &r.net)?;
    anyhow::ensure!(
        spec.format != crate::data::DataFormat::Kaggle,
        "{}: a Kaggle dataset; give the CSV itself",
        solver.display()
    );
    let t = Instant::now();
    let (faces, key) = images::decode_and_cache(&r.solver.data, &spec)?;
    let parse_s = t.elapsed().as_secs_f64();
    let key = key.ok_or_else(|| {
        anyhow::anyhow!("no cache for this dataset (no cache folder, or an image file vanished)")
    })?;
    let t = Instant::now();
    let again = cache::load_images(&key).ok_or_else(|| anyhow::anyhow!("the cache could not be written"))?;
    let cache_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(again.pixels == faces.pixels, "cache round trip differs");
    Ok(DataResult { faces: faces.len(), parse_s, cache_s })
}

pub fn data(csv: &std::path::Path) -> anyhow::Result<DataResult> {
    use crate::data::{cache, kaggle};
    if csv.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        return image_data(csv);
    }
    let t = Instant::now();
    let table = kaggle::parse(csv)?;
    let parse_s = t.elapsed().as_secs_f64();
    cache::store(csv, &table);
    let t = Instant::now();
    let again = cache::load(csv).ok_or_else(|| anyhow::anyhow!("the cache could not be written"))?;
    let cache_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(again.faces.pixels == table.faces.pixels, "cache round trip differs");
    Ok(DataResult { faces: table.ids.len(), parse_s, cache_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(precision: &'static str, bf16_peak: Option<f64>) -> Result {
        Result {
            net: "vgg".into(),
            batch: 64,
            precision,
            layout: "channels_last",
            device: "cpu".into(),
            threads: 2,
            train_ms_per_step: 1900.0,
            train_img_per_s: 33.7,
            infer_img_per_s: 107.0,
            train_gflop_per_s: 203.0,
            infer_gflop_per_s: 215.0,
            peak_mem_mib: 1417.0,
            cpu_peak: Some(Peak {
                fp32_gflop_per_s: 345.0,
                bf16_gflop_per_s: bf16_peak,
                threads: 2,
                isa: "avx512",
            }),
            train_pct_of_peak: Some(58.8),
        }
    }

    #[test]
    fn the_text_shows_the_peak_and_warns_where_bf16_is_the_slower_unit() {
        let t = result("fp32", Some(170.0)).text();
        assert!(
            t.contains("cpu_peak          fp32 345, bf16 170 GFLOP/s (measured: 2 threads, avx512 loops)"),
            "{t}"
        );
        assert!(t.contains("59% of the fp32 peak") && !t.contains("note"), "{t}");
        let t = result("bf16", Some(170.0)).text();
        assert!(t.contains("bf16 arithmetic peaks at 49% of fp32 on this CPU (no AMX)"), "{t}");
        // Where bf16 is as fast (AMX, a GPU) or unmeasured, no note.
        assert!(!result("bf16", Some(700.0)).text().contains("note"));
        assert!(!result("bf16", None).text().contains("note"));
    }
}
