//! fkpnet's own solvers (not tch's optimizers: those cannot save their state and use
//! PyTorch's momentum/epsilon conventions). Caffe's update order per iteration:
//! clip gradients -> divide by iter_size -> regularize -> update rule.

pub mod ema;
pub mod lr;
pub mod state;

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
            let (m, m2, eps) = (self.momentum, self.momentum2, self.delta);
            let caffe = self.flavor == Flavor::Caffe;
            // The gradient is zeroed after the update, so the rules below use it as
            // scratch space: in-place ops, no temporaries (this loop runs over every
            // parameter every iteration).
            match self.kind {
                SolverType::SGD => {
                    let h = &mut hist[0];
                    if caffe {
                        // V = m V + lr g; w -= V (lr lives inside the history).
                        let _ = g.g_mul_scalar_(lr);
                        let _ = h.g_mul_scalar_(m);
                        let _ = h.g_add_(&g);
                        let _ = w.g_sub_(h);
                    } else {
                        // PyTorch: B = m B + g; w -= lr B.
                        let _ = h.g_mul_scalar_(m);
                        let _ = h.g_add_(&g);
                        let _ = g.copy_(h);
                        let _ = g.g_mul_scalar_(lr);
                        let _ = w.g_sub_(&g);
                    }
                }
                SolverType::Nesterov => {
                    let h = &mut hist[0];
                    if caffe {
                        let old = h.copy();
                        let _ = h.g_mul_scalar_(m);
                        let _ = h.g_add_(&(&g * lr));
                        let _ = w.g_sub_(&(&*h * (1.0 + m) - old * m));
                    } else {
                        let _ = h.g_mul_scalar_(m);
                        let _ = h.g_add_(&g);
                        let _ = w.g_sub_(&((&g + &*h * m) * lr));
                    }
                }
                SolverType::AdaGrad => {
                    let h = &mut hist[0];
                    let _ = h.addcmul_(&g, &g);
                    let _ = w.g_sub_(&(&g / (h.sqrt() + eps) * lr));
                }
                SolverType::RMSProp => {
                    let h = &mut hist[0];
                    let d = self.rms_decay;
                    let _ = h.g_mul_scalar_(d);
                    let _ = h.g_add_(&(g.square() * (1.0 - d)));
                    let _ = w.g_sub_(&(&g / (h.sqrt() + eps) * lr));
                }
                SolverType::AdaDelta => {
                    // Zeiler 2012 with momentum as rho, delta as epsilon; lr scales the step.
                    let _ = hist[0].g_mul_scalar_(m);
                    let _ = hist[0].g_add_(&(g.square() * (1.0 - m)));
                    let update = &g * ((&hist[1] + eps) / (&hist[0] + eps)).sqrt();
                    let _ = hist[1].g_mul_scalar_(m);
                    let _ = hist[1].g_add_(&(update.square() * (1.0 - m)));
                    let _ = w.g_sub_(&(update * lr));
                }
                SolverType::Adam | SolverType::AdamW => {
                    let (c1, c2) = (1.0 - m.powf(t), 1.0 - m2.powf(t));
                    let _ = hist[0].lerp_(&g, 1.0 - m); // m = b1 m + (1 - b1) g
                    let _ = g.square_();
                    let _ = hist[1].lerp_(&g, 1.0 - m2); // v = b2 v + (1 - b2) g^2
                                                         // g <- the denominator; w += m / (-denominator / step size).
                    let _ = hist[1].sqrt_out(&g);
                    let step = if caffe {
                        // Caffe: epsilon on the raw sqrt(v), correction folded into the rate.
                        lr * c2.sqrt() / c1
                    } else {
                        // PyTorch: epsilon on the bias-corrected sqrt(v).
                        let _ = g.g_div_scalar_(c2.sqrt());
                        lr / c1
                    };
                    if step != 0.0 {
                        let _ = g.g_add_scalar_(eps);
                        let _ = g.g_mul_scalar_(-1.0 / step);
                        let _ = w.addcdiv_(&hist[0], &g);
                    }
                }
            }
            let _ = g.zero_();
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
