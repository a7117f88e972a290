//! Adam's update in two passes over each parameter's arrays (the moments; then the
//! step and the gradient's zeroing) around libtorch's sqrt, instead of libtorch's seven
//! in-place operators and the zeroing after them (`rules::adam_by_operators`, which
//! runs where this declines).
//!
//! Why: the update is bound by memory, not arithmetic. The operator sequence reads or
//! writes a whole array 19 times per parameter (76 bytes per weight, 84 in PyTorch's
//! flavour); these passes and the sqrt, 12 times (48 bytes). The baseline net's 4.6 M
//! weights took 10.2 ms of its 22 ms training step in Adam.
//!
//! Same numbers: each element goes through the same float32 operations in the same
//! order as libtorch's kernels compute them (its lerp is one fused multiply-add, its
//! addcdiv a division then an addition; each correctly rounded), and the sqrt is
//! libtorch's own, which is not correctly rounded, so the weights and moments come out
//! bit for bit as before (tested against the operator sequence).

use tch::{Device, Kind, Tensor};

/// What one update needs, as the operator sequence turns its scalars into float32.
#[derive(Clone, Copy)]
pub(super) struct Coefficients {
    /// lerp weights: 1 - beta1, 1 - beta2.
    pub one_minus_b1: f32,
    pub one_minus_b2: f32,
    /// PyTorch's flavour divides sqrt(v) by sqrt(1 - beta2^t) before epsilon.
    pub sqrt_c2: Option<f32>,
    pub eps: f32,
    /// -1 / step size; `None` where the step is 0 (the moments still move).
    pub minus_inverse_step: Option<f32>,
}

impl Coefficients {
    /// The update `h` describes, each scalar as libtorch's operators round it.
    pub fn of(h: &super::rules::Hyper) -> Coefficients {
        let (sqrt_c2, step) = super::rules::adam_step(h);
        Coefficients {
            one_minus_b1: (1.0 - h.m) as f32,
            one_minus_b2: (1.0 - h.m2) as f32,
            sqrt_c2: (!h.caffe).then_some(sqrt_c2 as f32),
            eps: h.eps as f32,
            minus_inverse_step: (step != 0.0).then_some((-1.0 / step) as f32),
        }
    }
}

/// Elements per task: 64 KiB of each array.
const CHUNK: usize = 16 << 10;

/// The update of `w` with gradient `g` and moments `m`, `v`, and `g` zeroed, where these
/// passes apply: float32 CPU tensors of one dense layout (any strides, the same for all
/// four), a CPU with AVX2 and FMA, own kernels not turned off (`FKPNET_KERNELS`).
/// Returns false, touching nothing, elsewhere.
pub(super) fn update(w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, c: Coefficients) -> bool {
    if !crate::kernels::enabled() || !has_fma() {
        return false;
    }
    let ts = [w, g, m, v];
    let same = |t: &&Tensor| t.size() == w.size() && t.stride() == w.stride();
    if !ts.iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && same(t)) || !dense(w) {
        return false;
    }
    let arrays = [w, g, m, v].map(|t| t.data_ptr() as usize);
    // SAFETY (both passes): the four tensors are dense with the same `numel` f32
    // elements (checked above) and distinct arrays (a weight, its gradient, its moments).
    unsafe { for_chunks(w.numel(), arrays, c, moments) };
    // libtorch's own sqrt, which is not correctly rounded (here 344 of 49,157 results
    // differ from a correctly rounded one by a unit in the last place): the same
    // denominators as before.
    let _ = v.sqrt_out(g);
    unsafe { for_chunks(w.numel(), arrays, c, step) };
    mark_changed(w);
    true
}

/// Tells libtorch that `w` changed, as its own in-place operators do (its version
/// counter): copies of a weight that kernels keep (`wide_conv::Packed`, `onednn::Linear`)
/// are made again only when the counter moves. Without it predictions during training
/// (the val tests) ran on the first test's weights wherever those kernels took them: on
/// an AMD EPYC with AVX2, LeNet's val RMSE rose from 6.2 px to 15.4 px while its train
/// loss fell. An in-place operator on an empty view, which shares the counter and
/// touches no element.
fn mark_changed(w: &Tensor) {
    let _no_grad = tch::no_grad_guard();
    let _ = w.narrow(0, 0, 0).zero_();
}

/// One pass of `f` over the four arrays of `n` elements at `arrays`, in chunks on
/// libtorch's threads.
///
/// # Safety
/// `arrays` hold `n` f32 elements each, no two overlap, and nothing else touches them.
unsafe fn for_chunks(n: usize, arrays: [usize; 4], c: Coefficients, f: Pass) {
    let run = |chunk: usize| {
        let r = chunk * CHUNK..((chunk + 1) * CHUNK).min(n);
        // SAFETY: per the caller, and each task touches its own chunk only.
        let [w, g, m, v] =
            arrays.map(|p| unsafe { std::slice::from_raw_parts_mut((p as *mut f32).add(r.start), r.len()) });
        // SAFETY: `update` runs the passes only where AVX2 and FMA were detected.
        unsafe { f(w, g, m, v, c) }
    };
    match n.div_ceil(CHUNK) {
        0 => {}
        1 => run(0),
        chunks => crate::kernels::parallel_for(chunks, &run),
    }
}

type Pass = unsafe fn(&mut [f32], &mut [f32], &mut [f32], &mut [f32], Coefficients);

fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Whether `t`'s elements fill its storage span exactly (no gaps, no overlaps), in
/// whatever order its strides put them.
fn dense(t: &Tensor) -> bool {
    let mut dims: Vec<(i64, i64)> = t.stride().into_iter().zip(t.size()).filter(|&(_, s)| s != 1).collect();
    dims.sort_unstable();
    let mut expected = 1;
    for (stride, size) in dims {
        if stride != expected {
            return false;
        }
        expected *= size;
    }
    true
}

/// The moments, as `m.lerp_(g, 1 - b1)`, `g.square_()`, `v.lerp_(g, 1 - b2)` compute them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn moments(_: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32], c: Coefficients) {
    for ((g, m), v) in g.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = lerp(*m, *g, c.one_minus_b1);
        *v = lerp(*v, *g * *g, c.one_minus_b2);
    }
}

/// The step from `g` = sqrt(v), as the PyTorch flavour's division, `+ eps`,
/// `* (-1 / step)` and `w.addcdiv_(m, g)` compute it; then `g = 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn step(w: &mut [f32], g: &mut [f32], m: &mut [f32], _: &mut [f32], c: Coefficients) {
    for ((w, g), m) in w.iter_mut().zip(g.iter_mut()).zip(m.iter()) {
        if let Some(s) = c.minus_inverse_step {
            let mut d = *g;
            if let Some(q) = c.sqrt_c2 {
                d /= q;
            }
            *w += *m / ((d + c.eps) * s);
        }
        *g = 0.0;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn moments(_: &mut [f32], _: &mut [f32], _: &mut [f32], _: &mut [f32], _: Coefficients) {
    unreachable!("update declines without x86-64's FMA")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn step(_: &mut [f32], _: &mut [f32], _: &mut [f32], _: &mut [f32], _: Coefficients) {
    unreachable!("update declines without x86-64's FMA")
}

/// libtorch's lerp of float32 (ATen's `lerp_vec`): one fused multiply-add from the
/// nearer end.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(end - start, start)
    } else {
        (weight - 1.0).mul_add(end - start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{adam_by_operators, Hyper};
    use super::*;

    #[test]
    fn bit_for_bit_the_operator_sequence_in_both_flavours_and_layouts() {
        if !has_fma() {
            return eprintln!("skipped: no AVX2 + FMA (the operator sequence runs)");
        }
        tch::manual_seed(5);
        let cl = crate::layers::channels_last;
        // A tail shorter than a vector, several chunks, a channels-last conv weight, and
        // betas on both sides of lerp's 0.5 switch.
        for (shape, b) in [
            (vec![7], (0.9, 0.999)),
            (vec![3 * CHUNK as i64 + 5], (0.9, 0.999)),
            (vec![64, 32, 3, 3], (0.9, 0.999)),
            (vec![33, 17], (0.3, 0.2)),
        ] {
            for caffe in [true, false] {
                for lr in [1e-3, 0.0] {
                    let make = |s: f64| {
                        let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * s;
                        if shape.len() == 4 {
                            cl(&t)
                        } else {
                            t
                        }
                    };
                    let (w, mut g, m) = (make(1.0), make(0.1), make(0.01));
                    let w0 = w.copy();
                    let v = make(0.01).abs();
                    let (mut w2, mut g2, m2, v2) = (w.copy(), g.copy(), m.copy(), v.copy());
                    for t in 1..=3 {
                        let _ = g.copy_(&make(0.1));
                        let _ = g2.copy_(&g);
                        let h = Hyper { lr, m: b.0, m2: b.1, eps: 1e-8, rms_decay: 0.0, t: t as f64, caffe };
                        let version = w.internal_version();
                        assert!(update(&w, &g, &m, &v, Coefficients::of(&h)), "{shape:?}: takes it");
                        assert!(w.internal_version() > version, "{shape:?}: libtorch told of the change");
                        let mut hist = [m2.shallow_clone(), v2.shallow_clone()];
                        adam_by_operators(&mut w2, &mut g2, &mut hist, &h);
                        let _ = g2.zero_();
                    }
                    let case = format!("{shape:?} betas {b:?} caffe {caffe} lr {lr}");
                    for (name, a, e) in [("w", &w, &w2), ("m", &m, &m2), ("v", &v, &v2), ("g", &g, &g2)] {
                        assert!(
                            a.equal(e),
                            "{case}: {name} differs by {}",
                            (a - e).abs().max().double_value(&[])
                        );
                    }
                    assert_eq!(w.equal(&w0), lr == 0.0, "{case}: the weights move exactly when lr > 0");
                }
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_compute() {
        let c = Coefficients {
            one_minus_b1: 0.1,
            one_minus_b2: 0.001,
            sqrt_c2: None,
            eps: 1e-8,
            minus_inverse_step: Some(-1e3),
        };
        let t = || Tensor::ones([4, 6], (Kind::Float, Device::Cpu));
        let (w, g, m, v) = (t(), t(), t(), t());
        assert!(!update(&w, &g.tr(), &m, &v, c), "a gradient of other strides");
        // Every other column of wider arrays: the same strides for all four, with gaps.
        let gappy = || Tensor::ones([4, 12], (Kind::Float, Device::Cpu)).slice(1, 0, 12, 2);
        let (a, b, d, e) = (gappy(), gappy(), gappy(), gappy());
        assert!(!dense(&a) && dense(&w) && dense(&crate::layers::channels_last(&t().view([1, 4, 2, 3]))));
        assert!(!update(&a, &b, &d, &e, c), "gaps");
        assert!(!update(&w.to_kind(Kind::Double), &g, &m, &v, c), "float64");
        assert!(w.equal(&t()) && g.equal(&t()), "nothing touched");
    }
}
