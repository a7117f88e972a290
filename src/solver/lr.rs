//! Caffe's learning-rate policies, computed every iteration (iter = updates applied).

use crate::config::solver::LrPolicy;
use crate::config::SolverConfig;

/// The rate at `iter`; `drops` is how often lr_policy plateau has reduced it.
pub fn rate(cfg: &SolverConfig, iter: i64, drops: i64) -> f64 {
    let r = policy_rate(cfg, iter, drops);
    if iter < cfg.warmup_iter {
        r * (iter + 1) as f64 / cfg.warmup_iter as f64
    } else {
        r
    }
}

fn policy_rate(cfg: &SolverConfig, iter: i64, drops: i64) -> f64 {
    let base = cfg.base_lr;
    let gamma = cfg.gamma.unwrap_or(1.0);
    let power = cfg.power.unwrap_or(1.0);
    let it = iter as f64;
    match cfg.lr_policy {
        LrPolicy::Fixed => base,
        LrPolicy::Step => base * gamma.powi((iter / cfg.stepsize.unwrap_or(1).max(1)) as i32),
        LrPolicy::Exp => base * gamma.powf(it),
        LrPolicy::Inv => base * (1.0 + gamma * it).powf(-power),
        LrPolicy::Multistep => {
            let k = cfg.stepvalue.iter().filter(|s| **s <= iter).count();
            base * gamma.powi(k as i32)
        }
        LrPolicy::Poly => base * (1.0 - it / cfg.max_iter.max(1) as f64).max(0.0).powf(power),
        LrPolicy::Sigmoid => base / (1.0 + (-gamma * (it - cfg.stepsize.unwrap_or(0) as f64)).exp()),
        LrPolicy::Cosine => {
            base * 0.5 * (1.0 + (std::f64::consts::PI * (it / cfg.max_iter.max(1) as f64).min(1.0)).cos())
        }
        LrPolicy::Plateau => base * gamma.powi(drops as i32),
    }
}
