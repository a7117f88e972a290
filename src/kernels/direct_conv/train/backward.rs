//! The loops of the fused pair's backward pass, AVX-512 and AVX2 (`super` says what and
//! why). Both add the same products in the same order to each weight: the same bits.

use super::super::{Isa, Problem, BLOCKED, LANES};
use std::arch::x86_64::*;

/// One image's weight and bias gradients, added into `acc` (row 0 the bias, then one row
/// per tap, `o_padded` wide): for each pooled output, its gradient `g` times the input
/// under its window's winner, tap by tap. `x` is the image as the forward pass read it
/// (padded), `wins` and `g` its pooled map's winners and gradient ([h][w][o]).
pub(in super::super) fn image_grad(
    x: &[f32],
    wins: &[u8],
    g: &[f32],
    offsets: &[usize],
    p: &Problem,
    acc: &mut [f32],
) {
    // SAFETY: `conv_max_pool_train` only gets here on a CPU with `p.isa`.
    unsafe {
        match p.isa {
            Isa::Avx512 => image_grad_avx512(x, wins, g, offsets, p, acc),
            Isa::Avx2 => image_grad_avx2(x, wins, g, offsets, p, acc),
        }
    }
}

#[target_feature(enable = "avx512f")]
fn image_grad_avx512(x: &[f32], wins: &[u8], g: &[f32], offsets: &[usize], p: &Problem, acc: &mut [f32]) {
    let (c, s, wp, o, op) =
        (p.c as usize, p.stride as usize, p.wp as usize, p.o as usize, p.o_padded as usize);
    let (ph, pw) = (p.pool.out_h as usize, p.pool.out_w as usize);
    assert!(wins.len() == ph * pw * o && g.len() == wins.len() && acc.len() == (offsets.len() + 1) * op);
    // The last input element read: the last window's bottom-right conv pixel, last tap
    // (the pool lies inside the conv output, which lies inside the padded image).
    let last = ((2 * ph - 1) * s * wp + (2 * pw - 1) * s) * c + offsets.last().unwrap();
    assert!(last < x.len());
    let src = x.as_ptr();
    for (py, px) in (0..ph).flat_map(|py| (0..pw).map(move |px| (py, px))) {
        // Where each of the window's four conv pixels (row by row) starts reading.
        let corner = |q: usize| ((2 * py + q / 2) * s * wp + (2 * px + q % 2) * s) * c;
        let starts = [corner(0), corner(1), corner(2), corner(3)];
        for chunk in (0..o).step_by(LANES) {
            let lanes = LANES.min(o - chunk);
            let mask = ((1u32 << lanes) - 1) as u16;
            let at = (py * pw + px) * o + chunk;
            let mut places = [BLOCKED; LANES];
            places[..lanes].copy_from_slice(&wins[at..][..lanes]);
            // SAFETY: `lanes` gradients from `at` lie inside `g` (asserted sizes); the
            // accumulator rows are `op >= chunk + 16` wide; input reads are at most `last`.
            unsafe {
                let grad = _mm512_maskz_loadu_ps(mask, g.as_ptr().add(at));
                let place = _mm512_cvtepu8_epi32(_mm_loadu_si128(places.as_ptr() as *const __m128i));
                let passed = _mm512_cmplt_epi32_mask(place, _mm512_set1_epi32(BLOCKED as i32));
                let bias = acc.as_mut_ptr().add(chunk);
                _mm512_storeu_ps(
                    bias,
                    _mm512_add_ps(_mm512_loadu_ps(bias), _mm512_maskz_mov_ps(passed, grad)),
                );
                let by_place: [__m512; 4] = std::array::from_fn(|q| {
                    let won = _mm512_cmpeq_epi32_mask(place, _mm512_set1_epi32(q as i32));
                    _mm512_maskz_mov_ps(won, grad)
                });
                for (t, &off) in offsets.iter().enumerate() {
                    let row = acc.as_mut_ptr().add((t + 1) * op + chunk);
                    let mut a = _mm512_loadu_ps(row);
                    for (q, gq) in by_place.iter().enumerate() {
                        a = _mm512_fmadd_ps(*gq, _mm512_set1_ps(*src.add(starts[q] + off)), a);
                    }
                    _mm512_storeu_ps(row, a);
                }
            }
        }
    }
}

/// `image_grad` in 8-float halves of each 16-channel vector: per pooled output, the
/// gradient split by its window's winner, then each tap's row of sums gets its four
/// products (as `image_grad_avx512`, lane by lane).
#[target_feature(enable = "avx2,fma")]
fn image_grad_avx2(x: &[f32], wins: &[u8], g: &[f32], offsets: &[usize], p: &Problem, acc: &mut [f32]) {
    const HALF: usize = LANES / 2;
    let (c, s, wp, o, op) =
        (p.c as usize, p.stride as usize, p.wp as usize, p.o as usize, p.o_padded as usize);
    let (ph, pw) = (p.pool.out_h as usize, p.pool.out_w as usize);
    assert!(wins.len() == ph * pw * o && g.len() == wins.len() && acc.len() == (offsets.len() + 1) * op);
    let last = ((2 * ph - 1) * s * wp + (2 * pw - 1) * s) * c + offsets.last().unwrap();
    assert!(last < x.len());
    let src = x.as_ptr();
    for (py, px) in (0..ph).flat_map(|py| (0..pw).map(move |px| (py, px))) {
        let corner = |q: usize| ((2 * py + q / 2) * s * wp + (2 * px + q % 2) * s) * c;
        let starts = [corner(0), corner(1), corner(2), corner(3)];
        for chunk in (0..o).step_by(HALF) {
            let lanes = HALF.min(o - chunk);
            let at = (py * pw + px) * o + chunk;
            // Lanes past `o` get no gradient and a blocked winner: they add zeros.
            let mut grads = [0f32; HALF];
            grads[..lanes].copy_from_slice(&g[at..][..lanes]);
            let mut places = [BLOCKED as i32; HALF];
            places.iter_mut().zip(&wins[at..][..lanes]).for_each(|(p, &w)| *p = w as i32);
            // SAFETY: the accumulator rows are `op >= chunk + 8` wide; input reads are at
            // most `last` (asserted).
            unsafe {
                let grad = _mm256_loadu_ps(grads.as_ptr());
                let place = _mm256_loadu_si256(places.as_ptr() as *const __m256i);
                let only = |q: i32| {
                    let won = _mm256_cmpeq_epi32(place, _mm256_set1_epi32(q));
                    _mm256_and_ps(_mm256_castsi256_ps(won), grad)
                };
                let passed = _mm256_cmpgt_epi32(_mm256_set1_epi32(BLOCKED as i32), place);
                let bias = acc.as_mut_ptr().add(chunk);
                let g_passed = _mm256_and_ps(_mm256_castsi256_ps(passed), grad);
                _mm256_storeu_ps(bias, _mm256_add_ps(_mm256_loadu_ps(bias), g_passed));
                let by_place: [__m256; 4] = std::array::from_fn(|q| only(q as i32));
                for (t, &off) in offsets.iter().enumerate() {
                    let row = acc.as_mut_ptr().add((t + 1) * op + chunk);
                    let mut a = _mm256_loadu_ps(row);
                    for (q, gq) in by_place.iter().enumerate() {
                        a = _mm256_fmadd_ps(*gq, _mm256_broadcast_ss(&*src.add(starts[q] + off)), a);
                    }
                    _mm256_storeu_ps(row, a);
                }
            }
        }
    }
}
