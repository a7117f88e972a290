//! The AVX2 loops of the wide direct convolution (`super` says what and why), for CPUs
//! without AVX-512. The packing is the AVX-512 loops' (blocks of `NR` = 32 output
//! channels); with 16 registers a tile is 3 pixels by a block's 32 channels in four
//! registers: 12 accumulators, and per tap three broadcasts and four weight loads feed
//! 12 multiply-adds, one weight register at a time (the shape of MLAS's AVX2 kernels).
//! Measured on this AMD EPYC (Zen 3) at batch 1 against tiles of 6 pixels by 16
//! channels (two per block, each re-reading the inputs), one thread, alternated: VGG's
//! convs 75-95 -> 89-94 GFLOP/s (conv3_1 75 -> 89), LeNet's conv3 and conv4 on two
//! threads 151 -> 171 and 135 -> 172. Each output is the AVX-512 loops' chain (bias, then
//! the taps in order): the same bits.

use super::{Problem, NR};
use std::arch::x86_64::*;

/// Floats per register, and registers per block.
const LANES: usize = 8;
const VECTORS: usize = NR / LANES;
/// Pixels per tile.
const PIXELS: usize = 3;
/// How many taps ahead a tile asks for its weights (as `avx512::PREFETCH_TAPS`).
const PREFETCH_TAPS: usize = 24;

/// Output row `oy` of image `img`, output channels `ob * NR..`, into `out` (that row:
/// `ow` pixels of `o` channels).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` is the padded input of `Problem`, `w` and `bias` packed by
/// `super::pack`, `out` one output row.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn row(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    p: &Problem,
    img: usize,
    oy: usize,
    ob: usize,
) {
    assert!(
        out.len() == p.ow * p.o && w.len() == p.blocks() * p.taps() * NR && bias.len() == p.blocks() * NR
    );
    let last = p.input_at(img, oy, p.ow - 1, p.k - 1, p.k - 1) + p.c - 1;
    assert!(last < x.len());
    // Tiles of 3, the row's last 1 or 2 pixels as a smaller tile.
    let mut ox = 0;
    while ox < p.ow {
        ox += match (p.ow - ox).min(PIXELS) {
            3 => tile::<3>(x, w, bias, out, p, img, oy, ox, ob),
            2 => tile::<2>(x, w, bias, out, p, img, oy, ox, ob),
            _ => tile::<1>(x, w, bias, out, p, img, oy, ox, ob),
        };
    }
    if p.stream {
        // Streaming stores are weakly ordered: done before anyone reads the row.
        _mm_sfence();
    }
}

/// `R` neighbouring output pixels from `ox` on by `NR` output channels: the bias, then
/// the taps in (ky, kx, channel) order, one fused multiply-add chain per output. Returns `R`.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn tile<const R: usize>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    p: &Problem,
    img: usize,
    oy: usize,
    ox: usize,
    ob: usize,
) -> usize {
    let taps = p.taps();
    let step = p.stride * p.c;
    let first = ob * NR;
    let (wp, xp) = (w[ob * taps * NR..][..taps * NR].as_ptr(), x.as_ptr());
    // SAFETY: `row` checked that the row's last read lies inside `x`; the packed block
    // has `taps` rows of NR weights and NR biases; stores are of at most `o - first`
    // channels of pixels `ox..ox + R` <= ow, inside `out`.
    unsafe {
        let b: [__m256; VECTORS] =
            std::array::from_fn(|f| _mm256_loadu_ps(bias.as_ptr().add(first + f * LANES)));
        let mut acc = [b; R];
        let mut t = 0;
        for ky in 0..p.k {
            for kx in 0..p.k {
                let base = p.input_at(img, oy, ox, ky, kx);
                for ch in 0..p.c {
                    // Past the block's end this names memory that is never read:
                    // wrapping_add (no in-bounds promise), and a prefetch cannot fault.
                    let ahead = wp.wrapping_add((t + PREFETCH_TAPS) * NR);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(NR / 2) as *const i8);
                    let v: [__m256; R] =
                        std::array::from_fn(|j| _mm256_broadcast_ss(&*xp.add(base + j * step + ch)));
                    for f in 0..VECTORS {
                        let wf = _mm256_loadu_ps(wp.add(t * NR + f * LANES));
                        for j in 0..R {
                            acc[j][f] = _mm256_fmadd_ps(v[j], wf, acc[j][f]);
                        }
                    }
                    t += 1;
                }
            }
        }
        if p.rectify {
            // max(0, a) is a where a is NaN (the second operand wins), as libtorch's ReLU.
            for a in acc.iter_mut().flatten() {
                *a = _mm256_max_ps(_mm256_setzero_ps(), *a);
            }
        }
        let lanes = (p.o - first).min(NR);
        for (j, a) in acc.iter().enumerate() {
            let dst = out.as_mut_ptr().add((ox + j) * p.o + first);
            if lanes < NR {
                let mut all = [0f32; NR];
                for (f, v) in a.iter().enumerate() {
                    _mm256_storeu_ps(all.as_mut_ptr().add(f * LANES), *v);
                }
                std::ptr::copy_nonoverlapping(all.as_ptr(), dst, lanes);
            } else if p.stream && dst as usize % 64 == 0 {
                // Two whole 64-byte lines past the caches.
                for (f, v) in a.iter().enumerate() {
                    _mm256_stream_ps(dst.add(f * LANES), *v);
                }
            } else {
                for (f, v) in a.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(f * LANES), *v);
                }
            }
        }
    }
    R
}
