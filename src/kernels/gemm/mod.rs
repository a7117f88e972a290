//! A dense layer's product for predictions of many faces on CPUs with AVX2 and no
//! AVX-512: `x.matmul(w.tr()) + b` (rectified where asked) for 5 or more rows.
//!
//! Why: there MKL's product runs its AVX2 code at 105-128 GFLOP/s on the baseline's
//! fc1 at batch 64 (64 x 9216 x 500; oneDNN's is no faster), where onnxruntime's MLAS
//! reaches ~156, which put fkpnet at 0.7-0.8x onnxruntime's batch-64 throughput on the
//! baseline. Here: the weights packed once (again only when they change, as
//! `wide_conv::Packed`) into panels of 16 outputs, k-major; tiles of 6 rows by 16
//! outputs (12 accumulators: per k two weight vectors and six broadcast inputs feed 12
//! fused multiply-adds), over blocks of `KC` inputs so a panel's block stays in L1 while
//! every row tile passes over it. Threads take whole panels.
//!
//! Each output is one chain of fused multiply-adds over k in order, the bias added
//! last: the same bits on any thread count; they differ from MKL's in the last bits.

use super::Isa;
use std::sync::{Arc, Mutex};
use tch::Tensor;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Outputs per panel (two registers) and rows per tile.
const NR: usize = 16;
const MR: usize = 6;
/// Inputs per block: a panel's block is `KC * NR` floats (16 KiB), a row tile's 6 KiB.
const KC: usize = 256;
/// The fewest rows this kernel takes (`few_rows` takes 1-4).
pub const MIN_ROWS: i64 = 5;

/// The packed weights of one layer, remade when the weight tensor changes (its data
/// pointer or libtorch's version counter).
#[derive(Default)]
pub struct Packed {
    cache: Mutex<Option<((usize, i64), Arc<Vec<f32>>)>>,
}

impl Packed {
    /// Weights `[n, k]` as `[panel][k][NR]`, zeros past `n`.
    fn of(&self, w: &[f32], key: (usize, i64), n: usize, k: usize) -> Arc<Vec<f32>> {
        let mut cache = self.cache.lock().expect("not poisoned");
        if let Some((at, packed)) = &*cache {
            if *at == key {
                return packed.clone();
            }
        }
        let panels = n.div_ceil(NR);
        let mut packed = vec![0f32; panels * k * NR];
        for (o, row) in w.chunks_exact(k).enumerate() {
            let panel = &mut packed[o / NR * k * NR..][..k * NR];
            for (i, v) in row.iter().enumerate() {
                panel[i * NR + o % NR] = *v;
            }
        }
        let packed = Arc::new(packed);
        *cache = Some((key, packed.clone()));
        packed
    }
}

/// `x.matmul(w.tr()) + b` for `x` of `MIN_ROWS` or more rows, then max(., 0) where
/// `rectify`; `None` where it does not apply (the caller then uses libtorch): a gradient
/// is wanted, not float32 on the CPU, a CPU without AVX2 or with AVX-512 (where MKL's
/// product was not measured against it), fewer rows, or tensors that are not contiguous.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, rectify: bool, packed: &Packed) -> Option<Tensor> {
    if super::isa()? != Isa::Avx2 || !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] || xs[0] < MIN_ROWS || ws[0] < 1 || ws[1] < 1 {
        return None;
    }
    let bias_fits = |b: &Tensor| b.size() == [ws[0]] && b.is_contiguous();
    if !x.is_contiguous() || !w.is_contiguous() || !b.is_none_or(bias_fits) {
        return None;
    }
    let (m, n, k) = (xs[0] as usize, ws[0] as usize, ws[1] as usize);
    let panels = packed.of(super::data(w), (w.data_ptr() as usize, w.internal_version()), n, k);
    let out = product(super::data(x), &panels, b.map(super::data), m, n, k, rectify);
    Some(Tensor::from_slice(&out).view([m as i64, n as i64]))
}

/// The product itself: `x` `[m, k]`, `panels` packed by `Packed::of`.
fn product(
    x: &[f32],
    panels: &[f32],
    b: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    rectify: bool,
) -> Vec<f32> {
    let count = n.div_ceil(NR);
    // Each panel's outputs, `[m][NR]`, then copied into the `[m, n]` result.
    let mut parts = vec![0f32; count * m * NR];
    let slots: Vec<Mutex<&mut [f32]>> = parts.chunks_mut(m * NR).map(Into::into).collect();
    super::parallel_for(count, &|p| {
        let mut c = slots[p].lock().expect("one task per panel");
        let bias: [f32; NR] =
            std::array::from_fn(|j| b.and_then(|b| b.get(p * NR + j)).copied().unwrap_or(0.0));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `linear` checked the CPU has AVX2 and FMA; `x` holds `m * k` floats, the
        // panel `k * NR`, `c` `m * NR`.
        unsafe {
            avx2::panel(x, &panels[p * k * NR..][..k * NR], &mut c, m, k, &bias, rectify)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("{:?}", (&bias, &c))
    });
    let mut out = vec![0f32; m * n];
    for (p, part) in parts.chunks_exact(m * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        for (row, src) in part.chunks_exact(NR).enumerate() {
            out[row * n + p * NR..][..cols].copy_from_slice(&src[..cols]);
        }
    }
    out
}

#[cfg(test)]
mod tests;
