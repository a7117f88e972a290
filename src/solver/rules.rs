//! The update rules, one function each, Caffe's formulas by default and PyTorch's
//! where `flavor: pytorch` says (SGD momentum, Nesterov, Adam's epsilon). The gradient
//! is zeroed after the update, so the rules use it as scratch space: in-place ops, no
//! temporaries (they run over every parameter every iteration); Adam runs as two passes
//! of fkpnet's own over its arrays where it can (`fused_adam`).

use crate::config::SolverType;
use tch::Tensor;

/// What a rule needs besides the weight, its gradient and its history.
pub struct Hyper {
    /// The rate for this parameter (lr_mult applied).
    pub lr: f64,
    /// Momentum (SGD, Nesterov), beta1 (Adam), rho (AdaDelta).
    pub m: f64,
    /// Adam's beta2.
    pub m2: f64,
    /// Epsilon (`delta`).
    pub eps: f64,
    pub rms_decay: f64,
    /// This update's number, 1-based (Adam's bias correction).
    pub t: f64,
    /// Caffe's formulas (else PyTorch's).
    pub caffe: bool,
}

/// Updates `w`; returns whether the rule left the gradient zeroed already (the fused
/// Adam pass does), else the caller zeroes it.
pub fn apply(kind: SolverType, w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) -> bool {
    match kind {
        SolverType::SGD => sgd(w, g, &mut hist[0], h),
        SolverType::Nesterov => nesterov(w, g, &mut hist[0], h),
        SolverType::AdaGrad => adagrad(w, g, &mut hist[0], h),
        SolverType::RMSProp => rmsprop(w, g, &mut hist[0], h),
        SolverType::AdaDelta => adadelta(w, g, hist, h),
        SolverType::Adam | SolverType::AdamW => return adam(w, g, hist, h),
    }
    false
}

fn sgd(w: &mut Tensor, g: &mut Tensor, v: &mut Tensor, h: &Hyper) {
    if h.caffe {
        // V = m V + lr g; w -= V (lr lives inside the history).
        let _ = g.g_mul_scalar_(h.lr);
        let _ = v.g_mul_scalar_(h.m);
        let _ = v.g_add_(g);
        let _ = w.g_sub_(v);
    } else {
        // PyTorch: B = m B + g; w -= lr B.
        let _ = v.g_mul_scalar_(h.m);
        let _ = v.g_add_(g);
        let _ = g.copy_(v);
        let _ = g.g_mul_scalar_(h.lr);
        let _ = w.g_sub_(g);
    }
}

fn nesterov(w: &mut Tensor, g: &mut Tensor, v: &mut Tensor, h: &Hyper) {
    let m = h.m;
    if h.caffe {
        let old = v.copy();
        let _ = v.g_mul_scalar_(m);
        let _ = v.g_add_(&(&*g * h.lr));
        let _ = w.g_sub_(&(&*v * (1.0 + m) - old * m));
    } else {
        let _ = v.g_mul_scalar_(m);
        let _ = v.g_add_(g);
        let _ = w.g_sub_(&((&*g + &*v * m) * h.lr));
    }
}

fn adagrad(w: &mut Tensor, g: &mut Tensor, acc: &mut Tensor, h: &Hyper) {
    let _ = acc.addcmul_(g, g);
    let _ = w.g_sub_(&(&*g / (acc.sqrt() + h.eps) * h.lr));
}

fn rmsprop(w: &mut Tensor, g: &mut Tensor, ms: &mut Tensor, h: &Hyper) {
    let d = h.rms_decay;
    let _ = ms.g_mul_scalar_(d);
    let _ = ms.g_add_(&(g.square() * (1.0 - d)));
    let _ = w.g_sub_(&(&*g / (ms.sqrt() + h.eps) * h.lr));
}

/// Zeiler 2012 with momentum as rho, delta as epsilon; lr scales the step.
fn adadelta(w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) {
    let (m, eps) = (h.m, h.eps);
    let _ = hist[0].g_mul_scalar_(m);
    let _ = hist[0].g_add_(&(g.square() * (1.0 - m)));
    let update = &*g * ((&hist[1] + eps) / (&hist[0] + eps)).sqrt();
    let _ = hist[1].g_mul_scalar_(m);
    let _ = hist[1].g_add_(&(update.square() * (1.0 - m)));
    let _ = w.g_sub_(&(update * h.lr));
}

/// In two passes of fkpnet's own where `fused_adam` applies (the same numbers, bit for
/// bit); else as libtorch's in-place operators.
fn adam(w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) -> bool {
    if super::fused_adam::update(w, g, &hist[0], &hist[1], super::fused_adam::Coefficients::of(h)) {
        return true;
    }
    adam_by_operators(w, g, hist, h);
    false
}

/// Adam's bias corrections for update `h.t`: sqrt(1 - beta2^t), and the step size the
/// flavour gets from them (Caffe folds both into the rate, PyTorch divides sqrt(v)).
pub(super) fn adam_step(h: &Hyper) -> (f64, f64) {
    let (c1, c2) = (1.0 - h.m.powf(h.t), 1.0 - h.m2.powf(h.t));
    let step = if h.caffe { h.lr * c2.sqrt() / c1 } else { h.lr / c1 };
    (c2.sqrt(), step)
}

/// Adam as libtorch's in-place operators, with the gradient as scratch.
pub(super) fn adam_by_operators(w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) {
    let (sqrt_c2, step) = adam_step(h);
    let _ = hist[0].lerp_(g, 1.0 - h.m); // m = b1 m + (1 - b1) g
    let _ = g.square_();
    let _ = hist[1].lerp_(g, 1.0 - h.m2); // v = b2 v + (1 - b2) g^2
                                          // g <- the denominator; w += m / (-denominator / step size).
    let _ = hist[1].sqrt_out(g);
    if !h.caffe {
        // PyTorch: epsilon on the bias-corrected sqrt(v) (Caffe: on the raw one, its
        // correction folded into the step size).
        let _ = g.g_div_scalar_(sqrt_c2);
    }
    if step != 0.0 {
        let _ = g.g_add_scalar_(h.eps);
        let _ = g.g_mul_scalar_(-1.0 / step);
        let _ = w.addcdiv_(&hist[0], g);
    }
}
