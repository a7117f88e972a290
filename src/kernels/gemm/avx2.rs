//! The AVX2 loops of the product (`super` says what and why).

use super::{KC, MR, NR};
use std::arch::x86_64::*;

/// One panel of outputs: `c` (`[m][NR]`) = `x` (`[m, k]`) times the panel (`[k][NR]`),
/// plus `bias`, rectified where `rectify`.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn panel(
    x: &[f32],
    w: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    bias: &[f32; NR],
    rectify: bool,
) {
    assert!(x.len() == m * k && w.len() == k * NR && c.len() == m * NR);
    for k0 in (0..k).step_by(KC) {
        let ks = k0..(k0 + KC).min(k);
        for m0 in (0..m).step_by(MR) {
            match (m - m0).min(MR) {
                6 => tile::<6>(x, w, c, m0, ks.clone(), k),
                5 => tile::<5>(x, w, c, m0, ks.clone(), k),
                4 => tile::<4>(x, w, c, m0, ks.clone(), k),
                3 => tile::<3>(x, w, c, m0, ks.clone(), k),
                2 => tile::<2>(x, w, c, m0, ks.clone(), k),
                _ => tile::<1>(x, w, c, m0, ks.clone(), k),
            }
        }
    }
    for row in c.chunks_exact_mut(NR) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if rectify {
                *v = v.max(0.0);
            }
        }
    }
}

/// Rows `m0..m0 + R` over inputs `ks`, continuing the sums in `c` (zeros before the
/// first block: `c` starts zeroed).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile<const R: usize>(
    x: &[f32],
    w: &[f32],
    c: &mut [f32],
    m0: usize,
    ks: std::ops::Range<usize>,
    k: usize,
) {
    assert!(ks.end <= k && (m0 + R - 1) * k + ks.end <= x.len() && ks.end * NR <= w.len());
    assert!((m0 + R) * NR <= c.len());
    let (xp, wp, cp) = (x.as_ptr(), w.as_ptr(), c.as_mut_ptr());
    // SAFETY: every index below is within the bounds asserted above.
    unsafe {
        let mut acc: [[__m256; 2]; R] =
            std::array::from_fn(|r| std::array::from_fn(|h| _mm256_loadu_ps(cp.add((m0 + r) * NR + h * 8))));
        for i in ks {
            let (w0, w1) = (_mm256_loadu_ps(wp.add(i * NR)), _mm256_loadu_ps(wp.add(i * NR + 8)));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*xp.add((m0 + r) * k + i));
                a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                a[1] = _mm256_fmadd_ps(v, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(cp.add((m0 + r) * NR), a[0]);
            _mm256_storeu_ps(cp.add((m0 + r) * NR + 8), a[1]);
        }
    }
}
