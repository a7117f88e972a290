//! fkpnet's own solvers (not tch's optimizers: those cannot save their state and use
//! PyTorch's momentum/epsilon conventions). Caffe's update order per iteration:
//! clip gradients -> divide by iter_size -> regularize -> update rule.

pub mod ema;
mod fused_adam;
pub mod lr;
mod rules;
pub mod state;

use rules::Hyper;

use crate::config::solver::{Flavor, Regularization};
use crate::config::{SolverConfig, SolverType};
use crate::graph::Param;
use tch::{Kind, Tensor};

pub struct Solver {
    pub kind: SolverType,
    pub flavor: Flavor,
    momentum: f64,
    momentum2: f64,
    delta: f64,
    rms_decay: f64,
    weight_decay: f64,
    regularization: Regularization,
    clip_gradients: f64,
    iter_size: i64,
    /// Per param: the rule's history buffers (SGD: V; Adam: m, v; AdaDelta: two).
    pub history: Vec<Vec<Tensor>>,
    /// Updates applied so far.
    pub iter: i64,
    /// The weights' moving average (`ema_decay` > 0), updated after every update.
    pub ema: Option<ema::Ema>,
}

impl Solver {
    pub fn new(cfg: &SolverConfig, params: &[Param]) -> Solver {
        let buffers = cfg.solver_type.history_buffers();
        // Buffers (running statistics) get no history: the solver never touches them.
        let history = params
            .iter()
            .map(|p| (0..if p.learn { buffers } else { 0 }).map(|_| p.tensor.zeros_like().detach()).collect())
            .collect();
        Solver {
            kind: cfg.solver_type,
            flavor: cfg.flavor,
            momentum: cfg.momentum,
            momentum2: cfg.momentum2,
            delta: cfg.delta,
            rms_decay: cfg.rms_decay,
            weight_decay: cfg.weight_decay,
            regularization: cfg.regularization_type,
            clip_gradients: cfg.clip_gradients,
            iter_size: cfg.iter_size,
            history,
            iter: 0,
            ema: (cfg.ema_decay > 0.0).then(|| ema::Ema::new(cfg.ema_decay, params)),
        }
    }

    /// Global L2 norm of all gradients.
    pub fn grad_norm(params: &[Param]) -> f64 {
        tch::no_grad(|| {
            params
                .iter()
                .filter(|p| p.learn)
                .map(|p| p.tensor.grad().square().sum(Kind::Float).double_value(&[]))
                .sum::<f64>()
                .sqrt()
        })
    }

    /// Apply one update at learning rate `rate` from the accumulated gradients, then
    /// zero them.
    pub fn step(&mut self, params: &[Param], rate: f64) {
        let _guard = tch::no_grad_guard();
        let mut scale = 1.0 / self.iter_size as f64;
        if self.clip_gradients >= 0.0 {
            let norm = Self::grad_norm(params);
            if norm > self.clip_gradients {
                scale *= self.clip_gradients / norm;
            }
        }
        let t = (self.iter + 1) as f64;
        for (p, hist) in params.iter().zip(self.history.iter_mut()) {
            if !p.learn {
                continue;
            }
            let mut w = p.tensor.shallow_clone();
            let mut g = w.grad();
            if scale != 1.0 {
                let _ = g.g_mul_scalar_(scale);
            }
            let decay = self.weight_decay * p.mult.decay_mult;
            let lr = rate * p.mult.lr_mult;
            if self.kind == SolverType::AdamW {
                // Decoupled: shrink the weights before the Adam step, as torch.optim.AdamW.
                if decay != 0.0 {
                    let _ = w.g_mul_scalar_(1.0 - lr * decay);
                }
            } else if decay != 0.0 {
                let reg = match self.regularization {
                    Regularization::L2 => &w * decay,
                    Regularization::L1 => w.sign() * decay,
                };
                let _ = g.g_add_(&reg);
            }
            let h = Hyper {
                lr,
                m: self.momentum,
                m2: self.momentum2,
                eps: self.delta,
                rms_decay: self.rms_decay,
                t,
                caffe: self.flavor == Flavor::Caffe,
            };
            if !rules::apply(self.kind, &mut w, &mut g, hist, &h) {
                let _ = g.zero_();
            }
        }
        self.iter += 1;
        if let Some(e) = &mut self.ema {
            e.update(params, self.iter);
        }
    }

    /// Exchange the weights and their moving average (no-op without `ema_decay`):
    /// tests and saved weights run between two swaps.
    pub fn swap_ema(&mut self, params: &[Param]) {
        if let Some(e) = &mut self.ema {
            e.swap(params);
        }
    }
}
