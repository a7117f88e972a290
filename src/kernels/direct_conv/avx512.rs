//! The AVX-512 loops of the direct convolution + max pool (`super` says what and why).

use super::{Pooling, Problem, BLOCKED, LANES, PIXELS};
use std::arch::x86_64::*;

/// The pooled output rows `first..` that `out` holds (and their winners, where wanted).
///
/// # Safety
/// The CPU has AVX-512F; `x` is the (padded) input of `p`, `weights` packed by
/// `super::pack_weights`, `out` (and `winners`) whole pooled rows.
#[target_feature(enable = "avx512f")]
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
    // One conv row with every output channel padded to whole vectors, per pool row.
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

/// One pooled row of a 2x2, stride-2 max pool without clipped windows (the study's nets):
/// the conv outputs of each window stay in registers and only the maxima are stored.
/// With an even number of output vectors, two at once on 4 pixels per row (each input
/// value broadcast once for both); otherwise one on 8.
#[inline]
#[target_feature(enable = "avx512f")]
fn pooled_row_2x2(
    image: &[f32],
    weights: &[f32],
    offsets: &[usize],
    out: &mut [f32],
    winners: Option<&mut [u8]>,
    p: &Problem,
    py: usize,
) {
    if (p.o_padded as usize / LANES) % 2 == 0 {
        pooled_blocks::<4, 2>(image, weights, offsets, out, winners, p, py)
    } else {
        pooled_blocks::<PIXELS, 1>(image, weights, offsets, out, winners, p, py)
    }
}

/// `pooled_row_2x2` in blocks of `PX` conv pixels of both rows (`PX / 2` pooled pixels,
/// the last block overlapping the one before, as in `conv_row`) and `NC` vectors of
/// output channels: 2 * PX * NC accumulators in registers. `winners`, where wanted, gets
/// each maximum's place in its window (`Winner`).
#[inline]
#[target_feature(enable = "avx512f")]
fn pooled_blocks<const PX: usize, const NC: usize>(
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
    let (pw, per_block, step) = (out.len() / o, PX / 2, s * c);
    let rows = [2 * py * s * wp * c, (2 * py + 1) * s * wp * c];
    let last_block = pw - per_block;
    // The last element read: row 2py+1, the last block's last pixel, the last tap.
    let last = rows[1] + 2 * last_block * step + offsets.last().unwrap() + (PX - 1) * step;
    assert!(last < image.len() && weights.len() == (offsets.len() + 1) * op && pw >= per_block);
    assert!(op % (NC * LANES) == 0, "whole passes of {NC} vectors");
    assert!(winners.as_ref().is_none_or(|w| w.len() == out.len()));
    let src = image.as_ptr();
    for qx in (0..last_block).step_by(per_block).chain([last_block]) {
        let base = 2 * qx * step;
        for chunk in (0..op).step_by(NC * LANES) {
            // SAFETY: loads at most `last` into the image (asserted) or inside the packed
            // weights (taps + 1 rows of `op`, chunk + NC vectors <= op); stores of at most
            // `o - ch` floats at pooled pixels qx..qx+per_block < pw.
            unsafe {
                let mut acc = [[[_mm512_setzero_ps(); PX]; 2]; NC];
                for (n, a) in acc.iter_mut().enumerate() {
                    *a = [[_mm512_loadu_ps(weights.as_ptr().add(chunk + n * LANES)); PX]; 2];
                }
                for (t, &off) in offsets.iter().enumerate() {
                    let row_of_taps = weights.as_ptr().add((t + 1) * op + chunk);
                    let mut w = [_mm512_setzero_ps(); NC];
                    for (n, w) in w.iter_mut().enumerate() {
                        *w = _mm512_loadu_ps(row_of_taps.add(n * LANES));
                    }
                    for (r, row) in rows.iter().enumerate() {
                        for j in 0..PX {
                            let v = _mm512_set1_ps(*src.add(row + base + off + j * step));
                            for n in 0..NC {
                                acc[n][r][j] = _mm512_fmadd_ps(v, w[n], acc[n][r][j]);
                            }
                        }
                    }
                }
                for (n, a) in acc.iter().enumerate() {
                    let ch = chunk + n * LANES;
                    let mask = (1u32 << LANES.min(o - ch)).wrapping_sub(1) as u16;
                    for i in 0..per_block {
                        let top = _mm512_max_ps(a[0][2 * i], a[0][2 * i + 1]);
                        let bottom = _mm512_max_ps(a[1][2 * i], a[1][2 * i + 1]);
                        let max = _mm512_max_ps(top, bottom);
                        let at = (qx + i) * o + ch;
                        if let Some(w) = winners.as_deref_mut() {
                            let window = [a[0][2 * i], a[0][2 * i + 1], a[1][2 * i], a[1][2 * i + 1]];
                            let place = winner(window, max, p.pool.rectify);
                            _mm512_mask_cvtepi32_storeu_epi8(w.as_mut_ptr().add(at) as *mut i8, mask, place);
                        }
                        let m = rectified(max, p.pool.rectify);
                        _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, m);
                    }
                }
            }
        }
    }
}

/// One row of convolution outputs into `dst` (`ow` pixels of `o_padded` channels).
#[inline]
#[target_feature(enable = "avx512f")]
fn conv_row(image: &[f32], weights: &[f32], offsets: &[usize], dst: &mut [f32], p: &Problem, oy: usize) {
    let ow = p.ow as usize;
    if ow < PIXELS {
        return (0..ow).for_each(|ox| pixels::<1>(image, weights, offsets, dst, p, oy, ox));
    }
    // Whole blocks, the last one ending at the row's end (overlapping the one before:
    // those pixels are computed twice, to the same bits); one pixel at a time would be
    // eight times slower per pixel, each waiting on its own chain.
    for ox in (0..ow - PIXELS).step_by(PIXELS).chain([ow - PIXELS]) {
        pixels::<PIXELS>(image, weights, offsets, dst, p, oy, ox);
    }
}

/// `P` neighbouring output pixels of row `oy` from `ox` on, every output channel, into
/// `dst` at `o_padded` floats per pixel. Each output is one chain of fused multiply-adds:
/// the bias, then the taps in (ky, kx, channel) order.
#[inline]
#[target_feature(enable = "avx512f")]
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
    // The last element these pixels read; the geometry (Problem::new) keeps it inside the
    // image: checked once here rather than at every load below.
    let last = base + offsets.last().unwrap() + (P - 1) * step;
    assert!(last < image.len() && weights.len() == (offsets.len() + 1) * op);
    assert!(dst.len() >= (ox + P) * op, "row buffer too short");
    let src = image.as_ptr();
    for chunk in (0..op).step_by(LANES) {
        // SAFETY: every load is at most `last` into the image (asserted) or inside the
        // packed weights (taps + 1 rows of `op`), every store inside `dst` (asserted).
        unsafe {
            let mut acc = [_mm512_loadu_ps(weights.as_ptr().add(chunk)); P];
            for (t, &off) in offsets.iter().enumerate() {
                let w = _mm512_loadu_ps(weights.as_ptr().add((t + 1) * op + chunk));
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(*src.add(base + off + j * step));
                    *a = _mm512_fmadd_ps(v, w, *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(dst.as_mut_ptr().add((ox + j) * op + chunk), *a);
            }
        }
    }
}

/// One pooled row from `rows_in` conv rows in `conv` (each `ow * o_padded`): the max
/// over each window, windows clipped at the right edge (Caffe's ceil mode). First the
/// rows' maximum into the first row, then each window's across its columns: both loops
/// are independent operations, not one chain of maxima per window.
#[inline]
#[target_feature(enable = "avx512f")]
fn max_pool_row(conv: &mut [f32], out: &mut [f32], p: &Problem, q: Pooling, rows_in: usize) {
    let (o, op, ow) = (p.o as usize, p.o_padded as usize, p.ow as usize);
    let (ks, s) = (q.kernel as usize, q.stride as usize);
    let row = ow * op;
    assert!(conv.len() >= rows_in * row && out.len() == q.out_w as usize * o && rows_in >= 1);
    let (first, rest) = conv.split_at_mut(row);
    for r in 1..rows_in {
        for (m, v) in first.chunks_exact_mut(LANES).zip(rest[(r - 1) * row..][..row].chunks_exact(LANES)) {
            // SAFETY: both chunks are LANES floats long.
            unsafe {
                let v = _mm512_max_ps(_mm512_loadu_ps(m.as_ptr()), _mm512_loadu_ps(v.as_ptr()));
                _mm512_storeu_ps(m.as_mut_ptr(), v);
            }
        }
    }
    for (px, dst) in out.chunks_exact_mut(o).enumerate() {
        let (left, right) = (px * s, (px * s + ks).min(ow));
        for chunk in (0..op).step_by(LANES) {
            let lanes = LANES.min(o - chunk);
            // SAFETY: columns < ow index inside the first row (asserted); the masked store
            // writes `lanes` floats from `chunk`, inside `dst`'s `o`.
            unsafe {
                let at = |col: usize| _mm512_loadu_ps(first.as_ptr().add(col * op + chunk));
                // The usual 2x2 window without a loop (a loop of one step mispredicts).
                let m = if right == left + 2 {
                    _mm512_max_ps(at(left), at(left + 1))
                } else {
                    (left + 1..right).fold(at(left), |m, col| _mm512_max_ps(m, at(col)))
                };
                let m = rectified(m, q.rectify);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(chunk), (1u32 << lanes).wrapping_sub(1) as u16, m);
            }
        }
    }
}

/// Lane by lane, the first of a 2x2 window's values (row by row) equal to its maximum
/// `max`: the one libtorch's max pool takes, keeping the first strict maximum. Where the
/// maximum is rectified and not above 0, `BLOCKED` instead: ReLU's backward passes
/// nothing there (it passes a gradient where its output is above 0).
#[inline]
#[target_feature(enable = "avx512f")]
fn winner(window: [__m512; 4], max: __m512, rectify: bool) -> __m512i {
    let mut place = _mm512_set1_epi32(3);
    for q in (0..3).rev() {
        let first = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(window[q], max);
        place = _mm512_mask_mov_epi32(place, first, _mm512_set1_epi32(q as i32));
    }
    if rectify {
        let blocked = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(max, _mm512_setzero_ps());
        place = _mm512_mask_mov_epi32(place, blocked, _mm512_set1_epi32(BLOCKED as i32));
    }
    place
}

/// max(m, 0) lane by lane where `rectify` (a NaN stays NaN, as libtorch's relu keeps it:
/// vmaxps returns its second operand when either is NaN).
#[inline]
#[target_feature(enable = "avx512f")]
fn rectified(m: __m512, rectify: bool) -> __m512 {
    if rectify {
        _mm512_max_ps(_mm512_setzero_ps(), m)
    } else {
        m
    }
}
