//! Inference: a net's predictions on faces, with test-time augmentation, and its
//! loss and pixel RMSE on a labelled split. Shared by training's val tests, the
//! reports (test, predict, submit) and the benchmarks; nothing here trains.

use crate::config::solver::TestConfig;
use crate::data::Spec;
use crate::graph::Net;
use crate::loss;
use crate::metrics::{face_nme, Nme};
use tch::Tensor;

/// The net's prediction under test-time augmentation (`test:`): averaged over the
/// views of `TestConfig::views` (each prediction moved back into the face), each also
/// with the mirrored prediction of the mirrored view when `flip`.
pub fn predict(net: &Net, x: &Tensor, test: &TestConfig, spec: &Spec) -> Tensor {
    use crate::data::augment::{flip_targets, Affine, View};
    let views = test.views();
    let half = spec.half();
    let mut sum: Option<Tensor> = None;
    for &v in &views {
        let affine = (v != View::IDENTITY).then(|| Affine::uniform(x.size()[0], x.device(), v, half));
        let xv = affine.as_ref().map_or_else(|| x.shallow_clone(), |a| a.faces(x));
        let mut pred = net.forward_t(&xv, false);
        if test.flip {
            pred = (pred + flip_targets(&net.forward_t(&xv.flip([3]), false), spec)) / 2.0;
        }
        let pred = affine.as_ref().map_or(pred.shallow_clone(), |a| a.untargets(&pred, half));
        sum = Some(match sum {
            Some(s) => s + pred,
            None => pred,
        });
    }
    sum.expect("at least the face as it is") / views.len() as f64
}

/// What `evaluate` measured on a split.
#[derive(Debug, Clone, Copy)]
pub struct Eval {
    /// The loss in the net's convention (unweighted).
    pub loss: f64,
    pub rmse_px: f64,
    /// NME, failure rate and AUC, where the keypoint set has a normaliser.
    pub nme: Option<Nme>,
}

/// Mean loss, pixel RMSE and NME of `net` on the first `limit` faces of a split (all
/// by default), without autograd.
pub fn evaluate(
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    cfg: &crate::config::LossConfig,
    limit: Option<i64>,
    test: &TestConfig,
    spec: &Spec,
) -> Eval {
    let _guard = tch::no_grad_guard();
    let n = limit.map_or(x.size()[0], |l| l.min(x.size()[0]));
    let bs = 256;
    let (mut total, mut sq, mut count) = (0.0, 0.0, 0.0);
    let mut per_face = Vec::new();
    for start in (0..n).step_by(bs as usize) {
        let len = bs.min(n - start);
        let pred = predict(net, &x.narrow(0, start, len), test, spec);
        let target = y.narrow(0, start, len);
        let [l, s, c] = loss::sums(cfg, &pred, &target, spec.half()).to_host();
        total += l;
        sq += s;
        count += c;
        if let Some(norm) = spec.keypoints.normaliser {
            let e = face_nme(&pred, &target, norm).to_kind(tch::Kind::Double).to_device(tch::Device::Cpu);
            per_face.extend(Vec::<f64>::try_from(&e).expect("a double vector"));
        }
    }
    let loss = loss::normalise(cfg.kind, &Tensor::from(total), &Tensor::from(count), n).double_value(&[]);
    Eval {
        loss,
        rmse_px: loss::rmse_px(sq, count, spec.half()),
        nme: Nme::of(&per_face, spec.keypoints.failure),
    }
}
