//! The AVX2 loops of the weight gradient (`super` says what and why).

use super::Problem;
use std::arch::x86_64::*;
use std::ops::Range;

/// Floats per register.
const LANES: usize = 8;
/// Output channels per tile (broadcast gradients) and input channels per tile (two registers).
const OUTS: usize = 6;
const INS: usize = 2 * LANES;
/// Output pixels per run of a row that every tile sweeps before the next: their gradients
/// (one cache line per pixel) stay in L1 while all taps and input channels pass over them.
const PIXELS: usize = 32;

/// Adds the weight gradient of images `images` into `sum` (`[o][tap]`, taps in (ky, kx,
/// channel) order, as the weights' NHWC layout).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds padded NHWC images `images` of `p` (the first
/// of them first), `dy` all `n` images' output gradients (dense, as `p.dy_strides` says), `sum` `o * taps` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn images(x: &[f32], dy: &[f32], sum: &mut [f32], p: &Problem, images: Range<usize>) {
    assert!(x.len() >= images.len() * p.hp * p.wp * p.c && dy.len() == p.n * p.oh * p.ow * p.o);
    assert!(p.dy_strides.iter().zip([p.n, p.o, p.oh, p.ow]).all(|(s, d)| (d - 1) * s < dy.len()));
    assert!(sum.len() == p.o * p.taps() && p.c % LANES == 0 && images.end <= p.n);
    let first = images.start;
    // Maps narrower than a run take whole rows at a time, as many as make a run: the
    // sums stay in registers across them (LeNet's conv4, 8 pixels a row, loaded and
    // stored its sums every 8 pixels).
    let rows = if p.ow >= PIXELS { 1 } else { PIXELS.div_ceil(p.ow) };
    for img in images {
        for y in (0..p.oh).step_by(rows) {
            let rows = rows.min(p.oh - y);
            for x0 in (0..p.ow).step_by(PIXELS) {
                let run = x0..(x0 + PIXELS).min(p.ow);
                for o0 in (0..p.o).step_by(OUTS) {
                    for tap in 0..p.k * p.k {
                        for c0 in (0..p.c).step_by(INS) {
                            let at = Tile { img, x_img: img - first, y, rows, run: run.clone(), o0, tap, c0 };
                            let wide = p.c - c0 >= INS;
                            match (p.o - o0).min(OUTS) {
                                6 if wide => tile::<6, 2>(x, dy, sum, p, at),
                                6 => tile::<6, 1>(x, dy, sum, p, at),
                                5 if wide => tile::<5, 2>(x, dy, sum, p, at),
                                5 => tile::<5, 1>(x, dy, sum, p, at),
                                4 if wide => tile::<4, 2>(x, dy, sum, p, at),
                                4 => tile::<4, 1>(x, dy, sum, p, at),
                                3 if wide => tile::<3, 2>(x, dy, sum, p, at),
                                3 => tile::<3, 1>(x, dy, sum, p, at),
                                2 if wide => tile::<2, 2>(x, dy, sum, p, at),
                                2 => tile::<2, 1>(x, dy, sum, p, at),
                                _ if wide => tile::<1, 2>(x, dy, sum, p, at),
                                _ => tile::<1, 1>(x, dy, sum, p, at),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Which sums a tile adds to: output channels `o0..`, tap `tap` (ky * k + kx), input
/// channels `c0..`, over output pixels `run` of rows `y..y + rows` of image `img` (`x_img` in the
/// padded images the call was given).
struct Tile {
    img: usize,
    x_img: usize,
    y: usize,
    rows: usize,
    run: Range<usize>,
    o0: usize,
    tap: usize,
    c0: usize,
}

/// `R` output channels by `V` registers of input channels: each sum gets, pixel by
/// pixel, the output gradient times the input value under the tap.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile<const R: usize, const V: usize>(x: &[f32], dy: &[f32], sum: &mut [f32], p: &Problem, t: Tile) {
    let (ky, kx) = (t.tap / p.k, t.tap % p.k);
    let taps = p.taps();
    let first = t.tap * p.c + t.c0;
    // The input pixel under the tap for output pixel 0 of the row, and the step between pixels.
    let x_row = p.input_at(t.x_img, t.y * p.stride + ky * p.dilation, kx * p.dilation) + t.c0;
    let x_step = p.stride * p.c;
    let [gn, go, gy, gx] = p.dy_strides;
    let g_row = t.img * gn + t.y * gy + t.o0 * go;
    // Bounds, once: the last input and gradient read, the last sum written.
    let (x_next_row, last_row) = (p.stride * p.wp * p.c, t.rows - 1);
    assert!(x_row + last_row * x_next_row + (t.run.end - 1) * x_step + V * LANES <= x.len());
    assert!(g_row + last_row * gy + (t.run.end - 1) * gx + (R - 1) * go < dy.len());
    assert!((t.o0 + R - 1) * taps + first + V * LANES <= sum.len());
    let (xp, gp, sp) = (x.as_ptr(), dy.as_ptr(), sum.as_mut_ptr());
    // SAFETY: every index below is at most the bounds asserted above.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            for (v, a) in a.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(sp.add((t.o0 + r) * taps + first + v * LANES));
            }
        }
        for row in 0..t.rows {
            let (x_row, g_row) = (x_row + row * x_next_row, g_row + row * gy);
            for px in t.run.clone() {
                let xv: [__m256; V] =
                    std::array::from_fn(|v| _mm256_loadu_ps(xp.add(x_row + px * x_step + v * LANES)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let g = _mm256_broadcast_ss(&*gp.add(g_row + px * gx + r * go));
                    for (a, xv) in a.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(g, *xv, *a);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (v, a) in a.iter().enumerate() {
                _mm256_storeu_ps(sp.add((t.o0 + r) * taps + first + v * LANES), *a);
            }
        }
    }
}
