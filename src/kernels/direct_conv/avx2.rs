//! The AVX2 loops of the direct convolution + max pool (`super` says what and why), for
//! CPUs without AVX-512. The packing is the AVX-512 loops' (rows of `o_padded`, whole
//! 16-float vectors), each 16 output channels as two 8-float registers. With 16
//! registers the blocks are smaller: for the 2x2 pool 2 conv pixels of both rows by 16
//! channels (8 accumulators; each input value broadcast once feeds 2 multiply-adds), for
//! a conv row 6 pixels by 16 channels. Each output is the AVX-512 loops' chain of fused
//! multiply-adds (bias, then the taps in order): the same bits.

use super::{Pooling, Problem, BLOCKED, LANES};
use std::arch::x86_64::*;

/// Floats per register.
const HALF: usize = 8;
/// Conv pixels of each row per block of the 2x2 pool (one pooled pixel).
const PAIR: usize = 2;
/// Conv pixels per block of a conv row (the general pool): 12 accumulators.
const PIXELS: usize = 6;

/// The pooled output rows `first..` that `out` holds (and their winners, where wanted).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` is the (padded) input of `p`, `weights` packed by
/// `super::pack_weights`, `out` (and `winners`) whole pooled rows.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows(
    x: &[f32],
    weights: &[f32],
    out: &mut [f32],
    mut winners: Option<&mut [u8]>,
    p: &Problem,
    first: usize,
) {
    let (c, op) = (p.c as usize, p.o_padded as usize);
    let (oh, ow) = (p.oh as usize, p.ow as usize);
    let image_len = (p.hp * p.wp) as usize * c;
    let offsets = p.tap_offsets();
    let q = p.pool;
    let (ks, s) = (q.kernel as usize, q.stride as usize);
    let mut scratch = vec![0f32; ks * ow * op];
    let (rows_per_image, row_len) = (p.out_rows().0 / p.n as usize, p.out_rows().1);
    for (r, row) in out.chunks_exact_mut(row_len).enumerate() {
        let (img, y) = ((first + r) / rows_per_image, (first + r) % rows_per_image);
        let image = &x[img * image_len..][..image_len];
        if p.pools_in_pairs() {
            let wins = winners.as_deref_mut().map(|w| &mut w[r * row_len..][..row_len]);
            pooled_row_2x2(image, weights, &offsets, row, wins, p, y);
            continue;
        }
        let top = y * s;
        let rows_in = ks.min(oh - top);
        for (i, conv) in scratch.chunks_exact_mut(ow * op).take(rows_in).enumerate() {
            conv_row(image, weights, &offsets, conv, p, top + i);
        }
        max_pool_row(&mut scratch, row, p, q, rows_in);
    }
}

/// One pooled row of a 2x2, stride-2 max pool without clipped windows: each window's
/// four conv outputs stay in registers and only the maxima are stored (as `avx512`'s).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pooled_row_2x2(
    image: &[f32],
    weights: &[f32],
    offsets: &[usize],
    out: &mut [f32],
    mut winners: Option<&mut [u8]>,
    p: &Problem,
    py: usize,
) {
    let (c, s, wp, op, o) =
        (p.c as usize, p.stride as usize, p.wp as usize, p.o_padded as usize, p.o as usize);
    let (pw, step) = (out.len() / o, s * c);
    let rows = [2 * py * s * wp * c, (2 * py + 1) * s * wp * c];
    // The last element read: row 2py+1, the last window's right pixel, the last tap.
    let last = rows[1] + 2 * (pw - 1) * step + offsets.last().unwrap() + (PAIR - 1) * step;
    assert!(last < image.len() && weights.len() == (offsets.len() + 1) * op && pw >= 1);
    assert!(op % LANES == 0 && winners.as_ref().is_none_or(|w| w.len() == out.len()));
    let src = image.as_ptr();
    for qx in 0..pw {
        let base = 2 * qx * step;
        for chunk in (0..op).step_by(LANES) {
            // SAFETY: loads at most `last` into the image (asserted) or inside the packed
            // weights (taps + 1 rows of `op`, chunk + 16 <= op); stores of at most
            // `o - ch` floats at pooled pixel qx < pw.
            unsafe {
                let bias = [0, 1].map(|h| _mm256_loadu_ps(weights.as_ptr().add(chunk + h * HALF)));
                // [half of the 16 channels][conv row][pixel]
                let mut acc = [[[bias[0]; PAIR]; 2], [[bias[1]; PAIR]; 2]];
                for (t, &off) in offsets.iter().enumerate() {
                    let row_of_taps = weights.as_ptr().add((t + 1) * op + chunk);
                    let w = [_mm256_loadu_ps(row_of_taps), _mm256_loadu_ps(row_of_taps.add(HALF))];
                    for (r, row) in rows.iter().enumerate() {
                        for j in 0..PAIR {
                            let v = _mm256_broadcast_ss(&*src.add(row + base + off + j * step));
                            acc[0][r][j] = _mm256_fmadd_ps(v, w[0], acc[0][r][j]);
                            acc[1][r][j] = _mm256_fmadd_ps(v, w[1], acc[1][r][j]);
                        }
                    }
                }
                for (h, a) in acc.iter().enumerate() {
                    let ch = chunk + h * HALF;
                    if ch >= o {
                        break;
                    }
                    let lanes = HALF.min(o - ch);
                    let max = _mm256_max_ps(_mm256_max_ps(a[0][0], a[0][1]), _mm256_max_ps(a[1][0], a[1][1]));
                    let at = qx * o + ch;
                    if let Some(w) = winners.as_deref_mut() {
                        let window = [a[0][0], a[0][1], a[1][0], a[1][1]];
                        let mut places = [0i32; HALF];
                        _mm256_storeu_si256(
                            places.as_mut_ptr() as *mut __m256i,
                            winner(window, max, p.pool.rectify),
                        );
                        for (dst, place) in w[at..][..lanes].iter_mut().zip(places) {
                            *dst = place as u8;
                        }
                    }
                    store(out.as_mut_ptr().add(at), rectified(max, p.pool.rectify), lanes);
                }
            }
        }
    }
}

/// One row of convolution outputs into `dst` (`ow` pixels of `o_padded` channels).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn conv_row(image: &[f32], weights: &[f32], offsets: &[usize], dst: &mut [f32], p: &Problem, oy: usize) {
    let ow = p.ow as usize;
    if ow < PIXELS {
        return (0..ow).for_each(|ox| pixels::<1>(image, weights, offsets, dst, p, oy, ox));
    }
    // Whole blocks, the last one ending at the row's end (overlapping the one before:
    // those pixels are computed twice, to the same bits).
    for ox in (0..ow - PIXELS).step_by(PIXELS).chain([ow - PIXELS]) {
        pixels::<PIXELS>(image, weights, offsets, dst, p, oy, ox);
    }
}

/// `P` neighbouring output pixels of row `oy` from `ox` on, every output channel, into
/// `dst` at `o_padded` floats per pixel: the bias, then the taps in (ky, kx, channel) order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pixels<const P: usize>(
    image: &[f32],
    weights: &[f32],
    offsets: &[usize],
    dst: &mut [f32],
    p: &Problem,
    oy: usize,
    ox: usize,
) {
    let (c, s, wp, op) = (p.c as usize, p.stride as usize, p.wp as usize, p.o_padded as usize);
    let step = s * c;
    let base = (oy * s * wp + ox * s) * c;
    // The last element these pixels read (inside the image by the geometry: checked once).
    let last = base + offsets.last().unwrap() + (P - 1) * step;
    assert!(last < image.len() && weights.len() == (offsets.len() + 1) * op);
    assert!(dst.len() >= (ox + P) * op && op % LANES == 0, "row buffer too short");
    let src = image.as_ptr();
    for chunk in (0..op).step_by(LANES) {
        // SAFETY: every load is at most `last` into the image (asserted) or inside the
        // packed weights (taps + 1 rows of `op`), every store inside `dst` (asserted).
        unsafe {
            let at = |row: usize, h: usize| weights.as_ptr().add(row * op + chunk + h * HALF);
            let mut acc = [[_mm256_loadu_ps(at(0, 0)), _mm256_loadu_ps(at(0, 1))]; P];
            for (t, &off) in offsets.iter().enumerate() {
                let w = [_mm256_loadu_ps(at(t + 1, 0)), _mm256_loadu_ps(at(t + 1, 1))];
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_broadcast_ss(&*src.add(base + off + j * step));
                    a[0] = _mm256_fmadd_ps(v, w[0], a[0]);
                    a[1] = _mm256_fmadd_ps(v, w[1], a[1]);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let d = dst.as_mut_ptr().add((ox + j) * op + chunk);
                _mm256_storeu_ps(d, a[0]);
                _mm256_storeu_ps(d.add(HALF), a[1]);
            }
        }
    }
}

/// One pooled row from `rows_in` conv rows in `conv` (each `ow * o_padded`): the max
/// over each window, windows clipped at the right edge (Caffe's ceil mode); first the
/// rows' maximum into the first row, then each window's across its columns.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn max_pool_row(conv: &mut [f32], out: &mut [f32], p: &Problem, q: Pooling, rows_in: usize) {
    let (o, op, ow) = (p.o as usize, p.o_padded as usize, p.ow as usize);
    let (ks, s) = (q.kernel as usize, q.stride as usize);
    let row = ow * op;
    assert!(conv.len() >= rows_in * row && out.len() == q.out_w as usize * o && rows_in >= 1);
    let (first, rest) = conv.split_at_mut(row);
    for r in 1..rows_in {
        for (m, v) in first.chunks_exact_mut(HALF).zip(rest[(r - 1) * row..][..row].chunks_exact(HALF)) {
            // SAFETY: both chunks are HALF floats long.
            unsafe {
                let v = _mm256_max_ps(_mm256_loadu_ps(m.as_ptr()), _mm256_loadu_ps(v.as_ptr()));
                _mm256_storeu_ps(m.as_mut_ptr(), v);
            }
        }
    }
    for (px, dst) in out.chunks_exact_mut(o).enumerate() {
        let (left, right) = (px * s, (px * s + ks).min(ow));
        for chunk in (0..o).step_by(HALF) {
            // SAFETY: columns < ow index inside the first row (asserted), `chunk + 8 <=
            // op`; the store writes at most `o - chunk` floats from `chunk`, inside `dst`.
            unsafe {
                let at = |col: usize| _mm256_loadu_ps(first.as_ptr().add(col * op + chunk));
                let m = if right == left + 2 {
                    _mm256_max_ps(at(left), at(left + 1))
                } else {
                    (left + 1..right).fold(at(left), |m, col| _mm256_max_ps(m, at(col)))
                };
                store(dst.as_mut_ptr().add(chunk), rectified(m, q.rectify), HALF.min(o - chunk));
            }
        }
    }
}

/// The first `lanes` (1-8) floats of `v` to `dst`.
///
/// # Safety
/// `dst..dst + lanes` is writable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(dst: *mut f32, v: __m256, lanes: usize) {
    // SAFETY: per the contract; a full store where all 8 lanes are wanted.
    unsafe {
        if lanes == HALF {
            _mm256_storeu_ps(dst, v);
        } else {
            let mut all = [0f32; HALF];
            _mm256_storeu_ps(all.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(all.as_ptr(), dst, lanes);
        }
    }
}

/// Lane by lane, the first of a 2x2 window's values (row by row) equal to its maximum
/// `max` (the one libtorch's max pool takes), or `BLOCKED` where the maximum is
/// rectified and not above 0, as `avx512::winner`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn winner(window: [__m256; 4], max: __m256, rectify: bool) -> __m256i {
    let mut place = _mm256_set1_epi32(3);
    for q in (0..3).rev() {
        let first = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(window[q], max));
        place = _mm256_blendv_epi8(place, _mm256_set1_epi32(q as i32), first);
    }
    if rectify {
        let blocked = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(max, _mm256_setzero_ps()));
        place = _mm256_blendv_epi8(place, _mm256_set1_epi32(BLOCKED as i32), blocked);
    }
    place
}

/// max(m, 0) lane by lane where `rectify` (a NaN stays NaN: vmaxps returns its second
/// operand when either is NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn rectified(m: __m256, rectify: bool) -> __m256 {
    if rectify {
        _mm256_max_ps(_mm256_setzero_ps(), m)
    } else {
        m
    }
}
