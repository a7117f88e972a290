//! Exponential moving average of the weights (Polyak averaging; Keras' `use_ema`,
//! PyTorch's `AveragedModel` with `get_ema_multi_avg_fn`, TensorFlow's
//! `ExponentialMovingAverage`): after every update, `ema = d * ema + (1 - d) * w`.
//! Val tests, best.safetensors and the final weights use the average, which smooths
//! out the last updates' noise much as averaging several runs' predictions does,
//! at no extra training cost.
//!
//! The decay ramps up as TensorFlow's does with `num_updates`: d = min(decay,
//! (1 + n) / (10 + n)) after n updates, so the average is not dominated by the random
//! initial weights in short runs. Only learned weights are averaged; BatchNorm's
//! running statistics are already moving averages and are used as they are.

use crate::graph::Param;
use tch::Tensor;

pub struct Ema {
    decay: f64,
    /// Per param: its average (None for buffers, which are not averaged).
    pub shadow: Vec<Option<Tensor>>,
}

impl Ema {
    /// Starts from the current weights (after any --weights finetune load).
    pub fn new(decay: f64, params: &[Param]) -> Ema {
        let shadow = params.iter().map(|p| p.learn.then(|| p.tensor.detach().copy())).collect();
        Ema { decay, shadow }
    }

    /// The decay in force for the update after `updates` updates.
    pub fn decay_at(&self, updates: i64) -> f64 {
        self.decay.min((1.0 + updates as f64) / (10.0 + updates as f64))
    }

    /// Fold the weights after update number `updates` (1-based) into the average.
    pub fn update(&mut self, params: &[Param], updates: i64) {
        let w = 1.0 - self.decay_at(updates - 1);
        tch::no_grad(|| {
            for (p, s) in params.iter().zip(&mut self.shadow) {
                if let Some(s) = s {
                    let _ = s.lerp_(&p.tensor, w);
                }
            }
        });
    }

    /// Exchange the net's weights and their averages (twice = unchanged): val tests and
    /// saved weights run between two swaps.
    pub fn swap(&mut self, params: &[Param]) {
        tch::no_grad(|| {
            for (p, s) in params.iter().zip(&mut self.shadow) {
                if let Some(s) = s {
                    let w = p.tensor.detach().copy();
                    p.tensor.shallow_clone().copy_(s);
                    s.copy_(&w);
                }
            }
        });
    }
}
