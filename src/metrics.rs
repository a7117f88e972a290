//! The field's landmark metrics, beside the pixel RMSE every run reports:
//!
//! - NME of a face: the mean distance between predicted and true points over its
//!   present points, divided by the reference distance of the keypoint set's
//!   normaliser (for 68 iBUG points |p36 - p45|, the outer eye corners) in the truth.
//!   A data set's NME is the mean over its faces (faces whose normaliser points are
//!   missing are left out), in percent.
//! - Failure rate: the share of faces whose NME is above the set's threshold (8% for
//!   300-W-style sets, 10% for WFLW), in percent.
//! - AUC: the area under the cumulative error curve (the share of faces with NME at
//!   most e, for e from 0 to the threshold) divided by the threshold, in percent:
//!   with NMEs e_i of N faces it is mean_i max(0, 1 - e_i / threshold).
//!
//! NME does not change when an image is scaled, so it is the same in the crop's
//! pixels, the image's and normalised units.

use tch::{Kind, Tensor};

/// Per-face NME (a fraction, not percent) of predictions `[N, 2K]` against targets
/// with NaN for missing values; NaN for faces without a usable normaliser or points.
pub fn face_nme(pred: &Tensor, target: &Tensor, normaliser: [usize; 2]) -> Tensor {
    let n = target.size()[0];
    let t = target.view([n, -1, 2]);
    let d =
        (pred.view([n, -1, 2]) - &t).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Float).sqrt();
    let present = d.isnan().logical_not();
    let count = present.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let mean =
        d.nan_to_num(0.0, None::<f64>, None::<f64>).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            / &count;
    let [a, b] = normaliser.map(|i| i as i64);
    let norm = (t.select(1, a) - t.select(1, b))
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .sqrt();
    let ok = norm.gt(0.0).logical_and(&count.gt(0.0));
    (mean / norm).where_self(&ok, &Tensor::full([n], f64::NAN, (Kind::Float, target.device())))
}

/// NME, failure rate and AUC of a data set, all in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nme {
    pub nme: f64,
    pub failure_rate: f64,
    pub auc: f64,
    /// Faces counted (those with a usable normaliser).
    pub faces: usize,
}

impl Nme {
    /// From per-face NMEs (fractions; NaN = not counted) and the failure threshold.
    pub fn of(per_face: &[f64], threshold: f64) -> Option<Nme> {
        let e: Vec<f64> = per_face.iter().copied().filter(|v| v.is_finite()).collect();
        if e.is_empty() {
            return None;
        }
        let n = e.len() as f64;
        Some(Nme {
            nme: 100.0 * e.iter().sum::<f64>() / n,
            failure_rate: 100.0 * e.iter().filter(|&&v| v > threshold).count() as f64 / n,
            auc: 100.0 * e.iter().map(|v| (1.0 - v / threshold).max(0.0)).sum::<f64>() / n,
            faces: e.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nme_divides_the_mean_point_error_by_the_normaliser() {
        // Two faces of 3 points; normaliser points 0 and 1, 10 px apart in both.
        let t =
            Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0, 5.0, 5.0, 0.0, 0.0, 0.0, 10.0, f32::NAN, f32::NAN])
                .view([2, 6]);
        // Face 0: errors 0, 0 and a 3-4-5 triangle (5 px): mean 5/3 px, NME 1/6.
        // Face 1: errors 1 and 2 px on its two present points: mean 1.5 px, NME 0.15.
        let p = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0, 8.0, 9.0, 1.0, 0.0, 0.0, 12.0, 3.0, 3.0])
            .view([2, 6]);
        let e = Vec::<f32>::try_from(face_nme(&p, &t, [0, 1])).unwrap();
        assert!((e[0] - 1.0 / 6.0).abs() < 1e-6 && (e[1] - 0.15).abs() < 1e-6, "{e:?}");
        // A face whose normaliser point is missing is not counted.
        let e = Vec::<f32>::try_from(face_nme(&p, &t, [0, 2])).unwrap();
        assert!(!e[0].is_nan() && e[1].is_nan(), "{e:?}");
    }

    #[test]
    fn failure_rate_and_auc_by_hand() {
        // NMEs 2%, 4%, 10% at an 8% threshold: mean 16/3 %, one failure in three,
        // AUC = mean(1 - 2/8, 1 - 4/8, 0) = (0.75 + 0.5) / 3.
        let m = Nme::of(&[0.02, 0.04, 0.10, f64::NAN], 0.08).unwrap();
        assert!((m.nme - 16.0 / 3.0).abs() < 1e-9);
        assert!((m.failure_rate - 100.0 / 3.0).abs() < 1e-9);
        assert!((m.auc - 125.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.faces, 3);
        assert!(Nme::of(&[f64::NAN], 0.08).is_none());
        // The AUC is the area under the cumulative error curve: integrate it numerically.
        let e = [0.01, 0.03, 0.05, 0.07, 0.09];
        let steps = 80_000;
        let area: f64 = (0..steps)
            .map(|s| (s as f64 + 0.5) * 0.08 / steps as f64)
            .map(|x| e.iter().filter(|&&v| v <= x).count() as f64 / e.len() as f64)
            .sum::<f64>()
            / steps as f64;
        assert!((Nme::of(&e, 0.08).unwrap().auc / 100.0 - area).abs() < 1e-4);
    }
}
