//! How the trainer reports and ends: a val test (metrics, log, TensorBoard, best
//! weights), weights and snapshots, and the finish (the final test, the final
//! weights, the closing line).

use super::{say, Trainer};
use crate::infer;
use crate::run::{self, MetricsRow};
use crate::solver::state;
use crate::train::passes::histogram_tensors;
use crate::train::progress;
use crate::train::state::BestVal;
use crate::train::Outcome;
use anyhow::Result;
use std::path::PathBuf;

impl Trainer<'_> {
    /// A val test into `row`, the log and TensorBoard, and best.safetensors when it
    /// improved; None without a val split. Tests (and best.safetensors) see the
    /// weights' moving average when there is one.
    pub(super) fn test(&mut self, iter: i64, row: &mut MetricsRow) -> Result<Option<bool>> {
        if self.data.val_x.size()[0] == 0 {
            return Ok(None);
        }
        let (cfg, w) = (self.cfg, self.graph.loss.loss_weight);
        let limit = (cfg.test_iter > 0).then(|| cfg.test_iter * cfg.batch_size);
        self.solver.swap_ema(&self.params);
        let eval = infer::evaluate(
            &self.net,
            &self.data.val_x,
            &self.data.val_y,
            &self.graph.loss,
            limit,
            &cfg.test,
            &self.spec,
        );
        let histograms =
            cfg.histograms.then(|| histogram_tensors(&self.graph, &self.net, &self.params, &self.data.val_x));
        let improved = self.state.best.is_none_or(|b| eval.loss * w < b.loss);
        let saved = match improved {
            true => self.save_weights("best.safetensors"),
            false => Ok(()),
        };
        self.solver.swap_ema(&self.params);
        saved?;
        let (vl, vr) = (eval.loss, eval.rmse_px);
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
            (row.val_nme, row.val_fr, row.val_auc) = (Some(m.nme), Some(m.failure_rate), Some(m.auc));
        }
        self.log.test(iter, &outputs)?;
        self.events.scalars(iter, &scalars)?;
        if let Some(h) = histograms {
            self.events.histograms(iter, &h)?;
        }
        (row.val_loss, row.val_rmse_px) = (Some(vl * w), Some(vr));
        if improved {
            self.state.best = Some(BestVal { loss: vl * w, rmse_px: vr, iter });
        }
        Ok(Some(improved))
    }

    pub(super) fn save_weights(&self, name: &str) -> Result<()> {
        run::atomic_write(&self.run.file(name), |tmp| crate::graph::save_weights(&self.params, tmp))
    }

    /// `<prefix>_iter_<N>.safetensors` and `.solverstate`; the solverstate's path.
    pub(super) fn snapshot(&mut self) -> Result<PathBuf> {
        let stem = format!("{}_iter_{}", self.cfg.snapshot_prefix, self.solver.iter);
        let (weights, st) = (format!("{stem}.safetensors"), self.run.file(&format!("{stem}.solverstate")));
        self.save_weights(&weights)?;
        state::save(&st, &self.solver, &self.params, self.state.to_entries())?;
        self.log.snapshot(&self.run.file(&weights), &st)?;
        Ok(st)
    }

    /// The final test (after a complete run, as Caffe does), the final weights (the
    /// moving average where there is one, as Keras' use_ema; snapshots keep the raw
    /// weights and the average in the solverstate) and the closing line.
    pub(super) fn finish(mut self, interrupted: Option<PathBuf>, stopped: Option<String>) -> Result<Outcome> {
        let seconds = self.start.elapsed().as_secs_f64();
        self.progress.finish_and_clear();
        let (cfg, iter) = (self.cfg, self.solver.iter);
        if let Some(st) = &interrupted {
            self.log.note(&format!("Interrupted at iteration {iter}"))?;
            say(
                self.opts,
                &format!(
                    "interrupted at iteration {iter} of {}; snapshot written: {}",
                    cfg.max_iter,
                    st.display()
                ),
            );
        } else if let Some(why) = &stopped {
            // "early stop: no val improvement ..." -> "early stop at iteration N: no val ..."
            let (what, reason) = why.split_once(": ").unwrap_or((why.as_str(), ""));
            say(self.opts, &format!("{what} at iteration {iter}: {reason}"));
            self.log.done()?;
        } else {
            let mut row =
                MetricsRow { iter: cfg.max_iter, epoch: self.epoch_of(cfg.max_iter), ..Default::default() };
            self.final_train_loss(&mut row)?;
            self.test(cfg.max_iter, &mut row)?;
            if row.val_loss.is_some() || row.train_loss.is_some() {
                row.seconds = seconds;
                self.metrics.write(&row)?;
                progress::report(&self.progress, &row, cfg.max_iter, self.opts.quiet);
            }
            self.log.done()?;
        }
        self.solver.swap_ema(&self.params);
        self.save_weights("weights.safetensors")?;
        let best_txt = self
            .state
            .best
            .map(|b| {
                format!("best: val RMSE {:.3} px (loss {:.5}) at iteration {}", b.rmse_px, b.loss, b.iter)
            })
            .unwrap_or_else(|| "no val split (data.split = 1)".into());
        say(
            self.opts,
            &format!(
                "{}: {iter} iterations ({:.1} epochs) in {seconds:.1}s\n  {best_txt}\n  results: {}",
                if interrupted.is_some() { "stopped" } else { "done" },
                self.epoch_of(iter),
                self.run.path.display()
            ),
        );
        Ok(Outcome {
            run_dir: self.run.path.clone(),
            best: self.state.best,
            final_train_loss: self.last_train_loss,
            seconds,
            iterations: iter,
            interrupted,
            stopped,
        })
    }

    pub(super) fn epoch_of(&self, iter: i64) -> f64 {
        iter as f64 * (self.cfg.batch_size * self.cfg.iter_size) as f64 / self.data.n_train as f64
    }
}
