//! The AVX-512 loops of the few-rows linear (`super` says what and why).

use std::arch::x86_64::*;

/// f32 per vector.
const LANES: usize = 16;
/// Weight rows whose dot products run side by side (independent accumulator chains).
const BLOCK: usize = 4;

/// Outputs of weight rows `first..` for every one of the `m` rows of `x`, into `out` as
/// the output's transpose: `out[(j - first) * m + r]` is row `r`'s output `j`; each
/// rectified (max(., 0), NaN kept) where `rectify`.
///
/// # Safety
/// The CPU has AVX-512F; `x` holds `m` rows of `k` values, `w` at least the rows
/// `first..first + out.len() / m` of `k` values, `b` (if any) one value per weight row.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    first: usize,
    rectify: bool,
) {
    match m {
        1 => rows_of::<1>(x, w, b, out, first),
        2 => rows_of::<2>(x, w, b, out, first),
        3 => rows_of::<3>(x, w, b, out, first),
        _ => rows_of::<4>(x, w, b, out, first),
    }
    if rectify {
        // ReLU as libtorch's: negatives to 0, NaN passes.
        out.iter_mut().filter(|v| **v < 0.0).for_each(|v| *v = 0.0);
    }
}

#[target_feature(enable = "avx512f")]
fn rows_of<const M: usize>(x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32], first: usize) {
    let k = x.len() / M;
    let n = out.len() / M;
    assert!(x.len() == M * k && w.len() >= (first + n) * k && b.is_none_or(|b| b.len() >= first + n));
    let mut j = 0;
    while j + BLOCK <= n {
        block::<BLOCK, M>(x, w, b, &mut out[j * M..(j + BLOCK) * M], first + j, k);
        j += BLOCK;
    }
    for j in j..n {
        block::<1, M>(x, w, b, &mut out[j * M..(j + 1) * M], first + j, k);
    }
}

/// `NB` weight rows from `row` on against the `M` rows of `x`; `rows_of` checked the bounds.
#[inline]
#[target_feature(enable = "avx512f")]
fn block<const NB: usize, const M: usize>(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    row: usize,
    k: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); M]; NB];
    let (full, tail) = (k / LANES, k % LANES);
    // The last partial vector is read through a mask: lanes past `k` count as zeros.
    let mask: __mmask16 = ((1u32 << tail) - 1) as u16;
    for v in 0..full + (tail > 0) as usize {
        let (o, m) = (v * LANES, if v < full { !0 } else { mask });
        let mut xv = [_mm512_setzero_ps(); M];
        for (r, xv) in xv.iter_mut().enumerate() {
            // SAFETY: lanes `o..o + 16` of row `r` that `m` selects lie inside `x`.
            *xv = unsafe { _mm512_maskz_loadu_ps(m, x.as_ptr().add(r * k + o)) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: weight row `row + i` exists (`rows_of`), and so do its selected lanes.
            let wv = unsafe { _mm512_maskz_loadu_ps(m, w.as_ptr().add((row + i) * k + o)) };
            // The next block's rows, a block ahead: rows of a few KB are too short for
            // the hardware prefetcher to get going (a prefetch never faults, so past the
            // last row it is harmless; the pointer is only formed, never read).
            let ahead = w.as_ptr().wrapping_add((row + i + NB) * k + o);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            for (a, xv) in acc.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(wv, *xv, *a);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let bias = b.map_or(0.0, |b| b[row + i]);
        for (r, a) in acc.iter().enumerate() {
            out[i * M + r] = _mm512_reduce_add_ps(*a) + bias;
        }
    }
}
