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
//! count or the batch; they differ from MKL's and oneDNN's in the last bits only. The
//! AVX2 loop (CPUs without AVX-512) keeps each slice in two registers and sums the lanes
//! in its own order, so its results may differ from the AVX-512 loop's in the last bit.
//! On an AMD EPYC (Zen 3, AVX2 only), timed alone at batch 1 on two threads: LeNet's fc2
//! 19-24 us (libtorch 28), the baseline's fc1 250-290 us (libtorch 470), VGG's fc1 985 us
//! (libtorch 1,360).

use super::direct_conv::{Geometry, Pooling};
use tch::Tensor;

use super::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Outputs of weight rows `first..` for the `m` rows of `x` (the loops' `rows`), by `isa`'s loop.
///
/// # Safety
/// The CPU has `isa`; the sizes are as the loops' `rows` says.
#[allow(clippy::too_many_arguments)]
unsafe fn rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    first: usize,
    rectify: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: per this function's contract.
    unsafe {
        match isa {
            Isa::Avx512 => avx512::rows(x, w, b, out, m, first, rectify),
            Isa::Avx2 => avx2::rows(x, w, b, out, m, first, rectify),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, b, out, m, first, rectify);
        unreachable!("no kernel instruction set ({isa:?}) outside x86-64")
    }
}

/// The most rows (images) this kernel takes; above it MKL's matrix product is the faster.
pub const MAX_ROWS: i64 = 4;
/// Below this many weights one thread does the whole product (a parallel region costs more).
const MIN_PARALLEL_WEIGHTS: usize = 1 << 15;

/// `x.matmul(w.tr()) + b` for `x` of 1..=`MAX_ROWS` rows by the kernel, then max(., 0)
/// where `rectify` (a plain ReLU after the layer, applied as each output is written: its
/// own pass took 3 us per dense layer in a LeNet pass at batch 1); `None` where it does
/// not apply (the caller then uses libtorch): a gradient is wanted, not float32 on the
/// CPU, neither AVX-512 nor AVX2, more rows, or tensors that are not contiguous.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, rectify: bool) -> Option<Tensor> {
    let isa = super::isa()?;
    if !super::inference_on_cpu(x, w, b) {
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
    Some(super::new_output(&[m, n], &[n, 1], |out| {
        product(isa, super::data(x), super::data(w), b.map(super::data), m as usize, rectify, out)
    }))
}

/// `conv2d(x, w, b)` (one group) where the output has at most `MAX_ROWS` pixels in all,
/// as the product of the input's patches with the weight rows, rectified where `rectify`
/// (as `linear`): a late conv predicting one face (LeNet's conv5 at batch 1: 2x2 outputs
/// of 256 channels, 1.2 MB of weights read once). `None` where it does not apply, as
/// `linear`, or where the input or the weight is not dense channels-last. The output has
/// channels-last strides.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: Geometry, rectify: bool) -> Option<Tensor> {
    let conv = Conv::of(x, w, b, g)?;
    let [n, oh, ow, o] = conv.sizes;
    Some(super::channels_last_output(n as i64, o, oh, ow, |out| conv.run(rectify, out)))
}

/// `max_pool2d(conv2d(x, w, b), pool)` where the conv output has at most `MAX_ROWS`
/// pixels (LeNet's conv5 + pool5 at batch 1, 2x2 -> 1x1), the pool applied to the few
/// outputs before they become a tensor, and the ReLU between where `pool.rectify` says:
/// libtorch's pool and ReLU of that 1 KB map took 19 us (median) inside a batch-1 pass,
/// a quarter of the conv. `None` where `conv2d` declines or a pool window would start
/// past the conv output. The output has channels-last strides.
pub fn conv_max_pool(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Pooling,
) -> Option<Tensor> {
    let conv = Conv::of(x, w, b, g)?;
    let [n, oh, ow, o] = conv.sizes;
    if !pool.fits(oh as i64, ow as i64) {
        return None;
    }
    let mut values = vec![0f32; n * oh * ow * o];
    conv.run(false, &mut values);
    let (ph, pw, pk, ps) =
        (pool.out_h as usize, pool.out_w as usize, pool.kernel as usize, pool.stride as usize);
    Some(super::channels_last_output(n as i64, o, ph, pw, |out| {
        for (r, dst) in out.chunks_exact_mut(pw * o).enumerate() {
            let (img, py) = (r / ph, r % ph);
            let rows = (img * oh + py * ps) * ow * o..(img * oh + (py * ps + pk).min(oh)) * ow * o;
            super::max_pool_row(&values[rows], ow, o, pool, dst);
        }
    }))
}

/// A few-pixel conv that `conv2d`'s checks accept: its output sizes `[n, oh, ow, o]` and
/// each output pixel's patch of the input, in the weight rows' (ky, kx, channel) order.
struct Conv<'a> {
    isa: Isa,
    sizes: [usize; 4],
    patches: Vec<f32>,
    w: &'a Tensor,
    b: Option<&'a Tensor>,
}

impl<'a> Conv<'a> {
    fn of(x: &Tensor, w: &'a Tensor, b: Option<&'a Tensor>, g: Geometry) -> Option<Self> {
        let Geometry { stride, pad, dilation } = g;
        let isa = super::isa()?;
        if !super::inference_on_cpu(x, w, b) {
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
        // Taps in the padding are zeros.
        let (image, c) = (super::data(x), c as usize);
        let mut patches = vec![0f32; pixels as usize * (kh * kw) as usize * c];
        let mut at = patches.chunks_exact_mut(c);
        for (img, oy, ox) in
            (0..batch).flat_map(|i| (0..oh).flat_map(move |y| (0..ow).map(move |x| (i, y, x))))
        {
            for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
                let tap = at.next().expect("sized for every tap");
                let (iy, ix) = (oy * stride - pad + ky * dilation, ox * stride - pad + kx * dilation);
                if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                    tap.copy_from_slice(&image[(((img * h + iy) * wd + ix) as usize) * c..][..c]);
                }
            }
        }
        Some(Conv { isa, sizes: [batch, oh, ow, o].map(|d| d as usize), patches, w, b })
    }

    /// The output as NHWC values into `out`, rectified where `rectify`.
    fn run(&self, rectify: bool, out: &mut [f32]) {
        let (w, b) = (super::data(self.w), self.b.map(super::data));
        let pixels = self.sizes[..3].iter().product();
        product(self.isa, &self.patches, w, b, pixels, rectify, out);
    }
}

/// `x (m x k) @ w (n x k)^T + b` into `out` (m x n, row-major), rectified where asked.
fn product(isa: Isa, x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, rectify: bool, out: &mut [f32]) {
    let (k, n) = (x.len() / m, out.len() / m);
    // Computed as its transpose (n x m), so each thread's share of the weight rows writes
    // one contiguous range; with one row that is `out` itself.
    let mut transposed = if m == 1 { Vec::new() } else { vec![0f32; n * m] };
    let dst = if m == 1 { &mut *out } else { &mut transposed[..] };
    let threads = if n * k < MIN_PARALLEL_WEIGHTS { 1 } else { tch::get_num_threads().max(1) as usize };
    let per = n.div_ceil(threads.min(n));
    // SAFETY (both calls of `rows`): the callers only get here on a CPU with `isa`, with
    // `x` of m rows of k, `w` of n rows of k and `b` of n values.
    if per == n {
        unsafe { rows(isa, x, w, b, dst, m, 0, rectify) };
    } else {
        let ranges: Vec<std::sync::Mutex<&mut [f32]>> = dst.chunks_mut(per * m).map(Into::into).collect();
        super::parallel_for(ranges.len(), &|i| {
            let mut range = ranges[i].lock().expect("one task per range");
            unsafe { rows(isa, x, w, b, &mut range, m, i * per, rectify) }
        });
    }
    if m > 1 {
        for (j, outputs) in transposed.chunks_exact(m).enumerate() {
            for (r, &v) in outputs.iter().enumerate() {
                out[r * n + j] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests;
