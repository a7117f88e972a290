//! The AVX-512 loops of the wide direct convolution (`super` says what and why).

use super::{Problem, NR};
use std::arch::x86_64::*;

/// How many taps ahead of the multiply-adds a tile asks for its weights (`_mm_prefetch`
/// into L1; 24 taps are 3 KB). Why: a block's weights (73-295 KB in VGG's convs) do not
/// stay in L1 from one tile to the next, so every tile streams them from L2, and the
/// hardware's prefetchers did not keep up. Measured on VGG's convs at batch 1, one
/// thread, alternated: 117-159 -> 134-165 GFLOP/s (8 taps ahead gave the same).
const PREFETCH_TAPS: usize = 24;

/// Output row `oy` of image `img`, output channels `ob * NR..`, into `out` (that row:
/// `ow` pixels of `o` channels).
///
/// # Safety
/// The CPU has AVX-512F; `x` is the padded input of `Problem`, `w` and `bias` packed by
/// `super::pack`, `out` one output row.
#[target_feature(enable = "avx512f")]
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
    // The last input element any tile of this row reads stays inside the image.
    let last = p.input_at(img, oy, p.ow - 1, p.k - 1, p.k - 1) + p.c - 1;
    assert!(last < x.len());
    // Tiles of `main` pixels (14 or 12), and the rest as one tile of 4, 8, 12 or 14
    // ending at the row's end, overlapping the tile before (those pixels are computed
    // twice, to the same values): one-pixel tiles have 2 accumulator chains, too few to
    // hide the FMA's latency, and ran at a quarter of the speed (VGG's conv3_1, 19 pixels
    // a row, was 12 + 4 + 3 x 1).
    let main = main_tile(p.ow);
    let mut ox = 0;
    while ox < p.ow {
        let left = p.ow - ox;
        let r = if left >= main { main } else { rest_tile(left, p.ow) };
        let start = if r > left { p.ow - r } else { ox };
        ox = start
            + match r {
                14 => tile::<14>(x, w, bias, out, p, img, oy, start, ob),
                12 => tile::<12>(x, w, bias, out, p, img, oy, start, ob),
                8 => tile::<8>(x, w, bias, out, p, img, oy, start, ob),
                4 => tile::<4>(x, w, bias, out, p, img, oy, start, ob),
                _ => tile::<1>(x, w, bias, out, p, img, oy, start, ob),
            };
    }
    if p.stream {
        // Streaming stores are weakly ordered: done before anyone reads the row.
        _mm_sfence();
    }
}

/// The tile most of a row of `ow` pixels is cut into: 14 pixels (28 accumulators, so
/// each weight loaded feeds 14 multiply-adds), or 12 where the row's rest then costs
/// fewer recomputed pixels. Rows of 44 are 3 x 12 + 8, not 3 x 14 + a 4 overlapping by
/// 2; of 42, 3 x 14. Measured on VGG's convs at batch 1, one thread, against 12 alone:
/// 42-pixel rows 146 -> 169 GFLOP/s, 17-pixel rows 117 -> 149.
pub(super) fn main_tile(ow: usize) -> usize {
    let computed = |main: usize| {
        let whole = ow / main * main;
        whole + if whole < ow { rest_tile(ow - whole, ow) } else { 0 }
    };
    if computed(14) <= computed(12) {
        14
    } else {
        12
    }
}

/// The tile for the last `left` pixels of a row of `ow`: the smallest of 4, 8, 12, 14
/// that covers them and fits the row; else the largest that fits in `left` (a row of 10
/// is 8 + a 4 overlapping by 2, not ten 1-pixel tiles); else 1 (rows narrower than 4).
pub(super) fn rest_tile(left: usize, ow: usize) -> usize {
    const TILES: [usize; 4] = [4, 8, 12, 14];
    let covering = TILES.into_iter().find(|&r| r >= left && r <= ow);
    covering.or_else(|| TILES.into_iter().rev().find(|&r| r <= left)).unwrap_or(1)
}

/// `R` neighbouring output pixels from `ox` on by `NR` output channels: the bias, then
/// the taps in (ky, kx, channel) order, one fused multiply-add chain per output. Returns `R`.
#[inline]
#[target_feature(enable = "avx512f")]
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
    let (wp, xp) = (w[ob * taps * NR..][..taps * NR].as_ptr(), x.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: `row` checked that the row's last read lies inside `x`; the packed block
    // has `taps` rows of NR weights and NR biases; stores are masked to `o` channels of
    // pixels `ox..ox + R` < ow, inside `out`.
    unsafe {
        let b =
            [_mm512_loadu_ps(bias.as_ptr().add(ob * NR)), _mm512_loadu_ps(bias.as_ptr().add(ob * NR + 16))];
        for a in acc.iter_mut() {
            *a = b;
        }
        let mut t = 0;
        for ky in 0..p.k {
            for kx in 0..p.k {
                let base = p.input_at(img, oy, ox, ky, kx);
                for ch in 0..p.c {
                    let w0 = _mm512_loadu_ps(wp.add(t * NR));
                    let w1 = _mm512_loadu_ps(wp.add(t * NR + 16));
                    // Past the block's end this names memory that is never read:
                    // wrapping_add (no in-bounds promise), and a prefetch cannot fault.
                    let ahead = wp.wrapping_add((t + PREFETCH_TAPS) * NR);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_set1_ps(*xp.add(base + j * step + ch));
                        a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                        a[1] = _mm512_fmadd_ps(v, w1, a[1]);
                    }
                    t += 1;
                }
            }
        }
        let first = ob * NR;
        let lanes = |v: usize| (p.o - first).saturating_sub(v * 16).min(16);
        let masks = [lanes(0), lanes(1)].map(|n| (1u32 << n).wrapping_sub(1) as u16);
        if p.rectify {
            // max(0, a) is a where a is NaN (the second operand wins), as libtorch's ReLU.
            for a in acc.iter_mut().flatten() {
                *a = _mm512_max_ps(_mm512_setzero_ps(), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            let dst = out.as_mut_ptr().add((ox + j) * p.o + first);
            if p.stream && masks[1] == u16::MAX && dst as usize % 64 == 0 {
                _mm512_stream_ps(dst, a[0]);
                _mm512_stream_ps(dst.add(16), a[1]);
                continue;
            }
            _mm512_mask_storeu_ps(dst, masks[0], a[0]);
            if masks[1] != 0 {
                _mm512_mask_storeu_ps(dst.add(16), masks[1], a[1]);
            }
        }
    }
    R
}
