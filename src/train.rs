//! The train loop, in Caffe's order: test (every test_interval, and at 0 when
//! test_initialization) -> forward/backward (iter_size times) -> display -> update ->
//! snapshot; a final test at max_iter.

use crate::config::{NetConfig, Resolved};
use crate::data;
use crate::graph::{Graph, Net};
use crate::loss;
use crate::run::{self, Metrics, MetricsRow, RunDir};
use crate::solver::{lr, Solver};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Device, Tensor};

pub struct Options {
    pub runs_dir: PathBuf,
    pub name: Option<String>,
    /// Print nothing but errors and the final line.
    pub quiet: bool,
}

pub struct Outcome {
    pub run_dir: PathBuf,
    pub best_val_rmse_px: Option<f64>,
    pub best_iter: Option<i64>,
    pub final_train_loss: Option<f64>,
    pub seconds: f64,
}

/// `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_device(s: &str) -> Result<Device> {
    let dev = match s {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
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

/// Mean loss and pixel RMSE of `net` on a whole split, without autograd.
pub fn evaluate(
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    kind: crate::config::LossKind,
    limit: Option<i64>,
) -> (f64, f64) {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let bs = 256;
    let n = limit.map_or(n, |l| l.min(n));
    let (mut sq, mut count) = (0.0, 0.0);
    for start in (0..n).step_by(bs as usize) {
        let len = bs.min(n - start);
        let pred = net.forward_t(&x.narrow(0, start, len), false);
        let (s, c) = loss::squared_error(&pred, &y.narrow(0, start, len));
        sq += s.double_value(&[]);
        count += c.double_value(&[]);
    }
    let loss = loss::from_sums(kind, &Tensor::from(sq), &Tensor::from(count), n).double_value(&[]);
    (loss, loss::rmse_px(sq, count))
}

/// Hands out batches in a seeded shuffled order, reshuffling each epoch; a batch that
/// runs past the end continues into the next epoch (as Caffe's data layers do).
struct Batches {
    order: Vec<i64>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl Batches {
    fn new(n: usize, seed: u64) -> Batches {
        let mut b = Batches {
            order: (0..n as i64).collect(),
            cursor: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        b.order.shuffle(&mut b.rng);
        b
    }

    fn next(&mut self, size: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            let take = (size - out.len()).min(self.order.len() - self.cursor);
            out.extend_from_slice(&self.order[self.cursor..self.cursor + take]);
            self.cursor += take;
        }
        out
    }
}

fn check_input(net: &NetConfig) -> Result<()> {
    let want = [1, data::SIDE as i64, data::SIDE as i64];
    if net.input != want {
        bail!(
            "net {}: input is {:?}, but the faces are [1, 96, 96] (grey 96x96)",
            net.name,
            net.input
        );
    }
    Ok(())
}

/// The resolved config as written to the run dir: solver keys, the net inline with
/// every default, and the seed actually used.
fn resolved_yaml(r: &Resolved, graph: &Graph, seed: i64) -> Result<String> {
    let mut solver = r.solver.clone();
    solver.random_seed = seed;
    solver.net = graph.resolved();
    Ok(serde_yaml::to_string(&solver)?)
}

pub fn train(r: &Resolved, opts: &Options) -> Result<Outcome> {
    let cfg = &r.solver;
    let device = parse_device(&cfg.device)?;
    let graph = Graph::compile(&r.net, &r.net_source, data::TARGETS as i64)?;
    check_input(&r.net)?;
    let seed = if cfg.random_seed >= 0 {
        cfg.random_seed
    } else {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
            % (1 << 31)) as i64
    };
    let say = |s: &str| {
        if !opts.quiet {
            eprintln!("{s}");
        }
    };

    let split = data::load(&cfg.data)?;
    if split.train.len() < cfg.batch_size as usize {
        say(&format!(
            "note: batch_size {} is larger than the {} training faces; batches wrap around",
            cfg.batch_size,
            split.train.len()
        ));
    }
    let solver_stem = r
        .solver_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run");
    // adam.yaml + lenet -> adam_lenet; vgg_adam.yaml -> vgg_adam; a run's config.yaml -> the net's name.
    let default_name = if solver_stem == "config" {
        r.net.name.clone()
    } else if solver_stem.contains(&r.net.name) {
        solver_stem.to_string()
    } else {
        format!("{solver_stem}_{}", r.net.name)
    };
    let run = RunDir::create(&opts.runs_dir, opts.name.as_deref(), &default_name)?;
    run::write_text(&run.file("config.yaml"), &resolved_yaml(r, &graph, seed)?)?;

    tch::manual_seed(seed);
    let vs = nn::VarStore::new(device);
    let (net, params) = graph.build(&vs.root());
    let mut solver = Solver::new(cfg, &params);
    let (train_x, train_y) = split.train.to_tensors(device);
    let (val_x, val_y) = split.val.to_tensors(device);
    let n_train = split.train.len();
    let has_val = !split.val.is_empty();
    say(&format!(
        "fkpnet: training {} ({} params, {} FLOPs/image) with {:?} ({:?} flavor) on {:?}\n  data: {}: {} train / {} val faces\n  run dir: {}",
        graph.name,
        graph.num_params(),
        crate::graph::human(graph.flops()),
        cfg.solver_type,
        cfg.flavor,
        device,
        split.source,
        n_train,
        split.val.len(),
        run.path.display()
    ));

    let mut metrics = Metrics::create(&run.file("metrics.csv"))?;
    let mut batches = Batches::new(n_train, seed as u64);
    let bs = cfg.batch_size as usize;
    let start = Instant::now();
    let epoch_of = |iter: i64| iter as f64 * (bs as i64 * cfg.iter_size) as f64 / n_train as f64;
    let progress = progress_bar(cfg.max_iter as u64, opts.quiet);
    let mut smoothed: VecDeque<f64> = VecDeque::new();
    let (mut win_sq, mut win_count) = (0.0, 0.0);
    let mut best: Option<(f64, f64, i64)> = None; // (val loss, val rmse, iter)
    let mut last_train_loss = None;
    let mut last_val_rmse: Option<f64> = None;
    let test_limit = (cfg.test_iter > 0).then(|| cfg.test_iter * cfg.batch_size);

    let test =
        |iter: i64, row: &mut MetricsRow, best: &mut Option<(f64, f64, i64)>| -> Result<()> {
            if !has_val {
                return Ok(());
            }
            let (vl, vr) = evaluate(&net, &val_x, &val_y, graph.loss.kind, test_limit);
            let vl = vl * graph.loss.loss_weight;
            row.val_loss = Some(vl);
            row.val_rmse_px = Some(vr);
            if best.is_none_or(|b| vl < b.0) {
                *best = Some((vl, vr, iter));
                let path = run.file("best.safetensors");
                run::atomic_write(&path, |tmp| {
                    vs.save(tmp).context("cannot save best weights")
                })?;
            }
            Ok(())
        };

    for iter in 0..cfg.max_iter {
        let mut row = MetricsRow {
            iter,
            epoch: epoch_of(iter),
            ..Default::default()
        };
        if cfg.test_interval > 0
            && iter % cfg.test_interval == 0
            && (iter > 0 || cfg.test_initialization)
        {
            test(iter, &mut row, &mut best)?;
            last_val_rmse = row.val_rmse_px;
        }
        let mut loss_sum = 0.0;
        for _ in 0..cfg.iter_size {
            let idx = Tensor::from_slice(&batches.next(bs)).to_device(device);
            let x = train_x.index_select(0, &idx);
            let y = train_y.index_select(0, &idx);
            let pred = net.forward_t(&x, true);
            let (sq, count) = loss::squared_error(&pred, &y);
            let l =
                loss::from_sums(graph.loss.kind, &sq, &count, bs as i64) * graph.loss.loss_weight;
            l.backward();
            let lv = l.double_value(&[]);
            if !lv.is_finite() {
                bail!(
                    "iteration {iter}: the loss became {lv}. Training stopped; {} holds the metrics so far. \
                     Try a lower base_lr (now {}) or clip_gradients.",
                    run.path.display(),
                    cfg.base_lr
                );
            }
            loss_sum += lv;
            win_sq += sq.double_value(&[]);
            win_count += count.double_value(&[]);
        }
        let loss_now = loss_sum / cfg.iter_size as f64;
        smoothed.push_back(loss_now);
        if smoothed.len() > cfg.average_loss as usize {
            smoothed.pop_front();
        }
        let rate = lr::rate(cfg, solver.iter);
        if cfg.display > 0 && iter % cfg.display == 0 {
            let sl = smoothed.iter().sum::<f64>() / smoothed.len() as f64;
            row.train_loss = Some(sl);
            row.train_rmse_px = Some(loss::rmse_px(win_sq, win_count));
            row.lr = Some(rate);
            last_train_loss = Some(sl);
            (win_sq, win_count) = (0.0, 0.0);
        }
        solver.step(&params, rate);
        if cfg.snapshot > 0 && solver.iter % cfg.snapshot == 0 {
            let path = run.file(&format!(
                "{}_iter_{}.safetensors",
                cfg.snapshot_prefix, solver.iter
            ));
            run::atomic_write(&path, |tmp| vs.save(tmp).context("cannot save a snapshot"))?;
        }
        if row.train_loss.is_some() || row.val_loss.is_some() {
            row.seconds = start.elapsed().as_secs_f64();
            metrics.write(&row)?;
            report(&progress, &row, cfg.max_iter, opts.quiet);
        }
        progress.set_position(solver.iter as u64);
        if let Some(l) = last_train_loss {
            let v = last_val_rmse
                .map(|v| format!(" val {v:.2}px"))
                .unwrap_or_default();
            progress.set_message(format!("loss {l:.4}{v}"));
        }
    }
    // Final test at max_iter, as Caffe does after the last update.
    let mut row = MetricsRow {
        iter: cfg.max_iter,
        epoch: epoch_of(cfg.max_iter),
        ..Default::default()
    };
    test(cfg.max_iter, &mut row, &mut best)?;
    let seconds = start.elapsed().as_secs_f64();
    if row.val_loss.is_some() {
        row.seconds = seconds;
        metrics.write(&row)?;
    }
    run::atomic_write(&run.file("weights.safetensors"), |tmp| {
        vs.save(tmp).context("cannot save weights")
    })?;
    progress.finish_and_clear();
    let epochs = epoch_of(cfg.max_iter);
    let best_txt = best
        .map(|(l, r, i)| format!("best val loss {l:.5} = RMSE {r:.3} px at iteration {i}"))
        .unwrap_or_else(|| "no val split (data.split = 1)".into());
    say(&format!(
        "done: {} iterations ({epochs:.1} epochs) in {seconds:.1}s ({:.2}s/epoch); {best_txt}\n  results: {}",
        cfg.max_iter,
        if epochs > 0.0 { seconds / epochs } else { 0.0 },
        run.path.display()
    ));
    Ok(Outcome {
        run_dir: run.path,
        best_val_rmse_px: best.map(|b| b.1),
        best_iter: best.map(|b| b.2),
        final_train_loss: last_train_loss,
        seconds,
    })
}

fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] iter {pos}/{len} {msg} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A plain line per metrics row when there is no progress bar (logs, CI, pipes).
fn report(bar: &ProgressBar, r: &MetricsRow, max_iter: i64, quiet: bool) {
    if quiet || !bar.is_hidden() {
        return;
    }
    let mut s = format!("iter {:>6}/{max_iter} epoch {:>7.2}", r.iter, r.epoch);
    if let (Some(l), Some(lr)) = (r.train_loss, r.lr) {
        s += &format!("  lr {lr:.3e}  loss {l:.5}");
        if let Some(t) = r.train_rmse_px {
            s += &format!(" ({t:.2}px)");
        }
    }
    if let (Some(l), Some(v)) = (r.val_loss, r.val_rmse_px) {
        s += &format!("  val loss {l:.5} RMSE {v:.3}px");
    }
    s += &format!("  {:.1}s", r.seconds);
    eprintln!("{s}");
}
