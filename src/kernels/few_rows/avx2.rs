//! The AVX2 loops of the few-rows linear (`super` says what and why), for CPUs without
//! AVX-512. Each dot product runs over 16-float slices as the AVX-512 loop's does, each
//! slice as two 8-float registers (two accumulator chains per row), reduced across lanes
//! at the end: with 16 registers, fewer weight rows run side by side the more rows `x` has.

use std::arch::x86_64::*;

/// Floats per slice of a row (two registers).
const SLICE: usize = 16;

/// Outputs of weight rows `first..` for every one of the `m` rows of `x`, into `out` as
/// the output's transpose: `out[(j - first) * m + r]` is row `r`'s output `j`; each
/// rectified (max(., 0), NaN kept) where `rectify`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `m` rows of `k` values, `w` at least the rows
/// `first..first + out.len() / m` of `k` values, `b` (if any) one value per weight row.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    first: usize,
    rectify: bool,
) {
    // Weight rows side by side: 2 * NB * M accumulators, 2 * M registers of `x`, 2 of weights.
    match m {
        1 => rows_of::<4, 1>(x, w, b, out, first),
        2 => rows_of::<2, 2>(x, w, b, out, first),
        3 => rows_of::<1, 3>(x, w, b, out, first),
        _ => rows_of::<1, 4>(x, w, b, out, first),
    }
    if rectify {
        // ReLU as libtorch's: negatives to 0, NaN passes.
        out.iter_mut().filter(|v| **v < 0.0).for_each(|v| *v = 0.0);
    }
}

#[target_feature(enable = "avx2,fma")]
fn rows_of<const NB: usize, const M: usize>(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    first: usize,
) {
    let k = x.len() / M;
    let n = out.len() / M;
    assert!(x.len() == M * k && w.len() >= (first + n) * k && b.is_none_or(|b| b.len() >= first + n));
    let mut j = 0;
    while j + NB <= n {
        block::<NB, M>(x, w, b, &mut out[j * M..(j + NB) * M], first + j, k);
        j += NB;
    }
    for j in j..n {
        block::<1, M>(x, w, b, &mut out[j * M..(j + 1) * M], first + j, k);
    }
}

/// `NB` weight rows from `row` on against the `M` rows of `x`; `rows_of` checked the bounds.
/// Each slice of a weight row is loaded once and multiplied with each row of `x` read
/// from memory as it is used: with four rows (LeNet's conv5 at batch 1: 2x2 pixels) the
/// loop that held all of `x`'s slice in registers needed 18 of the 16 and spilled, and
/// the patches' product took 50-55 against 44-46 us timed alone (same sums in the same
/// order: the same bits).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn block<const NB: usize, const M: usize>(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    row: usize,
    k: usize,
) {
    let mut acc = [[[_mm256_setzero_ps(); 2]; M]; NB];
    let (full, tail) = (k / SLICE, k % SLICE);
    let xs: [*const f32; M] = std::array::from_fn(|r| x[r * k..].as_ptr());
    let ws: [*const f32; NB] = std::array::from_fn(|i| w[(row + i) * k..].as_ptr());
    #[inline(always)]
    fn slice<const NB: usize, const M: usize>(
        acc: &mut [[[__m256; 2]; M]; NB],
        xs: &[*const f32; M],
        ws: &[*const f32; NB],
        load: impl Fn(*const f32, usize) -> __m256,
    ) {
        for (acc, &wp) in acc.iter_mut().zip(ws) {
            let wv = [load(wp, 0), load(wp, 1)];
            for (a, &xp) in acc.iter_mut().zip(xs) {
                // SAFETY: as the caller's loads.
                unsafe {
                    a[0] = _mm256_fmadd_ps(wv[0], load(xp, 0), a[0]);
                    a[1] = _mm256_fmadd_ps(wv[1], load(xp, 1), a[1]);
                }
            }
        }
    }
    // No software prefetch, unlike the AVX-512 loop: on this AMD EPYC (Zen 3) the next
    // block's rows asked for a block ahead made VGG's fc1 (42 MB of weights, from memory)
    // slower timed alone, 1,460 -> 985 us without (two threads, min of 9 alternated
    // rounds), and the baseline's predictions were faster without in 4 of 5 alternated
    // `fkpnet bench --batch 1` pairs.
    for v in 0..full {
        let o = v * SLICE;
        // SAFETY: lanes o..o + 16 lie inside every row (v < full).
        slice(&mut acc, &xs, &ws, |p, half| unsafe { _mm256_loadu_ps(p.add(o + half * 8)) });
    }
    if tail > 0 {
        let o = full * SLICE;
        let masks = [lane_mask(tail.min(8)), lane_mask(tail.saturating_sub(8))];
        // SAFETY: the masks select lanes inside every row.
        slice(&mut acc, &xs, &ws, |p, half| unsafe { _mm256_maskload_ps(p.add(o + half * 8), masks[half]) });
    }
    for (i, acc) in acc.iter().enumerate() {
        let bias = b.map_or(0.0, |b| b[row + i]);
        for (r, a) in acc.iter().enumerate() {
            out[i * M + r] = sum_of_16(a) + bias;
        }
    }
}

/// The 16 lanes' sum, halves first: 8 + 8, 4 + 4, 2 + 2, 1 + 1.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_of_16(a: &[__m256; 2]) -> f32 {
    let eight = _mm256_add_ps(a[0], a[1]);
    let four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps::<1>(eight));
    let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    _mm_cvtss_f32(two) + _mm_cvtss_f32(_mm_shuffle_ps::<1>(two, two))
}

/// A mask of the first `n` (0-8) of 8 lanes, for `_mm256_maskload_ps`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_mask(n: usize) -> __m256i {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
}
