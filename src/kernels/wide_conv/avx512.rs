//! The AVX-512 loops of the wide direct convolution (`super` says what and why).

use super::{Problem, NR};
use std::arch::x86_64::*;

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
    // Tiles of 12 pixels, and the rest as one tile of 4, 8 or 12 ending at the row's
    // end, overlapping the tile before (those pixels are computed twice, to the same
    // values): one-pixel tiles have 2 accumulator chains, too few to hide the FMA's
    // latency, and ran at a quarter of the speed (VGG's conv3_1, 19 pixels a row, was
    // 12 + 4 + 3 x 1).
    let mut ox = 0;
    while ox < p.ow {
        let left = p.ow - ox;
        let r = if left >= 12 {
            12
        } else {
            [4, 8, 12].into_iter().find(|&r| r >= left && r <= p.ow).unwrap_or(1)
        };
        let start = if r > left { p.ow - r } else { ox };
        ox = start
            + match r {
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
