//! The AVX-512 loop of the fused pair's backward pass (`super` says what and why).

use super::super::{Problem, BLOCKED, LANES};
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
    // SAFETY: `conv_max_pool_train` only gets here on a CPU with AVX-512F.
    unsafe { image_grad_avx512(x, wins, g, offsets, p, acc) }
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
