//! The AVX2 loops of the transforms (`super` says what and why), 8 channels at a time.

use super::{Output, Problem};
use std::arch::x86_64::*;

const LANES: usize = 8;

/// The input transform `B^T d B` of the blocks of row `ty` of image `img` into `v`
/// (`[16, tiles, c]`), block `tx` at `first + tx`. Input outside the image reads as 0
/// (the conv's zero padding).
///
/// # Safety
/// The CPU has AVX2 and FMA; `input` is the call's dense NHWC input of `p`; `v` holds
/// `16 * tiles * p.c` floats and `first + p.tw <= tiles`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn input_row(
    input: &[f32],
    p: &Problem,
    img: usize,
    ty: usize,
    v: *mut f32,
    tiles: usize,
    first: usize,
) {
    assert!(input.len() == p.n * p.h * p.w * p.c && first + p.tw <= tiles && p.c % LANES == 0);
    let zeros = vec![0f32; p.c];
    let row = |i: usize| (2 * ty + i).checked_sub(p.pad).filter(|&y| y < p.h);
    let rows = [row(0), row(1), row(2), row(3)];
    for tx in 0..p.tw {
        let mut src = [zeros.as_ptr(); 16];
        for (i, y) in rows.iter().enumerate() {
            let Some(y) = *y else { continue };
            for j in 0..4 {
                if let Some(x) = (2 * tx + j).checked_sub(p.pad).filter(|&x| x < p.w) {
                    src[4 * i + j] = input[((img * p.h + y) * p.w + x) * p.c..][..p.c].as_ptr();
                }
            }
        }
        // SAFETY: each source holds `c` floats; each plane's block `first + tx` is inside `v`.
        unsafe {
            let dst = v.add((first + tx) * p.c);
            let plane = tiles * p.c;
            for cb in (0..p.c).step_by(LANES) {
                let d: [__m256; 16] = std::array::from_fn(|k| _mm256_loadu_ps(src[k].add(cb)));
                // B^T d: rows.
                let mut t = [_mm256_setzero_ps(); 16];
                for j in 0..4 {
                    let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
                    t[j] = _mm256_sub_ps(d0, d2);
                    t[4 + j] = _mm256_add_ps(d1, d2);
                    t[8 + j] = _mm256_sub_ps(d2, d1);
                    t[12 + j] = _mm256_sub_ps(d1, d3);
                }
                // (B^T d) B: columns.
                for i in 0..4 {
                    let (a, b, c, e) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                    let out =
                        [_mm256_sub_ps(a, c), _mm256_add_ps(b, c), _mm256_sub_ps(c, b), _mm256_sub_ps(b, e)];
                    for (j, o) in out.into_iter().enumerate() {
                        _mm256_storeu_ps(dst.add((4 * i + j) * plane + cb), o);
                    }
                }
            }
        }
    }
}

/// The output transform `A^T m A` of blocks `first..first + tw` of `m` (`[16, tiles, o]`)
/// plus the bias, into `rows`: a row of blocks' one or two output rows (the map's last
/// row may be alone), or its pooled row.
///
/// # Safety
/// The CPU has AVX2 and FMA; `p.o % 8 == 0`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output_row(
    m: &[f32],
    bias: &[f32],
    p: &Problem,
    tiles: usize,
    first: usize,
    out: Output,
    rows: &mut [f32],
) {
    let o = p.o;
    assert!(m.len() == 16 * tiles * o && first + p.tw <= tiles && bias.len() == o && o % LANES == 0);
    let (width, two_rows) = match out {
        Output::Conv { .. } => (p.ow, rows.len() == 2 * p.ow * o),
        Output::Pooled { .. } => (p.tw, false),
    };
    assert!(rows.len() == if two_rows { 2 } else { 1 } * width * o);
    let zero = _mm256_setzero_ps();
    let relu = |y: __m256| _mm256_max_ps(zero, y); // NaN kept: max_ps returns its second operand then
    let plane = tiles * o;
    for tx in 0..p.tw {
        let at = (first + tx) * o;
        for ob in (0..o).step_by(LANES) {
            // SAFETY: the asserts above bound every index.
            unsafe {
                let mv: [__m256; 16] =
                    std::array::from_fn(|k| _mm256_loadu_ps(m.as_ptr().add(k * plane + at + ob)));
                // A^T m: two rows of four.
                let s: [[__m256; 4]; 2] = std::array::from_fn(|r| {
                    std::array::from_fn(|j| {
                        let (m0, m1, m2, m3) = (mv[j], mv[4 + j], mv[8 + j], mv[12 + j]);
                        if r == 0 {
                            _mm256_add_ps(_mm256_add_ps(m0, m1), m2)
                        } else {
                            _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3)
                        }
                    })
                });
                let b = _mm256_loadu_ps(bias.as_ptr().add(ob));
                // (A^T m) A, plus the bias: y[r][c].
                let y: [[__m256; 2]; 2] = std::array::from_fn(|r| {
                    let [a, bb, c, d] = s[r];
                    [
                        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a, bb), c), b),
                        _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(bb, c), d), b),
                    ]
                });
                match out {
                    Output::Conv { rectify } => {
                        let f = |v: __m256| if rectify { relu(v) } else { v };
                        for (r, line) in y.iter().enumerate().take(if two_rows { 2 } else { 1 }) {
                            for (c, val) in line.iter().enumerate() {
                                let x = 2 * tx + c;
                                if x < p.ow {
                                    _mm256_storeu_ps(rows.as_mut_ptr().add((r * p.ow + x) * o + ob), f(*val));
                                }
                            }
                        }
                    }
                    Output::Pooled { rectify } => {
                        let top = nan_max(y[0][0], y[0][1]);
                        let max = nan_max(top, nan_max(y[1][0], y[1][1]));
                        let max = if rectify { relu(max) } else { max };
                        _mm256_storeu_ps(rows.as_mut_ptr().add(tx * o + ob), max);
                    }
                }
            }
        }
    }
}

/// The larger of `a` and `b` lane by lane, NaN where either is NaN (as libtorch's max pool).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nan_max(a: __m256, b: __m256) -> __m256 {
    // max_ps gives `b` where either is NaN; where `a` is NaN, take `a`.
    _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a))
}

/// The transform `A dy A^T` of the output gradient's 2x2 blocks of row `ty` of image
/// `img` into `z` (`[16, tiles, o]`), block `tx` at `first + tx`: the adjoint of the
/// output transform, so `z` is the gradient of the products `m`. Outputs past the map's
/// edge (a last odd row or column) read as 0: the forward pass dropped them.
///
/// # Safety
/// The CPU has AVX2 and FMA; `dy` is the dense NHWC gradient of `p`'s output
/// (`n * oh * ow * o` floats); `z` holds `16 * tiles * p.o` floats and
/// `first + p.tw <= tiles`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gradient_row(
    dy: &[f32],
    p: &Problem,
    img: usize,
    ty: usize,
    z: *mut f32,
    tiles: usize,
    first: usize,
) {
    let o = p.o;
    assert!(dy.len() == p.n * p.oh * p.ow * o && first + p.tw <= tiles && o % LANES == 0);
    let zeros = vec![0f32; o];
    let plane = tiles * o;
    for tx in 0..p.tw {
        let mut src = [zeros.as_ptr(); 4];
        for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (y, x) = (2 * ty + a, 2 * tx + b);
            if y < p.oh && x < p.ow {
                src[2 * a + b] = dy[((img * p.oh + y) * p.ow + x) * o..][..o].as_ptr();
            }
        }
        // SAFETY: each source holds `o` floats; each plane's block `first + tx` is inside `z`.
        unsafe {
            let dst = z.add((first + tx) * o);
            let zero = _mm256_setzero_ps();
            for ob in (0..o).step_by(LANES) {
                let d: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(src[k].add(ob)));
                // A d: four rows of two (A's rows: [1, 0], [1, 1], [1, -1], [0, -1]).
                let t: [[__m256; 2]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|b| {
                        let (d0, d1) = (d[b], d[2 + b]);
                        match i {
                            0 => d0,
                            1 => _mm256_add_ps(d0, d1),
                            2 => _mm256_sub_ps(d0, d1),
                            _ => _mm256_sub_ps(zero, d1),
                        }
                    })
                });
                // (A d) A^T: columns the same way.
                for (i, [t0, t1]) in t.into_iter().enumerate() {
                    let out = [t0, _mm256_add_ps(t0, t1), _mm256_sub_ps(t0, t1), _mm256_sub_ps(zero, t1)];
                    for (j, v) in out.into_iter().enumerate() {
                        _mm256_storeu_ps(dst.add((4 * i + j) * plane + ob), v);
                    }
                }
            }
        }
    }
}

/// The 16 products of one row of `tiles` blocks, in registers: `m[k][t][o] = sum over c
/// of v[k][t][c] u[k][c][o]` (`v` `[16, tiles, c]`, `u` `[16, c, o]`, `m` `[16, tiles,
/// o]`), up to six blocks by 16 outputs at a time (12 accumulators; per channel two
/// weight loads and six broadcasts feed 12 multiply-adds), each output one chain of fused
/// multiply-adds over the channels in order. Against two blocks by 32 outputs (8
/// accumulators, each position's weights read once per pair of blocks: LeNet's conv4
/// read its 512 KB twice per row), whole batch-1 passes alternated in one process: LeNet
/// 383 / 404, 477 / 519, 360 / 391 us; VGG 10.6 / 11.1 ms; the same sums, the same bits.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn row_products(v: &[f32], u: &[f32], m: &mut [f32], tiles: usize, c: usize, o: usize) {
    assert!(
        v.len() == 16 * tiles * c && u.len() == 16 * c * o && m.len() == 16 * tiles * o && o % LANES == 0
    );
    for k in 0..16 {
        let (vk, uk) = (&v[k * tiles * c..][..tiles * c], &u[k * c * o..][..c * o]);
        let mk = &mut m[k * tiles * o..][..tiles * o];
        for t in (0..tiles).step_by(6) {
            for ob in (0..o).step_by(2 * LANES) {
                match ((tiles - t).min(6), o - ob >= 2 * LANES) {
                    (6, true) => products::<6, 2>(vk, uk, mk, t, ob, c, o),
                    (5, true) => products::<5, 2>(vk, uk, mk, t, ob, c, o),
                    (4, true) => products::<4, 2>(vk, uk, mk, t, ob, c, o),
                    (3, true) => products::<3, 2>(vk, uk, mk, t, ob, c, o),
                    (2, true) => products::<2, 2>(vk, uk, mk, t, ob, c, o),
                    (_, true) => products::<1, 2>(vk, uk, mk, t, ob, c, o),
                    (6, false) => products::<6, 1>(vk, uk, mk, t, ob, c, o),
                    (5, false) => products::<5, 1>(vk, uk, mk, t, ob, c, o),
                    (4, false) => products::<4, 1>(vk, uk, mk, t, ob, c, o),
                    (3, false) => products::<3, 1>(vk, uk, mk, t, ob, c, o),
                    (2, false) => products::<2, 1>(vk, uk, mk, t, ob, c, o),
                    (_, false) => products::<1, 1>(vk, uk, mk, t, ob, c, o),
                }
            }
        }
    }
}

/// Blocks `t..t + T`, outputs `ob..ob + 8 N` of one position's products.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn products<const T: usize, const N: usize>(
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
    t: usize,
    ob: usize,
    c: usize,
    o: usize,
) {
    assert!((t + T) * c <= v.len() && ob + N * LANES <= o && c * o <= u.len() && (t + T) * o <= m.len());
    let (vp, up, mp) = (v.as_ptr(), u.as_ptr(), m.as_mut_ptr());
    // SAFETY: every index below is within the bounds asserted above.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); N]; T];
        for ci in 0..c {
            let w: [__m256; N] = std::array::from_fn(|j| _mm256_loadu_ps(up.add(ci * o + ob + j * LANES)));
            for (r, a) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*vp.add((t + r) * c + ci));
                for (s, wj) in a.iter_mut().zip(&w) {
                    *s = _mm256_fmadd_ps(x, *wj, *s);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, s) in a.iter().enumerate() {
                _mm256_storeu_ps(mp.add((t + r) * o + ob + j * LANES), *s);
            }
        }
    }
}
