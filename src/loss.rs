//! Losses over present targets only (NaN = not annotated), plus the pixel RMSE that
//! every run reports whatever its loss.

use crate::config::LossKind;
use tch::{Kind, Tensor};

/// Half the side of the image: targets are (xy - 48) / 48, so 48 maps back to pixels.
pub const PX: f64 = 48.0;

/// Squared error summed over present values, and how many values were present.
pub fn squared_error(pred: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let present = target.isnan().logical_not();
    let diff = (pred - target.nan_to_num(0.0, None::<f64>, None::<f64>)) * present.to_kind(pred.kind());
    (diff.square().sum(Kind::Float), present.sum(Kind::Float))
}

/// The loss in the configured convention, from the summed squared error of a batch of
/// `n` faces with `count` present values.
/// euclidean (Caffe): sum / (2N); mse: sum / count.
pub fn from_sums(kind: LossKind, sq: &Tensor, count: &Tensor, n: i64) -> Tensor {
    match kind {
        LossKind::Euclidean => sq / (2.0 * n as f64),
        LossKind::Mse => sq / count.clamp_min(1.0),
    }
}

/// RMSE in pixels from summed squared error and count of normalised targets.
pub fn rmse_px(sq: f64, count: f64) -> f64 {
    PX * (sq / count.max(1.0)).sqrt()
}
