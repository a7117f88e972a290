//! Losses over present targets only (NaN = not annotated), plus the pixel RMSE that
//! every run reports whatever its loss.
//!
//! | type | per present value | divided by |
//! |---|---|---|
//! | euclidean (Caffe's EuclideanLoss) | d^2 | 2N (N = faces in the batch) |
//! | mse | d^2 | number of present values |
//! | l1 | abs(d) | number of present values |
//! | smooth_l1 (PyTorch's, `beta`) | 0.5 d^2 / beta if abs(d) < beta, else abs(d) - 0.5 beta | number of present values |
//! | wing (Feng et al. 2018; `w`, `epsilon` in px) | w ln(1 + abs(d)/epsilon) if abs(d) < w, else abs(d) - C | number of present values |
//!
//! Wing's C = w - w ln(1 + w/epsilon) joins the two parts; d, w and epsilon enter in
//! target units (px / half, half = the input's half-side: 48 for Kaggle's faces), so
//! the loss is the paper's pixel loss / half, on l1's scale.

use crate::config::{LossConfig, LossKind};
use tch::{Kind, Tensor};

/// What a batch contributes: the summed per-value loss, the summed squared error
/// (for RMSE) and how many values were present.
pub struct Sums {
    pub loss: Tensor,
    pub sq: Tensor,
    pub count: Tensor,
}

/// `half`: the input's half-side, which maps target units to pixels (wing's w and
/// epsilon are in pixels).
pub fn sums(cfg: &LossConfig, pred: &Tensor, target: &Tensor, half: f64) -> Sums {
    let present = target.isnan().logical_not().to_kind(pred.kind());
    let diff = (pred - target.nan_to_num(0.0, None::<f64>, None::<f64>)) * &present;
    let sq = diff.square().sum(Kind::Float);
    let loss = match cfg.kind {
        LossKind::Euclidean | LossKind::Mse => sq.shallow_clone(),
        LossKind::L1 => diff.abs().sum(Kind::Float),
        LossKind::SmoothL1 => {
            let beta = cfg.beta;
            let a = diff.abs();
            // Masked values have d = 0 and contribute 0 on either branch.
            (a.square() * (0.5 / beta)).where_self(&a.lt(beta), &(&a - 0.5 * beta)).sum(Kind::Float)
        }
        LossKind::Wing => {
            let (w, eps) = (cfg.w / half, cfg.epsilon / half);
            let c = w - w * (1.0 + w / eps).ln();
            let a = diff.abs();
            // Masked values have d = 0: ln(1) = 0 on the logarithmic branch.
            ((&a / eps).log1p() * w).where_self(&a.lt(w), &(&a - c)).sum(Kind::Float)
        }
    };
    Sums { loss, sq, count: present.sum(Kind::Float) }
}

impl Sums {
    /// (loss, sq, count) on the host, in one transfer.
    pub fn to_host(&self) -> [f64; 3] {
        to_host([&self.loss, &self.sq, &self.count])
    }
}

/// Scalar tensors read to the host in one transfer: on CUDA each read waits for the
/// device, so a training step reads its loss and metrics together, not one by one.
pub fn to_host<const N: usize>(xs: [&Tensor; N]) -> [f64; N] {
    let host = Tensor::stack(&xs.map(Tensor::detach), 0).to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let v = Vec::<f64>::try_from(&host).expect("a double vector");
    std::array::from_fn(|i| v[i])
}

/// The loss (unweighted) from summed values over `n` faces with `count` present values.
pub fn normalise(kind: LossKind, loss_sum: &Tensor, count: &Tensor, n: i64) -> Tensor {
    match kind {
        LossKind::Euclidean => loss_sum / (2.0 * n as f64),
        _ => loss_sum / count.clamp_min(1.0),
    }
}

/// DSNT's heatmap regulariser: the Jensen-Shannon divergence between each keypoint's
/// map distribution (`log_p`, NxCxHxW log-probabilities) and a normal distribution of
/// `sigma` cells around its target (cell centres as soft_argmax places them), summed over
/// present keypoints; and how many were present. Computed from log-probabilities
/// throughout, so a target far off the map gives no 0/0.
pub fn js_divergence(log_p: &Tensor, target: &Tensor, sigma: f64) -> (Tensor, Tensor) {
    use crate::layers::soft_argmax::centres;
    let (n, c, h, w) = log_p.size4().expect("NxCxHxW maps");
    let t = target.view([n, c, 2]);
    let present = t.select(2, 0).isnan().logical_not().to_kind(Kind::Float);
    let t = t.nan_to_num(0.0, None::<f64>, None::<f64>);
    // Separable Gaussian in log space, normalised over the map's cells.
    let axis = |cells: i64, coord: Tensor| {
        let s = sigma * 2.0 / cells as f64;
        let d = centres(cells, log_p.device()).view([1, 1, cells]) - coord.unsqueeze(-1);
        let l = d.square() * (-0.5 / (s * s));
        &l - l.logsumexp([-1], true)
    };
    let (lx, ly) = (axis(w, t.select(2, 0)), axis(h, t.select(2, 1)));
    let log_q = ly.unsqueeze(-1) + lx.unsqueeze(-2);
    let log_m = log_p.logaddexp(&log_q) - std::f64::consts::LN_2;
    let kl = |l: &Tensor| (l.exp() * (l - &log_m)).sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
    let js = (kl(log_p) + kl(&log_q)) * 0.5;
    ((js * &present).sum(Kind::Float), present.sum(Kind::Float))
}

/// Squared error summed over present values, and how many values were present.
pub fn squared_error(pred: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let s = sums(&LossConfig::of(LossKind::Mse), pred, target, 1.0);
    (s.sq, s.count)
}

/// RMSE in pixels from summed squared error and count of normalised targets; `half`
/// is the input's half-side (targets are (xy - half) / half).
pub fn rmse_px(sq: f64, count: f64, half: f64) -> f64 {
    half * (sq / count.max(1.0)).sqrt()
}
