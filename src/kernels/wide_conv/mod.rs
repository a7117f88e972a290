//! A direct convolution for predictions at batch 1-4 (`MAX_BATCH`), on the CPU when no
//! gradient is wanted: LeNet's conv3 and conv4 (32 and 64 input channels) at batch 1.
//!
//! Why: at batch 1 oneDNN's convolutions run well below the CPU's peak on small maps:
//! LeNet's conv3 (32 -> 64 channels, 20x20 outputs) took 154-181 us, conv4 (64 -> 128 at
//! 8x8) 104-115 us; onnxruntime's (MLAS's direct convolutions) about half that. Here
//! each tile is 12 neighbouring output pixels by 32 output channels, 24 accumulators in
//! registers: per input value two weight vectors and twelve broadcasts feed 24 fused
//! multiply-adds (the shape of MLAS's and BLAS's kernels). conv3 took 104-136 us, conv4
//! 92-101 (same process, alternated). The weights are packed once into that order and
//! packed again only when the tensor changes (libtorch's version counter).
//!
//! Each output is one fixed chain of fused multiply-adds, the bias first, then the taps in
//! (ky, kx, channel) order: results do not depend on the thread count; they differ from
//! oneDNN's in the last bits only.

use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
use avx512::row;

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
fn row(_: &[f32], _: &[f32], _: &[f32], _: &mut [f32], _: &Problem, _: usize, _: usize, _: usize) {
    unreachable!("wide_conv declines without AVX-512, which only x86-64 has")
}

/// The largest batch this kernel takes; above it oneDNN's convolutions are the faster.
pub const MAX_BATCH: i64 = 4;
/// Output channels per tile: two AVX-512 vectors.
const NR: usize = 32;

/// Sizes of one call, in the input's padded frame.
pub(super) struct Problem {
    c: usize,
    o: usize,
    k: usize,
    hp: usize,
    wp: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    dilation: usize,
}

impl Problem {
    fn taps(&self) -> usize {
        self.k * self.k * self.c
    }

    /// Blocks of `NR` output channels.
    fn blocks(&self) -> usize {
        self.o.div_ceil(NR)
    }

    /// Where tap (ky, kx) of output pixel (oy, ox) of image `img` starts in the padded
    /// NHWC input (its `c` channels follow).
    fn input_at(&self, img: usize, oy: usize, ox: usize, ky: usize, kx: usize) -> usize {
        let y = img * self.hp + oy * self.stride + ky * self.dilation;
        (y * self.wp + ox * self.stride + kx * self.dilation) * self.c
    }
}

/// A conv's weights packed for this kernel, kept between calls.
#[derive(Default)]
pub struct Packed {
    /// The packing and biases, with the tensors' data pointers and versions they were made from.
    cache: Mutex<Option<(Vec<(usize, i64)>, Arc<(Vec<f32>, Vec<f32>)>)>>,
}

impl Packed {
    /// Weights as `[block][tap][NR]` (taps in (ky, kx, channel) order, zeros past `o`),
    /// biases as `[block][NR]`.
    fn of(&self, w: &Tensor, b: Option<&Tensor>, p: &Problem) -> Arc<(Vec<f32>, Vec<f32>)> {
        let key: Vec<(usize, i64)> = [Some(w), b]
            .into_iter()
            .flatten()
            .map(|t| (t.data_ptr() as usize, t.internal_version()))
            .collect();
        let mut cache = self.cache.lock().expect("not poisoned");
        if let Some((k, packed)) = &*cache {
            if *k == key {
                return packed.clone();
            }
        }
        let rows = Vec::<f32>::try_from(w.permute([0, 2, 3, 1]).contiguous().view(-1)).expect("f32 weights");
        let (taps, blocks) = (p.taps(), p.blocks());
        let mut weights = vec![0f32; blocks * taps * NR];
        for (o, row) in rows.chunks_exact(taps).enumerate() {
            for (t, v) in row.iter().enumerate() {
                weights[(o / NR * taps + t) * NR + o % NR] = *v;
            }
        }
        let mut biases = vec![0f32; blocks * NR];
        if let Some(b) = b {
            biases[..p.o].copy_from_slice(super::data(b));
        }
        let packed = Arc::new((weights, biases));
        *cache = Some((key, packed.clone()));
        packed
    }
}

/// `conv2d(x, w, b)` (one group) for a batch of at most `MAX_BATCH`; `None` where it does
/// not apply (the caller then uses libtorch): a gradient is wanted, not float32 on the
/// CPU, no AVX-512, a larger batch, a non-square kernel, or an input that is not dense
/// channels-last. The output has channels-last strides.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: i64,
    pad: i64,
    dilation: i64,
    packed: &Packed,
) -> Option<Tensor> {
    if !super::has_avx512() || !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 4 || ws.len() != 4 || ws[1] != xs[1] || ws[2] != ws[3] || !(1..=MAX_BATCH).contains(&xs[0])
    {
        return None;
    }
    if stride < 1 || dilation < 1 || pad < 0 || !b.is_none_or(|b| b.size() == [ws[0]] && b.is_contiguous()) {
        return None;
    }
    let d = &xs;
    if x.stride() != [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]] {
        return None;
    }
    let (n, c, o, k) = (xs[0], xs[1] as usize, ws[0] as usize, ws[2] as usize);
    let (hp, wp) = ((xs[2] + 2 * pad) as usize, (xs[3] + 2 * pad) as usize);
    let extent = dilation as usize * (k - 1) + 1;
    if hp < extent || wp < extent || o == 0 {
        return None;
    }
    let s = stride as usize;
    let p = Problem {
        c,
        o,
        k,
        hp,
        wp,
        oh: (hp - extent) / s + 1,
        ow: (wp - extent) / s + 1,
        stride: s,
        dilation: dilation as usize,
    };
    let packed = packed.of(w, b, &p);
    // The input in NHWC order, with its zero border where the conv pads.
    let padded: Option<Vec<f32>> = (pad > 0).then(|| {
        let nhwc = x.permute([0, 2, 3, 1]).constant_pad_nd([0, 0, pad, pad, pad, pad]);
        Vec::<f32>::try_from(nhwc.contiguous().view(-1)).expect("f32 input")
    });
    let input = padded.as_deref().unwrap_or_else(|| super::data(x));
    let (oh, ow) = (p.oh as i64, p.ow as i64);
    let out = Tensor::empty_strided(
        [n, o as i64, oh, ow],
        [oh * ow * o as i64, 1, ow * o as i64, o as i64],
        (Kind::Float, Device::Cpu),
    );
    let len = (n * oh * ow) as usize * o;
    // SAFETY: `out` was just allocated with exactly `len` dense f32 elements and nothing
    // else refers to its storage until this function returns it.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, len) };
    // One task per output row (all its channel blocks), so no two threads share a row.
    let rows: Vec<Mutex<&mut [f32]>> = dst.chunks_mut(p.ow * o).map(Into::into).collect();
    super::parallel_for(rows.len(), &|r| {
        let mut out_row = rows[r].lock().expect("one task per row");
        let (img, oy) = (r / p.oh, r % p.oh);
        for ob in 0..p.blocks() {
            // SAFETY: `conv2d` only gets here on a CPU with AVX-512F, with the padded
            // input, the packed weights and one output row.
            unsafe { row(input, &packed.0, &packed.1, &mut out_row, &p, img, oy, ob) }
        }
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn agrees_with_libtorch_over_geometries_and_repacks_changed_weights() {
        if !crate::kernels::has_avx512() {
            return eprintln!("skipped: this CPU has no AVX-512 (the kernel declines; libtorch runs)");
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(11);
        let cl = crate::layers::channels_last;
        // (input N, C, H, W), (outputs, kernel), stride, pad, dilation: LeNet's conv3 and
        // conv4 at batch 1, then padding, stride, dilation, outputs that are not whole
        // blocks, one and three channels, rows of 13 (a 12-tile and a 1-tile) and of 3.
        for (xs, (o, k), s, p, d) in [
            ([1, 32, 22, 22], (64, 3), 1, 0, 1),
            ([1, 64, 10, 10], (128, 3), 1, 0, 1),
            ([2, 8, 9, 9], (40, 3), 2, 1, 1),
            ([1, 5, 11, 11], (5, 3), 1, 2, 2),
            ([3, 1, 15, 15], (33, 3), 1, 0, 1),
            ([1, 3, 5, 5], (16, 3), 1, 0, 1),
            ([4, 16, 6, 6], (64, 1), 1, 0, 1),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], k, k]));
            let b = randn(&[o]);
            for bias in [Some(&b), None] {
                let packed = Packed::default();
                let got = conv2d(&x, &w, bias, s, p, d, &packed).expect("takes it");
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert_eq!(got.size(), want.size(), "{xs:?} -> {o} k{k} s{s} p{p} d{d}");
                assert!(crate::layers::is_channels_last(&got));
                let tol = 1e-4 * ((xs[1] * k * k) as f64).sqrt();
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < tol, "{xs:?} -> {o} k{k} s{s} p{p} d{d}: max diff {diff}");
                // The solver changes weights in place: the packing must follow.
                let _ = w.shallow_clone().g_add_scalar_(0.5);
                let again = conv2d(&x, &w, bias, s, p, d, &packed).unwrap();
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert!(
                    (&again - &want).abs().max().double_value(&[]) < tol,
                    "stale packing after an update"
                );
            }
        }
    }

    #[test]
    fn the_same_outputs_whatever_the_threads_and_declines_what_it_does_not_compute() {
        let cl = crate::layers::channels_last;
        let (x, w) = (cl(&randn(&[1, 32, 12, 12])), cl(&randn(&[64, 32, 3, 3])));
        let packed = Packed::default();
        let _g = tch::no_grad_guard();
        if crate::kernels::has_avx512() {
            let all = conv2d(&x, &w, None, 1, 0, 1, &packed).unwrap();
            let threads = tch::get_num_threads();
            tch::set_num_threads(1);
            let single = conv2d(&x, &w, None, 1, 0, 1, &packed).unwrap();
            tch::set_num_threads(threads);
            assert!(single.equal(&all), "one thread differs from {threads}");
        }
        let five = cl(&randn(&[5, 32, 12, 12]));
        assert!(conv2d(&five, &w, None, 1, 0, 1, &packed).is_none(), "a batch above MAX_BATCH");
        assert!(conv2d(&x.contiguous(), &w, None, 1, 0, 1, &packed).is_none(), "an NCHW input");
        assert!(conv2d(&x, &w, Some(&randn(&[3])), 1, 0, 1, &packed).is_none(), "a bias of the wrong size");
        drop(_g);
        let wg = w.set_requires_grad(true);
        assert!(conv2d(&x, &wg, None, 1, 0, 1, &packed).is_none(), "a gradient wanted");
    }
}
