//! The train loop, in Caffe's order: test (every test_interval, and at 0 when
//! test_initialization) -> forward/backward (iter_size times) -> display -> update ->
//! snapshot; a final test after the last update.

use crate::config::solver::{Layout, LrPolicy, OnNan, Precision};
use crate::config::Resolved;
use crate::data;
use crate::graph::{Graph, Net};
use crate::infer;
use crate::layers::BuildOptions;
use crate::loss;
use crate::run::caffe_log::CaffeLog;
use crate::run::tensorboard::EventWriter;
use crate::run::{self, Metrics, MetricsRow, RunDir};
use crate::solver::state::{self, Best};
use crate::solver::{lr, Solver};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tch::{nn, Device, Tensor};

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
}

pub struct Outcome {
    pub run_dir: PathBuf,
    pub best_val_rmse_px: Option<f64>,
    pub best_iter: Option<i64>,
    pub final_train_loss: Option<f64>,
    pub seconds: f64,
    /// Set when Ctrl-C/SIGTERM stopped training: the snapshot to resume from.
    pub interrupted: Option<PathBuf>,
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

/// Batches in a seeded shuffled order, a fresh order each epoch; a batch that runs
/// past the end of an epoch continues into the next (as Caffe's data layers do).
/// Batch k is a pure function of (seed, k), so a resumed run sees the same batches.
struct Batches {
    n: usize,
    seed: u64,
    epoch: Option<(usize, Vec<i64>)>,
}

impl Batches {
    fn new(n: usize, seed: u64) -> Batches {
        Batches { n, seed, epoch: None }
    }

    fn order(&mut self, epoch: usize) -> &[i64] {
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<i64> = (0..self.n as i64).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            self.epoch = Some((epoch, order));
        }
        &self.epoch.as_ref().expect("just set").1
    }

    /// The `size` indices of global batch number `k`.
    fn batch(&mut self, k: usize, size: usize) -> Vec<i64> {
        (k * size..(k + 1) * size)
            .map(|pos| {
                let n = self.n;
                self.order(pos / n)[pos % n]
            })
            .collect()
    }
}

/// Precision and layout in force. `layout: auto` picks channels-last for nets with
/// conv layers on CPU, where it measured faster (README, "Speed").
pub fn build_options(graph: &Graph, device: Device, precision: Precision, layout: Layout) -> BuildOptions {
    let has_conv = graph.nodes.iter().any(|n| n.kind == "conv");
    let channels_last = match layout {
        Layout::Nchw => false,
        Layout::ChannelsLast => true,
        Layout::Auto => has_conv && device == Device::Cpu,
    };
    BuildOptions { bf16: precision == Precision::Bf16, channels_last }
}

/// The resolved config as written to the run dir: solver keys, the net inline with
/// every default, and the seed actually used.
fn resolved_yaml(r: &Resolved, graph: &Graph, seed: i64) -> Result<String> {
    let mut solver = r.solver.clone();
    solver.random_seed = seed;
    solver.net = graph.resolved();
    Ok(serde_yaml::to_string(&solver)?)
}

/// What lr_policy plateau and early_stop count: reductions so far, and tests since
/// the val loss last improved (overall, and since the last reduction).
#[derive(Default)]
struct Schedule {
    drops: i64,
    since_best: i64,
    since_drop: i64,
}

/// The loop's running state as the solverstate stores it:
/// [display-window squared error, its count, plateau drops, tests since best,
/// tests since the last drop, smoothed losses...].
fn loop_state(win_sq: f64, win_count: f64, sched: &Schedule, smoothed: &VecDeque<f64>) -> Vec<f64> {
    let head = [win_sq, win_count, sched.drops as f64, sched.since_best as f64, sched.since_drop as f64];
    head.into_iter().chain(smoothed.iter().copied()).collect()
}

/// Ctrl-C / SIGTERM count: the first asks the loop to snapshot and stop after the
/// current iteration, the second exits at once.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\nsecond interrupt: exiting now without a snapshot");
            std::process::exit(130);
        }
        // Short enough for an 80-column terminal: a wrapped line is half erased by the
        // progress bar's next redraw.
        eprintln!("\ninterrupt: snapshot after this iteration (Ctrl-C again: quit now)");
    });
}

fn default_run_name(r: &Resolved, resume: Option<&Path>) -> String {
    // A resumed run is named after the run it continues: full -> full_resumed (and a
    // resume of full_resumed is full_resumed_2, not full_resumed_resumed).
    if let Some(old) = resume.and_then(snapshot_run_name) {
        let base = match old.rfind("_resumed") {
            Some(i)
                if old[i + 8..]
                    .strip_prefix('_')
                    .unwrap_or(&old[i + 8..])
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                &old[..i]
            }
            _ => &old,
        };
        return format!("{base}_resumed");
    }
    // adam.yaml + lenet -> adam_lenet; vgg_adam.yaml -> vgg_adam; a run's config.yaml -> the net's name.
    let stem = r.solver_path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    if stem == "config" {
        r.net.name.clone()
    } else if stem.contains(&r.net.name) {
        stem.to_string()
    } else {
        format!("{stem}_{}", r.net.name)
    }
}

/// The name of the run dir a snapshot lies in.
fn snapshot_run_name(snapshot: &Path) -> Option<String> {
    let dir = std::path::absolute(snapshot).ok()?.parent()?.file_name()?.to_str()?.to_string();
    Some(dir)
}

/// The resolved config of the run a snapshot belongs to (its dir's config.yaml).
fn snapshot_run_config(snapshot: &Path) -> Option<serde_yaml::Value> {
    let text = std::fs::read_to_string(snapshot.parent()?.join("config.yaml")).ok()?;
    serde_yaml::from_str(&text).ok()
}

/// A resume continues the run it came from: a solver whose resolved config differs
/// (another data file, a dropped `--set`) would silently train something else from
/// its weights, which is a finetune. Refused unless asked for, with what differs.
fn check_resume_config(
    snapshot: &Path,
    resolved: &str,
    allow: bool,
    say: &dyn Fn(&str),
) -> Result<Vec<String>> {
    let Some(old) = snapshot_run_config(snapshot) else {
        say(&format!(
            "note: no readable config.yaml beside {}: cannot check that this solver is the one it was \
             trained with",
            snapshot.display()
        ));
        return Ok(Vec::new());
    };
    let new: serde_yaml::Value = serde_yaml::from_str(resolved)?;
    let changes = crate::config::diff::config_diff(&old, &new);
    if changes.is_empty() || allow {
        return Ok(changes);
    }
    let run = snapshot.parent().unwrap_or(Path::new("."));
    bail!(
        "--snapshot {}: this solver's resolved config differs from the run the snapshot belongs to \
         ({}):\n  {}\nTo continue that run as it was, resume from its own config: fkpnet train {} \
         --snapshot {}\nTo train with these changes from its weights, that is a finetune: --weights {} \
         (or pass --allow-config-change to resume the solver state anyway)",
        snapshot.display(),
        run.join("config.yaml").display(),
        changes.join("\n  "),
        run.join("config.yaml").display(),
        snapshot.display(),
        state::weights_of(snapshot).display()
    )
}

/// The command that resumes an interrupted run exactly: from the run's own resolved
/// config (every `--set` is in it), with the runs dir and thread count it ran with;
/// the new run is named after the old one (`NAME_resumed`). Shell-quoted, to be run
/// as printed from the directory fkpnet ran in.
pub fn resume_command(
    program: &str,
    run_dir: &Path,
    snapshot: &Path,
    runs_dir: &Path,
    threads: Option<i32>,
) -> String {
    let mut args: Vec<String> = vec![
        program.into(),
        "train".into(),
        run_dir.join("config.yaml").display().to_string(),
        "--snapshot".into(),
        snapshot.display().to_string(),
        "--runs-dir".into(),
        runs_dir.display().to_string(),
    ];
    if let Some(n) = threads {
        args.extend(["--threads".into(), n.to_string()]);
    }
    shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "))
}

pub fn train(r: &Resolved, opts: &Options) -> Result<Outcome> {
    let cfg = &r.solver;
    if opts.resume.is_some() && opts.weights.is_some() {
        bail!("--snapshot (resume) and --weights (finetune) exclude each other, as in Caffe: choose one");
    }
    let device = parse_device(&cfg.device)?;
    let spec = data::spec(&cfg.data, &r.net)?;
    let graph = Graph::compile(&r.net, &r.net_source, spec.targets() as i64)?;
    // A resumed run draws what the interrupted one drew: a random seed is the one it used.
    let resumed_seed = opts
        .resume
        .as_deref()
        .and_then(snapshot_run_config)
        .and_then(|c| c["random_seed"].as_i64())
        .filter(|_| cfg.random_seed < 0);
    let seed = if cfg.random_seed >= 0 {
        cfg.random_seed
    } else if let Some(s) = resumed_seed {
        s
    } else {
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() % (1 << 31)) as i64
    };
    let say = |s: &str| {
        if !opts.quiet {
            eprintln!("{s}");
        }
    };
    if let Some(s) = &opts.resume {
        for f in [s.clone(), state::weights_of(s)] {
            if !f.is_file() {
                bail!("--snapshot {}: {} does not exist", s.display(), f.display());
            }
        }
    }

    let resolved = resolved_yaml(r, &graph, seed)?;
    let changes = match &opts.resume {
        Some(s) => check_resume_config(s, &resolved, opts.allow_config_change, &say)?,
        None => Vec::new(),
    };
    if let Some(s) = &opts.resume {
        state::check_kind(s, cfg.solver_type)?;
    }

    run::check_writable(&opts.runs_dir)?;
    run::check_space(&opts.runs_dir, run_bytes(&graph, cfg), run::free_bytes(&opts.runs_dir))?;
    let split = data::load(&cfg.data, &spec)?;
    let run =
        RunDir::create(&opts.runs_dir, opts.name.as_deref(), &default_run_name(r, opts.resume.as_deref()))?;
    run::write_text(&run.file("config.yaml"), &resolved)?;

    tch::manual_seed(seed);
    let vs = nn::VarStore::new(device);
    let build = build_options(&graph, device, cfg.precision, cfg.layout);
    let (net, params) = graph.build(&vs.root(), build);
    let mut best: Best = None;
    let mut smoothed: VecDeque<f64> = VecDeque::new();
    let (mut win_sq, mut win_count) = (0.0, 0.0);
    let mut sched = Schedule::default();
    let mut metrics = Metrics::create(&run.file("metrics.csv"))?;
    let mut log = CaffeLog::create(&run.file("train.log"))?;
    let mut events = EventWriter::create(&run.path)?;
    log.solving(&graph.name, &format!("{:?}", cfg.lr_policy).to_lowercase())?;
    if let Some(w) = &opts.weights {
        for n in state::load_weights(w, &params, false)? {
            say(&format!("  weights: {n}"));
        }
        log.note(&format!("Finetuning from {}", w.display()))?;
    }
    // After a finetune load: the weights' moving average starts from the loaded weights.
    let mut solver = Solver::new(cfg, &params);
    if let Some(s) = &opts.resume {
        state::load_weights(&state::weights_of(s), &params, true)?;
        let (b, loop_state) = state::load(s, &mut solver, &params)?;
        best = b;
        if let [sq, count, drops, since_best, since_drop, losses @ ..] = loop_state.as_slice() {
            (win_sq, win_count) = (*sq, *count);
            sched = Schedule {
                drops: *drops as i64,
                since_best: *since_best as i64,
                since_drop: *since_drop as i64,
            };
            smoothed = losses.iter().copied().collect();
        }
        // Carry over what the interrupted run had measured before the snapshot.
        let old = s.parent().unwrap_or(Path::new("."));
        if let Ok(rows) = run::read_metrics(&old.join("metrics.csv")) {
            for row in rows.iter().filter(|row| row.iter < solver.iter) {
                metrics.write(row)?;
            }
        }
        if old.join("best.safetensors").is_file() {
            std::fs::copy(old.join("best.safetensors"), run.file("best.safetensors"))?;
        }
        log.note(&format!("Resuming from {}", s.display()))?;
        for c in &changes {
            say(&format!("  changed since the snapshot (--allow-config-change): {c}"));
            log.note(&format!("Changed since the snapshot: {c}"))?;
        }
    }
    if solver.iter > cfg.max_iter {
        bail!("the snapshot is at iteration {}, past max_iter {}", solver.iter, cfg.max_iter);
    }

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
    install_signal_handler();

    let mut batches = Batches::new(n_train, seed as u64);
    let bs = cfg.batch_size as usize;
    let start = Instant::now();
    let epoch_of = |iter: i64| iter as f64 * (bs as i64 * cfg.iter_size) as f64 / n_train as f64;
    let progress = progress_bar(cfg.max_iter as u64, opts.quiet);
    progress.set_position(solver.iter as u64);
    let mut last_train_loss = None;
    let mut last_val_rmse: Option<f64> = None;
    let mut last_display = (Instant::now(), solver.iter);
    let test_limit = (cfg.test_iter > 0).then(|| cfg.test_iter * cfg.batch_size);
    let w = graph.loss.loss_weight;
    let loss_name = serde_yaml::to_string(&graph.loss.kind)?.trim().to_string();

    // Tests (and best.safetensors) see the weights' moving average when there is one.
    let test = |iter: i64,
                row: &mut MetricsRow,
                best: &mut Best,
                log: &mut CaffeLog,
                events: &mut EventWriter,
                solver: &mut Solver|
     -> Result<Option<bool>> {
        if !has_val {
            return Ok(None);
        }
        solver.swap_ema(&params);
        let eval = infer::evaluate(&net, &val_x, &val_y, &graph.loss, test_limit, &cfg.test, &spec);
        let (vl, vr) = (eval.loss, eval.rmse_px);
        let histograms = cfg.histograms.then(|| histogram_tensors(&graph, &net, &params, &val_x));
        let improved = best.is_none_or(|b| vl * w < b.0);
        let saved = if improved {
            run::atomic_write(&run.file("best.safetensors"), |tmp| crate::graph::save_weights(&params, tmp))
        } else {
            Ok(())
        };
        solver.swap_ema(&params);
        saved?;
        let mut outputs = vec![("loss", vl, Some(w)), ("rmse_px", vr, None)];
        let mut scalars = vec![("val/loss", vl * w), ("val/rmse_px", vr)];
        if let Some(m) = eval.nme {
            outputs.extend([
                ("nme_pct", m.nme, None),
                ("failure_pct", m.failure_rate, None),
                ("auc_pct", m.auc, None),
            ]);
            scalars.extend([
                ("val/nme_pct", m.nme),
                ("val/failure_pct", m.failure_rate),
                ("val/auc_pct", m.auc),
            ]);
            row.val_nme = Some(m.nme);
            row.val_fr = Some(m.failure_rate);
            row.val_auc = Some(m.auc);
        }
        log.test(iter, &outputs)?;
        let vl = vl * w;
        events.scalars(iter, &scalars)?;
        if let Some(h) = histograms {
            events.histograms(iter, &h)?;
        }
        row.val_loss = Some(vl);
        row.val_rmse_px = Some(vr);
        if improved {
            *best = Some((vl, vr, iter));
        }
        Ok(Some(improved))
    };
    // The display window and smoothed losses travel in the solverstate, so a resumed
    // run reports exactly what the uninterrupted one would.
    let snapshot =
        |solver: &Solver, best: Best, loop_state: Vec<f64>, log: &mut CaffeLog| -> Result<PathBuf> {
            let stem = format!("{}_iter_{}", cfg.snapshot_prefix, solver.iter);
            let (weights, st) =
                (run.file(&format!("{stem}.safetensors")), run.file(&format!("{stem}.solverstate")));
            run::atomic_write(&weights, |tmp| crate::graph::save_weights(&params, tmp))?;
            state::save(&st, solver, &params, best, &loop_state)?;
            log.snapshot(&weights, &st)?;
            Ok(st)
        };

    let mut interrupted = None;
    let mut skipped = 0i64;
    let mut stopped_early = false;
    while solver.iter < cfg.max_iter {
        let iter = solver.iter;
        let mut row = MetricsRow { iter, epoch: epoch_of(iter), ..Default::default() };
        if cfg.test_interval > 0 && iter % cfg.test_interval == 0 && (iter > 0 || cfg.test_initialization) {
            if let Some(improved) = test(iter, &mut row, &mut best, &mut log, &mut events, &mut solver)? {
                (sched.since_best, sched.since_drop) =
                    if improved { (0, 0) } else { (sched.since_best + 1, sched.since_drop + 1) };
                if cfg.lr_policy == LrPolicy::Plateau && sched.since_drop >= cfg.patience.unwrap_or(1) {
                    sched.drops += 1;
                    sched.since_drop = 0;
                    log.note(&format!(
                        "Iteration {iter}: no val improvement for {} tests, lr x gamma",
                        cfg.patience.unwrap_or(1)
                    ))?;
                }
                if cfg.early_stop > 0 && sched.since_best >= cfg.early_stop {
                    row.seconds = start.elapsed().as_secs_f64();
                    metrics.write(&row)?;
                    report(&progress, &row, cfg.max_iter, opts.quiet);
                    stopped_early = true;
                    log.note(&format!(
                        "Iteration {iter}: early stop, no val improvement for {} tests",
                        cfg.early_stop
                    ))?;
                    break;
                }
            }
            last_val_rmse = row.val_rmse_px;
        }
        // Dropout draws from libtorch's RNG: seed it per iteration so a resumed run
        // draws the same masks as an uninterrupted one.
        tch::manual_seed(seed.wrapping_mul(1_000_003).wrapping_add(iter));
        let mut loss_sum = 0.0;
        let mut bad_loss = None;
        for j in 0..cfg.iter_size {
            let k = (iter * cfg.iter_size + j) as usize;
            let idx = Tensor::from_slice(&batches.batch(k, bs)).to_device(device);
            let mut x = train_x.index_select(0, &idx);
            let mut y = train_y.index_select(0, &idx);
            if !cfg.data.augment.is_off() {
                (x, y) = cfg.data.augment.apply(&x, &y, &spec);
            }
            let (pred, reg) = train_forward(&net, &graph, &x, &y);
            let loss::Sums { loss: sum, sq, count } = loss::sums(&graph.loss, &pred, &y, spec.half());
            let l = loss::normalise(graph.loss.kind, &sum, &count, bs as i64) * w;
            // The regulariser joins the gradient; the reported loss stays the coordinate
            // loss, comparable with val and with runs without it.
            let total = reg.map_or_else(|| l.shallow_clone(), |r| &l + r);
            total.backward();
            let [lv, sq, count, tv] = loss::to_host([&l, &sq, &count, &total]);
            if !tv.is_finite() {
                bad_loss = Some(tv);
                break;
            }
            loss_sum += lv;
            win_sq += sq;
            win_count += count;
        }
        if let Some(lv) = bad_loss {
            let layer = first_non_finite_grad(&params)
                .map(|p| format!("; the first non-finite gradient is in `{p}`"))
                .unwrap_or_default();
            if cfg.on_nan == OnNan::Stop {
                bail!(
                    "iteration {iter}: the loss became {lv}{layer}. Training stopped; {} keeps the metrics \
                     and snapshots so far. Try a lower base_lr (now {}), clip_gradients (e.g. 10), or \
                     on_nan: skip to drop such batches.",
                    run.path.display(),
                    cfg.base_lr
                );
            }
            // on_nan: skip: drop this batch's gradients, count the iteration, go on.
            tch::no_grad(|| {
                params.iter().for_each(|p| {
                    let _ = p.tensor.grad().zero_();
                })
            });
            solver.iter += 1;
            skipped += 1;
            log.note(&format!("Iteration {iter}: loss {lv}{layer}; batch skipped (on_nan: skip)"))?;
            if skipped > 100 && skipped * 2 > solver.iter {
                bail!("more than half of {} iterations had a non-finite loss; stopping", solver.iter);
            }
            continue;
        }
        let loss_now = loss_sum / cfg.iter_size as f64;
        smoothed.push_back(loss_now);
        if smoothed.len() > cfg.average_loss as usize {
            smoothed.pop_front();
        }
        let rate = lr::rate(cfg, iter, sched.drops);
        if cfg.display > 0 && iter % cfg.display == 0 {
            let sl = smoothed.iter().sum::<f64>() / smoothed.len() as f64;
            row.train_loss = Some(sl);
            row.train_rmse_px = Some(loss::rmse_px(win_sq, win_count, spec.half()));
            row.lr = Some(rate);
            last_train_loss = Some(sl);
            (win_sq, win_count) = (0.0, 0.0);
            let secs = last_display.0.elapsed().as_secs_f64();
            let its = (iter - last_display.1) as f64;
            let ips = if secs > 0.0 { its / secs } else { 0.0 };
            log.display(iter, ips, secs, cfg.display, sl, &[(&loss_name, loss_now / w, Some(w))], rate)?;
            let train_rmse = row.train_rmse_px.unwrap_or(f64::NAN);
            events.scalars(iter, &[("train/loss", sl), ("train/rmse_px", train_rmse), ("lr", rate)])?;
            last_display = (Instant::now(), iter);
        }
        solver.step(&params, rate);
        if row.train_loss.is_some() || row.val_loss.is_some() {
            row.seconds = start.elapsed().as_secs_f64();
            metrics.write(&row)?;
            report(&progress, &row, cfg.max_iter, opts.quiet);
        }
        if cfg.snapshot > 0 && solver.iter % cfg.snapshot == 0 {
            snapshot(&solver, best, loop_state(win_sq, win_count, &sched, &smoothed), &mut log)?;
        }
        progress.set_position(solver.iter as u64);
        if let Some(l) = last_train_loss {
            let v = last_val_rmse.map(|v| format!(" val {v:.2}px")).unwrap_or_default();
            progress.set_message(format!("loss {l:.4}{v}"));
        }
        if SIGNALS.load(Ordering::SeqCst) > 0 && solver.iter < cfg.max_iter {
            interrupted =
                Some(snapshot(&solver, best, loop_state(win_sq, win_count, &sched, &smoothed), &mut log)?);
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    if let Some(st) = &interrupted {
        log.note(&format!("Interrupted at iteration {}", solver.iter))?;
        say(&format!(
            "interrupted at iteration {} of {}; snapshot written: {}",
            solver.iter,
            cfg.max_iter,
            st.display()
        ));
    } else if stopped_early {
        say(&format!(
            "early stop at iteration {}: no val improvement for {} tests",
            solver.iter, cfg.early_stop
        ));
        log.done()?;
    } else {
        // Final test after the last update, as Caffe does.
        let mut row = MetricsRow { iter: cfg.max_iter, epoch: epoch_of(cfg.max_iter), ..Default::default() };
        test(cfg.max_iter, &mut row, &mut best, &mut log, &mut events, &mut solver)?;
        if row.val_loss.is_some() {
            row.seconds = seconds;
            metrics.write(&row)?;
        }
        log.done()?;
    }
    // The final weights are the moving average where there is one (as Keras' use_ema);
    // snapshots keep the raw weights (resuming needs them) and the average in the solverstate.
    solver.swap_ema(&params);
    run::atomic_write(&run.file("weights.safetensors"), |tmp| crate::graph::save_weights(&params, tmp))?;
    let epochs = epoch_of(solver.iter);
    let best_txt = best
        .map(|(l, r, i)| format!("best val loss {l:.5} = RMSE {r:.3} px at iteration {i}"))
        .unwrap_or_else(|| "no val split (data.split = 1)".into());
    say(&format!(
        "{}: {} iterations ({epochs:.1} epochs) in {seconds:.1}s; {best_txt}\n  results: {}",
        if interrupted.is_some() { "stopped" } else { "done" },
        solver.iter,
        run.path.display()
    ));
    Ok(Outcome {
        run_dir: run.path,
        best_val_rmse_px: best.map(|b| b.1),
        best_iter: best.map(|b| b.2),
        final_train_loss: last_train_loss,
        seconds,
        interrupted,
    })
}

/// The training forward pass: the predictions, and with `js_reg` the heatmap
/// regulariser's loss (read off the maps the last layer, a soft_argmax, takes in).
fn train_forward(net: &Net, graph: &Graph, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>) {
    let Some(r) = &graph.loss.js_reg else {
        return (net.forward_t(x, true), None);
    };
    let last = graph.nodes.len() - 1;
    let (pred, maps) = net.forward_keeping(x, true, net.bottoms(last)[0]);
    let log_p = graph.nodes[last].layer.heatmap_log_probs(&maps).expect("checked by Graph::compile");
    let (sum, count) = loss::js_divergence(&log_p, y, r.sigma);
    let reg = sum / count.clamp_min(1.0) * r.loss_weight;
    (pred, Some(reg))
}

/// About how many bytes a run writes: float32 weights (final, best, each snapshot),
/// each snapshot's solver history, and a margin for logs and event files.
fn run_bytes(graph: &Graph, cfg: &crate::config::SolverConfig) -> u64 {
    let weights =
        4 * graph.nodes.iter().flat_map(|n| &n.params).map(|p| p.shape.iter().product::<i64>()).sum::<i64>()
            as u64;
    let snapshots = if cfg.snapshot > 0 { (cfg.max_iter / cfg.snapshot) as u64 } else { 0 };
    let history = cfg.solver_type.history_buffers() as u64;
    weights * (2 + snapshots * (1 + history)) + (1 << 20)
}

/// The name of the first parameter whose gradient holds a NaN or infinity.
fn first_non_finite_grad(params: &[crate::graph::Param]) -> Option<String> {
    tch::no_grad(|| {
        params.iter().find(|p| {
            let g = p.tensor.grad();
            g.defined() && g.isfinite().all().int64_value(&[]) == 0
        })
    })
    .map(|p| p.name.clone())
}

/// Weights, biases and activations (of up to 64 val faces) for TensorBoard.
fn histogram_tensors(
    graph: &Graph,
    net: &Net,
    params: &[crate::graph::Param],
    val_x: &Tensor,
) -> Vec<(String, Tensor)> {
    let _guard = tch::no_grad_guard();
    // Copies: the weights may be swapped with their moving average right after.
    let mut out: Vec<(String, Tensor)> = params.iter().map(|p| (p.name.clone(), p.tensor.copy())).collect();
    let blobs = net.forward_all(&val_x.narrow(0, 0, val_x.size()[0].min(64)), false);
    for (node, x) in graph.nodes.iter().zip(&blobs[1..]) {
        out.push((format!("activations/{}", node.name), x.shallow_clone()));
    }
    out
}

fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} ETA {eta}")
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
