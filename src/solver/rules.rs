//! The update rules, one function each, Caffe's formulas by default and PyTorch's
//! where `flavor: pytorch` says (SGD momentum, Nesterov, Adam's epsilon). The gradient
//! is zeroed after the update, so the rules use it as scratch space: in-place ops, no
//! temporaries (they run over every parameter every iteration).

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

pub fn apply(kind: SolverType, w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) {
    match kind {
        SolverType::SGD => sgd(w, g, &mut hist[0], h),
        SolverType::Nesterov => nesterov(w, g, &mut hist[0], h),
        SolverType::AdaGrad => adagrad(w, g, &mut hist[0], h),
        SolverType::RMSProp => rmsprop(w, g, &mut hist[0], h),
        SolverType::AdaDelta => adadelta(w, g, hist, h),
        SolverType::Adam | SolverType::AdamW => adam(w, g, hist, h),
    }
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

fn adam(w: &mut Tensor, g: &mut Tensor, hist: &mut [Tensor], h: &Hyper) {
    let (m, m2) = (h.m, h.m2);
    let (c1, c2) = (1.0 - m.powf(h.t), 1.0 - m2.powf(h.t));
    let _ = hist[0].lerp_(g, 1.0 - m); // m = b1 m + (1 - b1) g
    let _ = g.square_();
    let _ = hist[1].lerp_(g, 1.0 - m2); // v = b2 v + (1 - b2) g^2
                                        // g <- the denominator; w += m / (-denominator / step size).
    let _ = hist[1].sqrt_out(g);
    let step = if h.caffe {
        // Caffe: epsilon on the raw sqrt(v), correction folded into the rate.
        h.lr * c2.sqrt() / c1
    } else {
        // PyTorch: epsilon on the bias-corrected sqrt(v).
        let _ = g.g_div_scalar_(c2.sqrt());
        h.lr / c1
    };
    if step != 0.0 {
        let _ = g.g_add_scalar_(h.eps);
        let _ = g.g_mul_scalar_(-1.0 / step);
        let _ = w.addcdiv_(&hist[0], g);
    }
}
