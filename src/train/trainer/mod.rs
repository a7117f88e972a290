//! The train loop, as a list of calls over state the trainer owns (Caffe's
//! `Solver::Step`): `new` sets up (or restores) the net, solver, data and run files;
//! `run` steps until max_iter, early stop or Ctrl-C, then finishes (`ending`: the val
//! tests, snapshots and the finish).

mod ending;

use super::batches::Batches;
use super::passes::{first_non_finite_grad, run_bytes, train_forward};
use super::progress::{self, install_signal_handler, progress_bar};
use super::resume::{check_resume_config, default_run_name, resolved_yaml, seed_of};
use super::state::LoopState;
use super::{build_options, parse_device, Options, Outcome};
use crate::config::solver::OnNan;
use crate::config::{Resolved, SolverConfig};
use crate::data::{self, Spec};
use crate::graph::{Graph, Net, Param};
use crate::loss;
use crate::run::caffe_log::CaffeLog;
use crate::run::tensorboard::EventWriter;
use crate::run::{self, Metrics, MetricsRow, RunDir};
use crate::solver::state;
use crate::solver::{lr, Solver};
use anyhow::{bail, Result};
use indicatif::ProgressBar;
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Tensor};

/// The train and val faces on the training device.
struct Tensors {
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    n_train: usize,
}

pub struct Trainer<'a> {
    cfg: &'a SolverConfig,
    opts: &'a Options,
    spec: Spec,
    graph: Graph,
    net: Net,
    params: Vec<Param>,
    solver: Solver,
    state: LoopState,
    data: Tensors,
    batches: Batches,
    device: Device,
    seed: i64,
    run: RunDir,
    metrics: Metrics,
    log: CaffeLog,
    events: EventWriter,
    progress: ProgressBar,
    start: Instant,
    /// For the display line's iterations per second.
    last_display: (Instant, i64),
    last_train_loss: Option<f64>,
    last_val_rmse: Option<f64>,
    /// Iterations whose batch was dropped (on_nan: skip).
    skipped: i64,
    // Keeps the net's tensors alive.
    _vs: nn::VarStore,
}

/// How one iteration ended.
enum Step {
    Continue,
    /// Stopped before max_iter: the solver's early_stop, or the judge's reason.
    Stop(String),
}

impl<'a> Trainer<'a> {
    pub fn new(r: &'a Resolved, opts: &'a Options) -> Result<Trainer<'a>> {
        let cfg = &r.solver;
        if opts.resume.is_some() && opts.weights.is_some() {
            bail!("--snapshot (resume) and --weights (finetune) exclude each other, as in Caffe: choose one");
        }
        let device = parse_device(&cfg.device)?;
        let spec = data::spec(&cfg.data, &r.net)?;
        let graph = Graph::compile(&r.net, &r.net_source, spec.targets() as i64)?;
        let seed = seed_of(cfg, opts)?;
        let resolved = resolved_yaml(r, &graph, seed)?;
        let changes = match &opts.resume {
            Some(s) => {
                for f in [s.clone(), state::weights_of(s)] {
                    if !f.is_file() {
                        bail!("--snapshot {}: {} does not exist", s.display(), f.display());
                    }
                }
                let changes = check_resume_config(s, &resolved, opts.allow_config_change, &|m| say(opts, m))?;
                state::check_kind(s, cfg.solver_type)?;
                changes
            }
            None => Vec::new(),
        };
        run::check_writable(&opts.runs_dir)?;
        run::check_space(&opts.runs_dir, run_bytes(&graph, cfg), run::free_bytes(&opts.runs_dir))?;
        let split = data::load(&cfg.data, &spec)?;
        let run = RunDir::create(
            &opts.runs_dir,
            opts.name.as_deref(),
            &default_run_name(r, opts.resume.as_deref()),
        )?;
        run::write_text(&run.file("config.yaml"), &resolved)?;

        tch::manual_seed(seed);
        let vs = nn::VarStore::new(device);
        let (net, params) = graph.build(&vs.root(), build_options(&graph, device, cfg.precision, cfg.layout));
        let metrics = Metrics::create(&run.file("metrics.csv"))?;
        let mut log = CaffeLog::create(&run.file("train.log"))?;
        let events = EventWriter::create(&run.path)?;
        log.solving(&graph.name, &crate::config::name_of(&cfg.lr_policy))?;
        if let Some(w) = &opts.weights {
            for n in state::load_weights(w, &params, false)? {
                say(opts, &format!("  weights: {n}"));
            }
            log.note(&format!("Finetuning from {}", w.display()))?;
        }
        // After a finetune load: the weights' moving average starts from the loaded weights.
        let solver = Solver::new(cfg, &params);
        let (train_x, train_y) = split.train.to_tensors(device);
        let (val_x, val_y) = split.val.to_tensors(device);
        let data = Tensors { train_x, train_y, val_x, val_y, n_train: split.train.len() };
        let mut t = Trainer {
            cfg,
            opts,
            spec,
            net,
            params,
            solver,
            state: LoopState::default(),
            batches: Batches::new(data.n_train, seed as u64, cfg.data.shuffle),
            data,
            device,
            seed,
            metrics,
            log,
            events,
            progress: progress_bar(cfg.max_iter as u64, opts.quiet),
            start: Instant::now(),
            last_display: (Instant::now(), 0),
            last_train_loss: None,
            last_val_rmse: None,
            skipped: 0,
            graph,
            run,
            _vs: vs,
        };
        if let Some(s) = &opts.resume {
            t.restore(s, &changes)?;
        }
        say(opts, &t.banner(&split.source, split.val.len()));
        Ok(t)
    }

    /// Continue from a snapshot: weights, solver history, loop state, and the rows and
    /// best weights the interrupted run had measured before it.
    fn restore(&mut self, s: &Path, changes: &[String]) -> Result<()> {
        state::load_weights(&state::weights_of(s), &self.params, true)?;
        let entries = state::load(s, &mut self.solver, &self.params)?;
        self.state = LoopState::from_entries(&entries, &s.display().to_string())?;
        let old = s.parent().unwrap_or(Path::new("."));
        if let Ok(rows) = run::read_metrics(&old.join("metrics.csv")) {
            for row in rows.iter().filter(|row| row.iter < self.solver.iter) {
                self.metrics.write(row)?;
            }
        }
        if old.join("best.safetensors").is_file() {
            std::fs::copy(old.join("best.safetensors"), self.run.file("best.safetensors"))?;
        }
        self.log.note(&format!("Resuming from {}", s.display()))?;
        for c in changes {
            say(self.opts, &format!("  changed since the snapshot (--allow-config-change): {c}"));
            self.log.note(&format!("Changed since the snapshot: {c}"))?;
        }
        if self.solver.iter > self.cfg.max_iter {
            bail!("the snapshot is at iteration {}, past max_iter {}", self.solver.iter, self.cfg.max_iter);
        }
        self.last_display.1 = self.solver.iter;
        Ok(())
    }

    fn banner(&self, source: &str, n_val: usize) -> String {
        let (g, c) = (&self.graph, self.cfg);
        format!(
            // Each line fits 80 columns, but for long paths.
            "fkpnet: training {}, {} params, {} FLOPs/image\n  solver: {:?} ({:?} flavor) on {:?}\n  data: {source}: {} train / {n_val} val faces\n  run dir: {}",
            g.name,
            crate::graph::human(g.num_params()),
            crate::graph::human(g.flops()),
            c.solver_type,
            c.flavor,
            self.device,
            self.data.n_train,
            self.run.path.display()
        )
    }

    pub fn run(mut self) -> Result<Outcome> {
        install_signal_handler();
        self.start = Instant::now();
        self.last_display.0 = Instant::now();
        self.progress.set_position(self.solver.iter as u64);
        let mut interrupted = None;
        let mut stopped = None;
        while self.solver.iter < self.cfg.max_iter {
            if let Step::Stop(why) = self.step()? {
                stopped = Some(why);
                break;
            }
            if progress::interrupted() && self.solver.iter < self.cfg.max_iter {
                interrupted = Some(self.snapshot()?);
                break;
            }
        }
        self.finish(interrupted, stopped)
    }

    /// One iteration: a val test when due, forward/backward over iter_size batches,
    /// the display row, the update, a snapshot when due.
    fn step(&mut self) -> Result<Step> {
        let (cfg, iter) = (self.cfg, self.solver.iter);
        let mut row = MetricsRow { iter, epoch: self.epoch_of(iter), ..Default::default() };
        if cfg.test_interval > 0 && iter % cfg.test_interval == 0 && (iter > 0 || cfg.test_initialization) {
            if let Some(improved) = self.test(iter, &mut row)? {
                let after = self.state.after_test(improved, cfg);
                if after.lr_drop {
                    let p = cfg.patience.unwrap_or(1);
                    self.log
                        .note(&format!("Iteration {iter}: no val improvement for {p} tests, lr x gamma"))?;
                }
                if after.stop {
                    self.write_row(&mut row)?;
                    let why = format!("early stop: no val improvement for {} tests", cfg.early_stop);
                    self.log.note(&format!("Iteration {iter}: {why}"))?;
                    return Ok(Step::Stop(why));
                }
                if let (Some(judge), Some(v)) = (&self.opts.judge, row.val_rmse_px) {
                    if let Some(reason) = judge(iter, v)? {
                        self.write_row(&mut row)?;
                        let why = format!("stopped by the sweep: {reason}");
                        self.log.note(&format!("Iteration {iter}: {why}"))?;
                        return Ok(Step::Stop(why));
                    }
                }
            }
            self.last_val_rmse = row.val_rmse_px;
        }
        // Dropout draws from libtorch's RNG: seed it per iteration so a resumed run
        // draws the same masks as an uninterrupted one.
        tch::manual_seed(self.seed.wrapping_mul(1_000_003).wrapping_add(iter));
        let loss_now = match self.forward_backward(iter)? {
            Some(l) => l,
            None => return Ok(Step::Continue), // on_nan: skip dropped the batch
        };
        let smoothed = self.state.record_loss(loss_now, cfg.average_loss);
        let rate = lr::rate(cfg, iter, self.state.lr_drops);
        if cfg.display > 0 && iter % cfg.display == 0 {
            self.display(iter, &mut row, smoothed, loss_now, rate)?;
        }
        self.solver.step(&self.params, rate);
        if row.train_loss.is_some() || row.val_loss.is_some() {
            self.write_row(&mut row)?;
        }
        if cfg.snapshot > 0 && self.solver.iter % cfg.snapshot == 0 {
            self.snapshot()?;
        }
        self.progress.set_position(self.solver.iter as u64);
        // This iteration's smoothed loss (not the last display's), and the last val test.
        let v = self.last_val_rmse.map(|v| format!(" val {v:.2}px")).unwrap_or_default();
        self.progress.set_message(format!("loss {smoothed:.4}{v}"));
        Ok(Step::Continue)
    }

    /// The iteration's mean loss over its iter_size batches, gradients accumulated; or
    /// None when on_nan: skip dropped a non-finite batch.
    fn forward_backward(&mut self, iter: i64) -> Result<Option<f64>> {
        let (cfg, bs) = (self.cfg, self.cfg.batch_size as usize);
        let w = self.graph.loss.loss_weight;
        let mut loss_sum = 0.0;
        for j in 0..cfg.iter_size {
            let k = (iter * cfg.iter_size + j) as usize;
            let idx = Tensor::from_slice(&self.batches.batch(k, bs)).to_device(self.device);
            let mut x = self.data.train_x.index_select(0, &idx);
            let mut y = self.data.train_y.index_select(0, &idx);
            if !cfg.data.augment.is_off() {
                (x, y) = cfg.data.augment.apply(&x, &y, &self.spec);
            }
            let (pred, reg, tape) = train_forward(&self.net, &self.graph, &x, &y);
            let loss::Sums { loss: sum, sq, count } =
                loss::sums(&self.graph.loss, &pred, &y, self.spec.half());
            let l = loss::normalise(self.graph.loss.kind, &sum, &count, bs as i64) * w;
            // The regulariser joins the gradient; the reported loss stays the coordinate
            // loss, comparable with val and with runs without it.
            let total = reg.map_or_else(|| l.shallow_clone(), |r| &l + r);
            tape.backward(&total);
            let [lv, sq, count, tv] = loss::to_host([&l, &sq, &count, &total]);
            if !tv.is_finite() {
                self.non_finite(iter, tv)?;
                return Ok(None);
            }
            loss_sum += lv;
            self.state.window_sq += sq;
            self.state.window_count += count;
        }
        Ok(Some(loss_sum / cfg.iter_size as f64))
    }

    /// A non-finite loss: stop, naming the first parameter whose gradient went
    /// non-finite; or with on_nan: skip, drop the batch and count the iteration.
    fn non_finite(&mut self, iter: i64, lv: f64) -> Result<()> {
        let layer = first_non_finite_grad(&self.params)
            .map(|p| format!("; the first non-finite gradient is in `{p}`"))
            .unwrap_or_default();
        if self.cfg.on_nan == OnNan::Stop {
            bail!(
                "iteration {iter}: the loss became {lv}{layer}. Training stopped; {} keeps the metrics \
                 and snapshots so far. Try a lower base_lr (now {}), clip_gradients (e.g. 10), or \
                 on_nan: skip to drop such batches.",
                self.run.path.display(),
                self.cfg.base_lr
            );
        }
        tch::no_grad(|| {
            self.params.iter().for_each(|p| {
                let _ = p.tensor.grad().zero_();
            })
        });
        self.solver.iter += 1;
        self.skipped += 1;
        self.log.note(&format!("Iteration {iter}: loss {lv}{layer}; batch skipped (on_nan: skip)"))?;
        if self.skipped > 100 && self.skipped * 2 > self.solver.iter {
            bail!("more than half of {} iterations had a non-finite loss; stopping", self.solver.iter);
        }
        Ok(())
    }

    /// Caffe's last line, `Iteration max_iter, loss = L`: the smoothed train loss and
    /// the RMSE of the iterations since the last display, so the train curve ends
    /// where the val curve does.
    fn final_train_loss(&mut self, row: &mut MetricsRow) -> Result<()> {
        if self.cfg.display == 0 || self.state.recent_losses.is_empty() || self.state.window_count == 0.0 {
            return Ok(());
        }
        let n = self.state.recent_losses.len() as f64;
        let smoothed = self.state.recent_losses.iter().sum::<f64>() / n;
        let rmse = loss::rmse_px(self.state.window_sq, self.state.window_count, self.spec.half());
        (row.train_loss, row.train_rmse_px) = (Some(smoothed), Some(rmse));
        self.log.line_final(row.iter, smoothed)?;
        self.events.scalars(row.iter, &[("train/loss", smoothed), ("train/rmse_px", rmse)])
    }

    /// The display row: the smoothed train loss, the window's train RMSE, the rate.
    fn display(
        &mut self,
        iter: i64,
        row: &mut MetricsRow,
        smoothed: f64,
        loss_now: f64,
        rate: f64,
    ) -> Result<()> {
        let w = self.graph.loss.loss_weight;
        let train_rmse = loss::rmse_px(self.state.window_sq, self.state.window_count, self.spec.half());
        (row.train_loss, row.train_rmse_px, row.lr) = (Some(smoothed), Some(train_rmse), Some(rate));
        self.last_train_loss = Some(smoothed);
        (self.state.window_sq, self.state.window_count) = (0.0, 0.0);
        let secs = self.last_display.0.elapsed().as_secs_f64();
        let its = (iter - self.last_display.1) as f64;
        let ips = if secs > 0.0 { its / secs } else { 0.0 };
        let loss_name = crate::config::name_of(&self.graph.loss.kind);
        self.log.display(
            iter,
            ips,
            secs,
            self.cfg.display,
            smoothed,
            &[(&loss_name, loss_now / w, Some(w))],
            rate,
        )?;
        self.events
            .scalars(iter, &[("train/loss", smoothed), ("train/rmse_px", train_rmse), ("lr", rate)])?;
        self.last_display = (Instant::now(), iter);
        Ok(())
    }

    fn write_row(&mut self, row: &mut MetricsRow) -> Result<()> {
        row.seconds = self.start.elapsed().as_secs_f64();
        self.metrics.write(row)?;
        progress::report(&self.progress, row, self.cfg.max_iter, self.opts.quiet);
        Ok(())
    }
}

pub(super) fn say(opts: &Options, s: &str) {
    if !opts.quiet {
        eprintln!("{s}");
    }
}
