//! A 3x3 convolution (stride 1) for predictions by Winograd's minimal filtering
//! F(2x2, 3x3), on CPUs with AVX2 and no AVX-512, for convs of `MIN_CHANNELS` or more
//! input channels: all of VGG's convs but its first, LeNet's conv3 and conv4, and for
//! convs of 8-24 channels of a single image (LeNet's conv2; `dispatch` says why).
//!
//! Why: a direct convolution (oneDNN's, MLAS's in onnxruntime, `wide_conv`) does 9
//! multiply-adds per input channel and output value and runs near the CPU's peak already
//! (VGG at batch 64 on an AMD EPYC, Zen 3: `wide_conv` and onnxruntime both about 180
//! GFLOP/s). Winograd's F(2x2, 3x3) computes each 2x2 block of outputs from a 4x4 block
//! of input with 16 products per channel pair instead of 36, 2.25x fewer; the rest is
//! additions. Each 4x4 input block is transformed (`B^T d B`), the weights once
//! (`G g G^T`, kept while the weight tensor is unchanged), the 16 products are 16 matrix
//! products of (blocks x input channels) by (input channels x output channels), libtorch's
//! `bmm` (MKL), and each 4x4 block of products is transformed back (`A^T m A`) to 2x2
//! outputs, with the bias, the ReLU and a 2x2 max pool applied as they are written.
//!
//! Training uses the same transforms (`layers::conv`): the input's gradient is this conv
//! of the output's gradient with the flipped weights (`input_grad`), and the weight's
//! gradient (`weight_grad`) runs the three transforms' adjoints: `A dy A^T` of each 2x2
//! block of the output's gradient, its 16 products with the transformed input summed
//! over the batch, and `G^T m G` once at the end.
//!
//! Numbers: the transforms reorder the sums, so outputs differ from a direct conv's in
//! the last bits (the tests bound the largest difference by 1e-5 of the largest output).

use super::direct_conv::{Geometry, Pooling};
use super::Isa;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod gradients;

pub use gradients::{input_grad, weight_grad};

/// The fewest input channels taken. Measured on an AMD EPYC (Zen 3), two threads, batch
/// 64, alternated against `wide_conv` in one process (least disturbed of 5 rounds): 64
/// input channels (VGG's conv1_2 + pool1, conv2_1; LeNet's conv4 + pool4) 1.09-1.44x
/// faster, 32 (LeNet's conv3 + pool3) 1.33x; below 32 `direct_conv` takes a net's
/// first convs (LeNet's conv2 has 16) but for a single image (`dispatch`).
pub const MIN_CHANNELS: i64 = 32;

/// The transformed input of one part of a call is at most this large (the rows of
/// blocks of the batch are taken a part at a time), so that it and the products stay
/// in the caches between the stages. VGG at batch 64, least disturbed of 5 rounds, parts
/// of 1, 2, 4 and 16 MB: conv2_2 + pool2 102, 99, 105, 121 ms; conv3_2 + pool3 60, 56,
/// 57, 58; conv1_2 + pool1 159, 164, 167, 199 (64 MB: 2-5x slower).
const PART_BYTES: usize = 2 << 20;

/// Sizes of one call.
struct Problem {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    /// Blocks of 2x2 outputs computed per image, down and across.
    th: usize,
    tw: usize,
}

impl Problem {
    /// The sizes of an `[n, c, h, w]` input, `o` outputs and padding `pad` (all checked
    /// positive by the caller), with `blocks` of 2x2 outputs computed per image (down,
    /// across).
    fn new([n, c, h, w]: [i64; 4], o: i64, pad: i64, blocks: (i64, i64)) -> Problem {
        let u = |v: i64| v as usize;
        Problem {
            n: u(n),
            c: u(c),
            o: u(o),
            h: u(h),
            w: u(w),
            pad: u(pad),
            oh: u(h + 2 * pad - 2),
            ow: u(w + 2 * pad - 2),
            th: u(blocks.0),
            tw: u(blocks.1),
        }
    }

    /// The rows and columns of what `out` writes: the conv's, or the pooled map's.
    fn output_size(&self, out: Output) -> (usize, usize) {
        match out {
            Output::Conv { .. } => (self.oh, self.ow),
            Output::Pooled { .. } => (self.th, self.tw),
        }
    }
}

/// A conv's transformed weights (`[16, c, o]`), kept between calls while the weight
/// tensor is unchanged (its data pointer and libtorch's version counter).
#[derive(Default)]
pub struct Packed {
    cache: Mutex<Option<((usize, i64), Tensor)>>,
}

impl Packed {
    fn of(&self, w: &Tensor) -> Tensor {
        let key = (w.data_ptr() as usize, w.internal_version());
        let mut cache = self.cache.lock().expect("not poisoned");
        if let Some((k, u)) = &*cache {
            if *k == key {
                return u.shallow_clone();
            }
        }
        let u = transformed_weights(w);
        *cache = Some((key, u.shallow_clone()));
        u
    }
}

/// `G g G^T` for each (output, input) channel pair's 3x3 kernel `g`, as `[16, c, o]`:
/// position (i, j) of the 4x4 transform at `4 i + j`.
fn transformed_weights(w: &Tensor) -> Tensor {
    let g =
        Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0]).view([4, 3]);
    let (o, c) = (w.size()[0], w.size()[1]);
    tch::no_grad(|| {
        g.matmul(&w.contiguous()).matmul(&g.tr()).view([o, c, 16]).permute([2, 1, 0]).contiguous()
    })
}

/// `conv2d(x, w, b)` then max(., 0) where `rectify`; `None` where it does not apply (the
/// caller then uses another kernel or libtorch): see `prepare`. The output has
/// channels-last strides.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    rectify: bool,
    packed: &Packed,
) -> Option<Tensor> {
    let p = prepare(x, w, b, g, None)?;
    dispatch(x, b, &p, packed, w, Output::Conv { rectify })
}

/// `max_pool2d(conv2d(x, w, b), pool)` (rectified where `pool.rectify`) for a 2x2 pool of
/// stride 2 whose windows all lie inside the conv output (the pool rounding down, or up
/// on an even map): each window is one block of the transform's outputs, so only its
/// maximum is written, and a last odd row or column of the conv is never computed.
/// `None` for other pools and where `conv2d` declines.
pub fn conv_max_pool(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Pooling,
    packed: &Packed,
) -> Option<Tensor> {
    let p = prepare(x, w, b, g, Some(pool))?;
    dispatch(x, b, &p, packed, w, Output::Pooled { rectify: pool.rectify })
}

/// Whether `t` is a dense 4-d tensor with channels-last strides.
fn dense_channels_last(t: &Tensor) -> bool {
    let s = t.size();
    s.len() == 4 && t.stride() == [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]]
}

/// What is written of each 2x2 block of outputs.
#[derive(Clone, Copy)]
enum Output {
    /// All four (those inside the map), each through max(., 0) where `rectify`.
    Conv { rectify: bool },
    /// Their maximum, through max(., 0) where `rectify`.
    Pooled { rectify: bool },
}

/// The sizes of a call that applies: an AVX2 CPU without AVX-512 (measured there only),
/// no gradient wanted, float32 on the CPU, a dense channels-last input of at least
/// 8 channels (a multiple of 8; `dispatch` asks for more), a 3x3 kernel of stride 1 and dilation 1,
/// a multiple of 8 output channels, a bias of one per output, and more output pixels
/// than `few_rows` takes (it is the faster on a few).
fn prepare(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Option<Pooling>,
) -> Option<Problem> {
    if super::isa()? != Isa::Avx2 || !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 4 || ws.len() != 4 || ws[1] != xs[1] || ws[2..] != [3, 3] || xs[0] < 1 {
        return None;
    }
    let (n, c, h, wd, o) = (xs[0], xs[1], xs[2], xs[3], ws[0]);
    if c < 8 || c % 8 != 0 || o < 1 || o % 8 != 0 {
        return None;
    }
    if g.stride != 1
        || g.dilation != 1
        || g.pad < 0
        || !b.is_none_or(|b| b.size() == [o] && b.is_contiguous())
    {
        return None;
    }
    if !dense_channels_last(x) {
        return None;
    }
    let (oh, ow) = (h + 2 * g.pad - 2, wd + 2 * g.pad - 2);
    if oh < 1 || ow < 1 || n * oh * ow <= super::few_rows::MAX_ROWS {
        return None;
    }
    let (th, tw) = match pool {
        None => ((oh + 1) / 2, (ow + 1) / 2),
        Some(pl) => {
            let whole = pl.out_h >= 1 && pl.out_w >= 1 && 2 * pl.out_h <= oh && 2 * pl.out_w <= ow;
            if pl.kernel != 2 || pl.stride != 2 || !whole {
                return None;
            }
            (pl.out_h, pl.out_w)
        }
    };
    Some(Problem::new([n, c, h, wd], o, g.pad, (th, tw)))
}

/// A raw pointer the tasks of one parallel loop write through, each to its own elements.
struct Shared(*mut f32);
// SAFETY: the loops below give each task disjoint elements to write.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// The fused loop (`run_fused`) where the transformed weights fit
/// `FUSED_MAX_WEIGHT_BYTES`, else the matrix products in parts (`run`), which need
/// `MIN_CHANNELS` input channels. Fewer channels (8-24) only for a single image.
///
/// Measured on an AMD EPYC (Zen 3), alternated in one process (least disturbed of 7-9
/// rounds), fused against products in parts: LeNet's conv3 + pool3 (32 -> 64 channels)
/// 54 against 70 us at batch 1, 3.6 against 4.1 ms at batch 64; VGG's conv1_2 + pool1
/// (64 -> 64) 1.98 against 2.21 ms at batch 1, level at 64; with 8,192 channel pairs
/// (LeNet's conv4, VGG's conv2_1) 1.04-1.11x at batch 1 but 0.86x for conv4 at batch 64
/// (so 8,192 for one image only, `FUSED_MAX_WEIGHT_BYTES_ONE_IMAGE`), with 16,384 (VGG's
/// conv2_2) 0.84-0.89x. With 8-16 input channels against
/// `direct_conv` and `wide_conv`: LeNet's conv2 + pool2 (16 -> 32) 90 against 101 us at
/// batch 1, but 6.7 against 6.4 ms at batch 64; the plain conv 1.09x (16 channels) and
/// 1.12x (8) at batch 1, 0.96x and 0.86x at batch 4.
fn dispatch(
    x: &Tensor,
    b: Option<&Tensor>,
    p: &Problem,
    packed: &Packed,
    w: &Tensor,
    out: Output,
) -> Option<Tensor> {
    let few_channels = (p.c as i64) < MIN_CHANNELS;
    if few_channels && p.n > FEW_CHANNELS_MAX_BATCH {
        return None;
    }
    let limit = if p.n == 1 { FUSED_MAX_WEIGHT_BYTES_ONE_IMAGE } else { FUSED_MAX_WEIGHT_BYTES };
    let fused = 16 * p.c * p.o * 4 <= limit;
    if fused {
        return Some(run_fused(x, b, p, &packed.of(w), out));
    }
    (!few_channels).then(|| run(x, b, p, &packed.of(w), out))
}

/// The largest transformed weights (`16 * c * o` floats: 4,096 channel pairs) the fused
/// loop takes.
const FUSED_MAX_WEIGHT_BYTES: usize = 256 << 10;

/// The same for a single image (8,192 channel pairs: LeNet's conv4, VGG's conv2_1), where
/// libtorch's products cost more than they compute. Whole batch-1 passes alternated in
/// one process against 4,096 (least disturbed of 25 rounds): LeNet 275 / 289, 288 / 295,
/// 413 / 432 us; VGG 10.1 / 10.8, 9.3 / 9.6 ms.
const FUSED_MAX_WEIGHT_BYTES_ONE_IMAGE: usize = 512 << 10;

/// The most images a conv of fewer than `MIN_CHANNELS` input channels is taken for.
const FEW_CHANNELS_MAX_BATCH: usize = 1;

/// The call a row of blocks at a time, each task's row transformed into a buffer of its
/// own, multiplied by the weights in registers (`avx2::row_products`) and transformed
/// back: no matrix products of libtorch's, whose calls cost more than they compute
/// where the channels are few.
fn run_fused(x: &Tensor, b: Option<&Tensor>, p: &Problem, u: &Tensor, out: Output) -> Tensor {
    let (oh, ow) = p.output_size(out);
    let (input, weights) = (super::data(x), super::data(u));
    let zeros = vec![0f32; p.o];
    let bias = b.map(super::data).unwrap_or(&zeros);
    super::channels_last_output(p.n as i64, p.o, oh, ow, |dst| {
        let slots = row_slots(dst, p, out);
        super::parallel_for(p.n * p.th, &|i| {
            let mut rows = slots[i].lock().expect("one task per row of blocks");
            let (img, ty) = (i / p.th, i % p.th);
            ROW_BUFFERS.with_borrow_mut(|(v, m)| {
                v.resize(16 * p.tw * p.c, 0.0);
                m.resize(16 * p.tw * p.o, 0.0);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `prepare` checked AVX2 and the sizes; `v` holds the row's `16 * tw`
                // blocks of `c` floats, `m` of `o`, `rows` is this row's output.
                unsafe {
                    avx2::input_row(input, p, img, ty, v.as_mut_ptr(), p.tw, 0);
                    avx2::row_products(v, weights, m, p.tw, p.c, p.o);
                    avx2::output_row(m, bias, p, p.tw, 0, out, &mut rows)
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("{:?}", (img, ty, v, m, weights.len(), bias.len(), rows.len()))
            })
        });
    })
}

thread_local! {
    /// A fused task's transformed row and its products (`v`, `m`), kept for the thread's
    /// next task: `input_row` and `row_products` write every element before it is read,
    /// and fresh zeroed ones per task (67 KB for LeNet's conv2 at batch 1, 22 tasks a
    /// pass) made `memset` 3% of a batch-1 pass's profile.
    static ROW_BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
}

/// One slot per row of blocks of each image in `dst` (the call's output): the output
/// rows it writes, two conv rows (the map's last may be one) or one pooled row.
fn row_slots<'a>(dst: &'a mut [f32], p: &Problem, out: Output) -> Vec<Mutex<&'a mut [f32]>> {
    let (oh, ow) = p.output_size(out);
    let rows_per_block = if matches!(out, Output::Conv { .. }) { 2 } else { 1 };
    let slots: Vec<Mutex<&mut [f32]>> = dst
        .chunks_mut(oh * ow * p.o)
        .flat_map(|image| image.chunks_mut(rows_per_block * ow * p.o))
        .map(Into::into)
        .collect();
    debug_assert_eq!(slots.len(), p.n * p.th);
    slots
}

/// The call: the batch's rows of blocks in parts of about `PART_BYTES` of transformed
/// input; each part's input transformed (a task per row of blocks), multiplied by the
/// weights (libtorch's `bmm`, on the same threads), transformed back into the output (a
/// task per row).
fn run(x: &Tensor, b: Option<&Tensor>, p: &Problem, u: &Tensor, out: Output) -> Tensor {
    let (oh, ow) = p.output_size(out);
    let input = super::data(x);
    let zeros = vec![0f32; p.o];
    let bias = b.map(super::data).unwrap_or(&zeros);
    let rows_per_part = (PART_BYTES / (16 * p.tw * p.c * 4)).clamp(1, p.n * p.th);
    super::channels_last_output(p.n as i64, p.o, oh, ow, |dst| {
        let slots = row_slots(dst, p, out);
        for first in (0..p.n * p.th).step_by(rows_per_part) {
            let part = first..(first + rows_per_part).min(p.n * p.th);
            let tiles = part.len() * p.tw;
            let v = Tensor::empty([16, tiles as i64, p.c as i64], (Kind::Float, Device::Cpu));
            let shared = Shared(v.data_ptr() as *mut f32);
            super::parallel_for(part.len(), &|i| {
                let (img, ty) = ((part.start + i) / p.th, (part.start + i) % p.th);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `prepare` checked AVX2 and the sizes; `v` holds `16 * tiles * c`
                // floats and this task writes only its own blocks `i * tw ..`.
                unsafe {
                    avx2::input_row(input, p, img, ty, shared.ptr(), tiles, i * p.tw)
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("{:?}", (img, ty, shared.ptr()))
            });
            let m = v.bmm(u);
            drop(v);
            let products = super::data(&m);
            super::parallel_for(part.len(), &|i| {
                let mut rows = slots[part.start + i].lock().expect("one task per row of blocks");
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above; `products` is `[16, tiles, o]`, `rows` this row's output.
                unsafe {
                    avx2::output_row(products, bias, p, tiles, i * p.tw, out, &mut rows)
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!(
                    "{:?}",
                    (products.len(), bias.len(), rows.len(), matches!(out, Output::Conv { .. }))
                )
            });
        }
    })
}

#[cfg(test)]
mod tests;
