//! Products for a batch of a few rows (`MAX_ROWS`), on the CPU when no gradient is
//! wanted: a dense layer predicting one face or a handful (`linear`), and a late conv
//! whose output has that few pixels (`conv2d`, LeNet's conv5 at batch 1).
//!
//! Why: at batch 1 these are matrix-vector products that read the layer's whole weight
//! once, and libtorch runs them on one thread (MKL's gemv) or with oneDNN's set-up for
//! large maps. In a LeNet pass at batch 1 the weights are not in cache when their layer
//! comes: fc2-fc4 (500x500) took 74-78 us each inside the pass against 23 us timed
//! alone, 12-16 us here. The weight rows are split over libtorch's threads, so every core
//! streams its share, and four rows' dot products run side by side so the multiply-adds
//! do not wait on each other.
//!
//! Each output is one fixed chain of fused multiply-adds over its row's 16-lane slices
//! in order, reduced across lanes, plus the bias: results do not depend on the thread
//! count or the batch; they differ from MKL's and oneDNN's in the last bits only.

use tch::Tensor;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
use avx512::rows;

#[cfg(not(target_arch = "x86_64"))]
fn rows(_: &[f32], _: &[f32], _: Option<&[f32]>, _: &mut [f32], _: usize, _: usize) {
    unreachable!("linear declines without AVX-512, which only x86-64 has")
}

/// The most rows (images) this kernel takes; above it MKL's matrix product is the faster.
pub const MAX_ROWS: i64 = 4;
/// Below this many weights one thread does the whole product (a parallel region costs more).
const MIN_PARALLEL_WEIGHTS: usize = 1 << 15;

/// `x.matmul(w.tr()) + b` for `x` of 1..=`MAX_ROWS` rows by the kernel; `None` where it
/// does not apply (the caller then uses libtorch): a gradient is wanted, not float32 on
/// the CPU, no AVX-512, more rows, or tensors that are not contiguous.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Option<Tensor> {
    if !super::has_avx512() || !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] || !(1..=MAX_ROWS).contains(&xs[0]) {
        return None;
    }
    let bias_fits = |b: &Tensor| b.size() == [ws[0]] && b.is_contiguous();
    if !x.is_contiguous() || !w.is_contiguous() || !b.is_none_or(bias_fits) {
        return None;
    }
    let (m, n) = (xs[0], ws[0]);
    let out = product(super::data(x), super::data(w), b.map(super::data), m as usize, n as usize);
    Some(Tensor::from_slice(&out).view([m, n]))
}

/// `conv2d(x, w, b)` (one group) where the output has at most `MAX_ROWS` pixels in all,
/// as the product of the input's patches with the weight rows: a late conv predicting one
/// face (LeNet's conv5 at batch 1: 2x2 outputs of 256 channels, 1.2 MB of weights read
/// once). `None` where it does not apply, as `linear`, or where the input or the weight
/// is not dense channels-last. The output has channels-last strides.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: i64,
    pad: i64,
    dilation: i64,
) -> Option<Tensor> {
    if !super::has_avx512() || !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 4 || ws.len() != 4 || ws[1] != xs[1] || stride < 1 || dilation < 1 || pad < 0 {
        return None;
    }
    let (batch, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, kh, kw) = (ws[0], ws[2], ws[3]);
    let out_size = |size: i64, k: i64| (size + 2 * pad - dilation * (k - 1) - 1).div_euclid(stride) + 1;
    let (oh, ow) = (out_size(h, kh), out_size(wd, kw));
    let pixels = batch * oh * ow;
    if oh < 1
        || ow < 1
        || !(1..=MAX_ROWS).contains(&pixels)
        || !b.is_none_or(|b| b.size() == [o] && b.is_contiguous())
    {
        return None;
    }
    let nhwc = |t: &Tensor, d: &[i64]| t.stride() == [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]];
    if !nhwc(x, &xs) || !nhwc(w, &ws) {
        return None;
    }
    // Each output pixel's patch in the weight rows' (ky, kx, channel) order; taps in the
    // padding are zeros.
    let (image, c) = (super::data(x), c as usize);
    let mut patches = vec![0f32; pixels as usize * (kh * kw) as usize * c];
    let mut at = patches.chunks_exact_mut(c);
    for (img, oy, ox) in (0..batch).flat_map(|i| (0..oh).flat_map(move |y| (0..ow).map(move |x| (i, y, x)))) {
        for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
            let tap = at.next().expect("sized for every tap");
            let (iy, ix) = (oy * stride - pad + ky * dilation, ox * stride - pad + kx * dilation);
            if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                tap.copy_from_slice(&image[(((img * h + iy) * wd + ix) as usize) * c..][..c]);
            }
        }
    }
    let out = product(&patches, super::data(w), b.map(super::data), pixels as usize, o as usize);
    Some(Tensor::from_slice(&out).view([batch, oh, ow, o]).permute([0, 3, 1, 2]))
}

/// `x (m x k) @ w (n x k)^T + b` as m x n, row-major.
fn product(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize) -> Vec<f32> {
    let k = x.len() / m;
    // Computed as its transpose (n x m), so each thread's share of the weight rows writes
    // one contiguous range.
    let mut out = vec![0f32; n * m];
    let threads = if n * k < MIN_PARALLEL_WEIGHTS { 1 } else { tch::get_num_threads().max(1) as usize };
    let per = n.div_ceil(threads.min(n));
    // SAFETY (both calls of `rows`): the callers only get here on a CPU with AVX-512F,
    // with `x` of m rows of k, `w` of n rows of k and `b` of n values.
    if per == n {
        unsafe { rows(x, w, b, &mut out, m, 0) };
    } else {
        let ranges: Vec<std::sync::Mutex<&mut [f32]>> = out.chunks_mut(per * m).map(Into::into).collect();
        super::parallel_for(ranges.len(), &|i| {
            let mut range = ranges[i].lock().expect("one task per range");
            unsafe { rows(x, w, b, &mut range, m, i * per) }
        });
    }
    if m == 1 {
        return out;
    }
    (0..m).flat_map(|r| (0..n).map(move |j| (r, j))).map(|(r, j)| out[j * m + r]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn a_few_rows_match_libtorchs_linear_with_and_without_bias() {
        if !crate::kernels::has_avx512() {
            return eprintln!("skipped: this CPU has no AVX-512 (the kernel declines; libtorch runs)");
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(7);
        // Widths with and without a partial vector, rows in blocks of 4 and the rest,
        // one thread and several; LeNet's and the baseline's shapes among them.
        for (m, n, k) in
            [(1, 500, 500), (1, 500, 256), (4, 30, 500), (2, 7, 5), (3, 1, 17), (1, 500, 9216), (4, 13, 16)]
        {
            let (x, w, b) = (randn(&[m, k]), randn(&[n, k]), randn(&[n]));
            for bias in [Some(&b), None] {
                let got = linear(&x, &w, bias).expect("takes it");
                let want = x.linear(&w, bias);
                assert_eq!(got.size(), [m, n]);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-4 * (k as f64).sqrt(),
                    "{m}x{n}x{k} bias {}: max diff {diff}",
                    bias.is_some()
                );
            }
        }
    }

    #[test]
    fn the_same_outputs_whatever_the_batch_and_threads() {
        if !crate::kernels::has_avx512() {
            return eprintln!("skipped: this CPU has no AVX-512");
        }
        let _g = tch::no_grad_guard();
        let (x, w, b) = (randn(&[4, 700]), randn(&[600, 700]), randn(&[600]));
        let all = linear(&x, &w, Some(&b)).unwrap();
        for r in 0..4 {
            let one = linear(&x.narrow(0, r, 1).contiguous(), &w, Some(&b)).unwrap();
            assert!(one.equal(&all.narrow(0, r, 1)), "row {r} alone differs from in a batch of 4");
        }
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let single = linear(&x, &w, Some(&b)).unwrap();
        tch::set_num_threads(threads);
        assert!(single.equal(&all), "one thread differs from {threads}");
    }

    #[test]
    fn convs_with_a_few_output_pixels_match_libtorch() {
        if !crate::kernels::has_avx512() {
            return eprintln!("skipped: this CPU has no AVX-512");
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(3);
        let cl = crate::layers::channels_last;
        // (input N, C, H, W), (outputs, kernel), stride, pad, dilation: LeNet's conv5 at
        // batch 1, then padding, stride, dilation, a batch of 1x1 outputs, 3 channels.
        for (xs, (o, k), s, p, d) in [
            ([1, 128, 4, 4], (256, 3), 1, 0, 1),
            ([1, 8, 3, 3], (5, 3), 2, 1, 1),
            ([1, 4, 5, 5], (7, 2), 3, 0, 2),
            ([4, 16, 2, 2], (33, 2), 1, 0, 1),
            ([2, 3, 3, 4], (2, 3), 1, 0, 1),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], k, k]));
            let b = randn(&[o]);
            for bias in [Some(&b), None] {
                let got = conv2d(&x, &w, bias, s, p, d).expect("takes it");
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert_eq!(got.size(), want.size(), "{xs:?} -> {o} k{k} s{s} p{p} d{d}");
                assert!(crate::layers::is_channels_last(&got));
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-4 * ((xs[1] * k * k) as f64).sqrt(), "{xs:?} -> {o}: max diff {diff}");
            }
        }
        let (x, w) = (cl(&randn(&[1, 8, 4, 4])), cl(&randn(&[4, 8, 3, 3])));
        assert!(conv2d(&x, &w, None, 1, 1, 1).is_none(), "16 output pixels: more than MAX_ROWS");
        assert!(conv2d(&x.contiguous(), &w, None, 1, 0, 1).is_none(), "an NCHW input");
        assert!(conv2d(&x, &w.contiguous(), None, 1, 0, 1).is_none(), "NCHW weights");
    }

    #[test]
    fn it_declines_what_it_does_not_compute() {
        let (x, w) = (randn(&[1, 8]), randn(&[3, 8]));
        let _g = tch::no_grad_guard();
        assert!(linear(&randn(&[5, 8]), &w, None).is_none(), "more than MAX_ROWS rows");
        assert!(
            linear(&randn(&[8, 1]).tr(), &w, None).is_some() == crate::kernels::has_avx512(),
            "a [1, 8] view is contiguous"
        );
        assert!(
            linear(&randn(&[8, 2]).tr(), &randn(&[3, 8]), None).is_none(),
            "a transposed (strided) batch"
        );
        assert!(linear(&x, &randn(&[8, 3]).tr(), None).is_none(), "a strided weight");
        assert!(linear(&x, &w, Some(&randn(&[4]))).is_none(), "a bias of the wrong size");
        assert!(linear(&x.to_kind(Kind::BFloat16), &w.to_kind(Kind::BFloat16), None).is_none(), "bf16");
        drop(_g);
        let wg = w.set_requires_grad(true);
        assert!(linear(&x, &wg, None).is_none(), "a gradient wanted");
        let _g = tch::no_grad_guard();
        assert_eq!(linear(&x, &wg, None).is_some(), crate::kernels::has_avx512(), "no gradient wanted");
    }
}
