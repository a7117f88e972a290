//! The AVX2 loops of the wide direct convolution (`super` says what and why), for CPUs
//! without AVX-512. The packing is the AVX-512 loops' (blocks of `NR` = 32 output
//! channels); with 16 registers a tile is 6 pixels by half a block, 16 channels in two
//! registers: 12 accumulators, and per tap two weight loads and six broadcasts feed 12
//! multiply-adds (the shape of BLIS's and MLAS's AVX2 kernels). Each output is the
//! AVX-512 loops' chain (bias, then the taps in order): the same bits.

use super::{Problem, NR};
use std::arch::x86_64::*;

/// Floats per register.
const LANES: usize = 8;
/// Channels per tile: half a packed block.
const HALF: usize = NR / 2;
/// Pixels per tile, and the tiles a row's last pixels may take (overlapping the tile before).
const MAIN: usize = 6;
const TILES: [usize; 3] = [2, 4, 6];
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
    for half in 0..2 {
        let first = ob * NR + half * HALF;
        if first >= p.o {
            break;
        }
        let mut ox = 0;
        while ox < p.ow {
            let left = p.ow - ox;
            let r = if left >= MAIN { MAIN } else { rest_tile(left, p.ow) };
            let start = if r > left { p.ow - r } else { ox };
            ox = start
                + match r {
                    6 => tile::<6>(x, w, bias, out, p, img, oy, start, first),
                    4 => tile::<4>(x, w, bias, out, p, img, oy, start, first),
                    2 => tile::<2>(x, w, bias, out, p, img, oy, start, first),
                    _ => tile::<1>(x, w, bias, out, p, img, oy, start, first),
                };
        }
    }
    if p.stream {
        // Streaming stores are weakly ordered: done before anyone reads the row.
        _mm_sfence();
    }
}

/// The tile for the last `left` pixels of a row of `ow`: the smallest of `TILES` that
/// covers them and fits the row; else the largest that fits in `left` (a row of 5 is 4 +
/// a 2 overlapping by 1); else 1 (rows of one pixel).
pub(super) fn rest_tile(left: usize, ow: usize) -> usize {
    let covering = TILES.into_iter().find(|&r| r >= left && r <= ow);
    covering.or_else(|| TILES.into_iter().rev().find(|&r| r <= left)).unwrap_or(1)
}

/// `R` neighbouring output pixels from `ox` on by the 16 output channels from `first`
/// (a packed block's first or second half): the bias, then the taps in (ky, kx, channel)
/// order, one fused multiply-add chain per output. Returns `R`.
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
    first: usize,
) -> usize {
    let taps = p.taps();
    let step = p.stride * p.c;
    let (ob, half) = (first / NR, first % NR);
    // The block's weights, from this half's 16 within each tap's row of NR.
    let (wp, xp) = (w[ob * taps * NR..][..taps * NR].as_ptr().wrapping_add(half), x.as_ptr());
    // SAFETY: `row` checked that the row's last read lies inside `x`; the packed block
    // has `taps` rows of NR weights and NR biases; stores are of at most `o - first`
    // channels of pixels `ox..ox + R` < ow, inside `out`.
    unsafe {
        let b =
            [_mm256_loadu_ps(bias.as_ptr().add(first)), _mm256_loadu_ps(bias.as_ptr().add(first + LANES))];
        let mut acc = [b; R];
        let mut t = 0;
        for ky in 0..p.k {
            for kx in 0..p.k {
                let base = p.input_at(img, oy, ox, ky, kx);
                for ch in 0..p.c {
                    let w0 = _mm256_loadu_ps(wp.add(t * NR));
                    let w1 = _mm256_loadu_ps(wp.add(t * NR + LANES));
                    // Past the block's end this names memory that is never read:
                    // wrapping_add (no in-bounds promise), and a prefetch cannot fault.
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((t + PREFETCH_TAPS) * NR) as *const i8);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_broadcast_ss(&*xp.add(base + j * step + ch));
                        a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(v, w1, a[1]);
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
        let lanes = (p.o - first).min(HALF);
        for (j, a) in acc.iter().enumerate() {
            let dst = out.as_mut_ptr().add((ox + j) * p.o + first);
            if lanes == HALF {
                // A whole 64-byte line past the caches where the output streams.
                if p.stream && dst as usize % 64 == 0 {
                    _mm256_stream_ps(dst, a[0]);
                    _mm256_stream_ps(dst.add(LANES), a[1]);
                } else {
                    _mm256_storeu_ps(dst, a[0]);
                    _mm256_storeu_ps(dst.add(LANES), a[1]);
                }
                continue;
            }
            let mut all = [0f32; HALF];
            _mm256_storeu_ps(all.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(all.as_mut_ptr().add(LANES), a[1]);
            std::ptr::copy_nonoverlapping(all.as_ptr(), dst, lanes);
        }
    }
    R
}
