//! A direct convolution for predictions at batch 1-4 (`MAX_BATCH`; any batch on CPUs
//! without AVX-512, `max_batch`), on the CPU when no gradient is wanted: LeNet's conv3
//! and conv4 (32 and 64 input channels) at batch 1, alone (`conv2d`) or with the max
//! pool after it (`conv_max_pool`).
//!
//! Why: at batch 1 oneDNN's convolutions run well below the CPU's peak on small maps:
//! LeNet's conv3 (32 -> 64 channels, 20x20 outputs) took 154-181 us, conv4 (64 -> 128 at
//! 8x8) 104-115 us; onnxruntime's (MLAS's direct convolutions) about half that. Here
//! each tile is 12 neighbouring output pixels by 32 output channels, 24 accumulators in
//! registers: per input value two weight vectors and twelve broadcasts feed 24 fused
//! multiply-adds (the shape of MLAS's and BLAS's kernels). conv3 took 104-136 us, conv4
//! 92-101 (same process, alternated). The weights are packed once into that order and
//! packed again only when the tensor changes (libtorch's version counter).
//!
//! On CPUs with AVX2 but no AVX-512 (16 registers of 8 floats; `avx2`) a tile is 3
//! pixels by 32 channels, as MLAS's AVX2 kernel: on an AMD EPYC (Zen 3) at batch 1, two
//! threads, LeNet's conv3 + pool3 took 86 us (libtorch 130), conv4 + pool4 55 us (84),
//! VGG's convs 110-183 GFLOP/s (oneDNN 119-172).
//!
//! Each output is one fixed chain of fused multiply-adds, the bias first, then the taps in
//! (ky, kx, channel) order: results do not depend on the thread count; they differ from
//! oneDNN's in the last bits only.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use tch::Tensor;

use super::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The largest batch the AVX-512 loops take; above it oneDNN's convolutions were the
/// faster on the Intel Xeon they were measured on (219-285 GFLOP/s against oneDNN's
/// 278-352 at batch 64).
pub const MAX_BATCH: i64 = 4;

/// The largest batch `isa`'s loops take. The AVX2 loops take any: on an AMD EPYC (Zen 3,
/// no AVX-512), two threads, alternated against oneDNN in one process (least disturbed of
/// 7 rounds), LeNet's conv3 + pool3 at batch 64 took 6.2 ms against 6.6, conv4 + pool4
/// 4.0 against 4.6, conv5 + pool5 1.1 against 1.5; VGG's conv2_1 and conv3_2 + pool3 at
/// batch 16 level (25.2-25.5 and 31.6-34.0 ms).
pub fn max_batch(isa: Isa) -> i64 {
    match isa {
        Isa::Avx512 => MAX_BATCH,
        Isa::Avx2 => i64::MAX,
    }
}
/// Output channels per packed block: a tile's two AVX-512 vectors (two AVX2 tiles' four).
const NR: usize = 32;
/// From this size on, `conv2d` writes its output with streaming stores, past the caches.
/// Why: an ordinary store first reads its line into the cache, and a map this large has
/// left the caches by the next pass, so each line came from memory to be overwritten:
/// VGG's conv1_1 (94x94x64, 2.2 MB, one input channel) took 370-440 us inside a pass
/// (101 us timed alone, its map still in cache), 210-300 us streamed. The next layer
/// then reads the map from memory, while it computes (conv1_2 takes 3 ms).
pub(super) const STREAM_MIN_BYTES: usize = 512 << 10;

/// Sizes of one call, in the input's padded frame.
pub(super) struct Problem {
    c: usize,
    o: usize,
    k: usize,
    hp: usize,
    wp: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    dilation: usize,
    /// Each output through max(., 0) (NaN kept) as it is stored.
    rectify: bool,
    /// Whole 64-byte lines of the output written past the caches (`STREAM_MIN_BYTES`).
    stream: bool,
    /// The instruction set whose loops run it (chosen on the calling thread).
    isa: Isa,
}

impl Problem {
    fn taps(&self) -> usize {
        self.k * self.k * self.c
    }

    /// Blocks of `NR` output channels.
    fn blocks(&self) -> usize {
        self.o.div_ceil(NR)
    }

    /// Where tap (ky, kx) of output pixel (oy, ox) of image `img` starts in the padded
    /// NHWC input (its `c` channels follow).
    fn input_at(&self, img: usize, oy: usize, ox: usize, ky: usize, kx: usize) -> usize {
        let y = img * self.hp + oy * self.stride + ky * self.dilation;
        (y * self.wp + ox * self.stride + kx * self.dilation) * self.c
    }
}

/// A conv's weights packed for this kernel, kept between calls.
#[derive(Default)]
pub struct Packed {
    /// The packing and biases, with the tensors' data pointers and versions they were made from.
    cache: Mutex<Option<(Vec<(usize, i64)>, Arc<(Vec<f32>, Vec<f32>)>)>>,
}

impl Packed {
    /// Weights as `[block][tap][NR]` (taps in (ky, kx, channel) order, zeros past `o`),
    /// biases as `[block][NR]`.
    fn of(&self, w: &Tensor, b: Option<&Tensor>, p: &Problem) -> Arc<(Vec<f32>, Vec<f32>)> {
        let key: Vec<(usize, i64)> = [Some(w), b]
            .into_iter()
            .flatten()
            .map(|t| (t.data_ptr() as usize, t.internal_version()))
            .collect();
        let mut cache = self.cache.lock().expect("not poisoned");
        if let Some((k, packed)) = &*cache {
            if *k == key {
                return packed.clone();
            }
        }
        let rows = Vec::<f32>::try_from(w.permute([0, 2, 3, 1]).contiguous().view(-1)).expect("f32 weights");
        let (taps, blocks) = (p.taps(), p.blocks());
        let mut weights = vec![0f32; blocks * taps * NR];
        for (o, row) in rows.chunks_exact(taps).enumerate() {
            for (t, v) in row.iter().enumerate() {
                weights[(o / NR * taps + t) * NR + o % NR] = *v;
            }
        }
        let mut biases = vec![0f32; blocks * NR];
        if let Some(b) = b {
            biases[..p.o].copy_from_slice(super::data(b));
        }
        let packed = Arc::new((weights, biases));
        *cache = Some((key, packed.clone()));
        packed
    }
}

/// `conv2d(x, w, b)` (one group) for a batch of at most `max_batch`, then max(., 0) where
/// `rectify` (a plain ReLU after the conv, applied as the tiles are stored: its own pass
/// over VGG's 94x94x64 conv1_1 map took 250 us at batch 1); `None` where it does not
/// apply (the caller then uses libtorch): a gradient is wanted, not float32 on the CPU,
/// neither AVX-512 nor AVX2 + FMA, a larger batch, a non-square kernel, or an input that is not dense
/// channels-last. The output has channels-last strides.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    rectify: bool,
    packed: &Packed,
) -> Option<Tensor> {
    let pad = g.pad;
    let p = prepare(x, w, b, g)?;
    let bytes = x.size()[0] as usize * p.oh * p.ow * p.o * size_of::<f32>();
    let groups = channel_groups(&p);
    // Split by channels, each task fills a row buffer that is read right away: no streaming.
    let stream = bytes >= STREAM_MIN_BYTES && p.o % 16 == 0 && groups == 1;
    let p = Problem { rectify, stream, ..p };
    let packed = packed.of(w, b, &p);
    let padded = padded_input(x, pad);
    let input = padded.as_deref().unwrap_or_else(|| super::data(x));
    Some(super::channels_last_output(x.size()[0], p.o, p.oh, p.ow, |dst| {
        if groups > 1 {
            let fill = |r: usize, blocks: Range<usize>, buf: &mut [f32]| {
                conv_row(input, &packed, buf, &p, r / p.oh, r % p.oh, blocks)
            };
            return rows_by_channel_groups(dst, &p, p.ow, groups, &fill);
        }
        // One task per output row (all its channel blocks), so no two threads share a row.
        let rows: Vec<Mutex<&mut [f32]>> = dst.chunks_mut(p.ow * p.o).map(Into::into).collect();
        super::parallel_for(rows.len(), &|r| {
            let mut out_row = rows[r].lock().expect("one task per row");
            conv_row(input, &packed, &mut out_row, &p, r / p.oh, r % p.oh, 0..p.blocks());
        });
    }))
}

/// `max_pool2d(conv2d(x, w, b), pool)` for a batch of at most `max_batch`: the conv rows
/// each pooled row reads go through a small buffer, and only the maxima are written.
/// LeNet's conv3 + pool3 at batch 1: libtorch's pool of the 20x20x64 map took 30-40 us
/// inside a pass, as long as half the conv. `None` where `conv2d` declines, where a pool
/// window would start past the conv output, and where the conv output has at most
/// `few_rows::MAX_ROWS` pixels in all (`few_rows::conv2d` is the faster there). The
/// output has channels-last strides.
pub fn conv_max_pool(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Pooling,
    packed: &Packed,
) -> Option<Tensor> {
    let p = prepare(x, w, b, g)?;
    let n = x.size()[0];
    let (ph, pw, pk, ps) =
        (pool.out_h as usize, pool.out_w as usize, pool.kernel as usize, pool.stride as usize);
    let few_pixels = n as usize * p.oh * p.ow <= super::few_rows::MAX_ROWS as usize;
    if !pool.fits(p.oh as i64, p.ow as i64) || few_pixels {
        return None;
    }
    let packed = packed.of(w, b, &p);
    let padded = padded_input(x, g.pad);
    let input = padded.as_deref().unwrap_or_else(|| super::data(x));
    Some(super::channels_last_output(n, p.o, ph, pw, |dst| {
        // A pooled row's window of conv rows (clipped at the map's edge, as Caffe's ceil
        // mode clips), channel blocks `blocks`, into a buffer, then each window's maximum.
        let pooled_row = |r: usize, blocks: Range<usize>, out: &mut [f32]| {
            let (img, py) = (r / ph, r % ph);
            let oys = py * ps..(py * ps + pk).min(p.oh);
            let mut conv = vec![0f32; oys.len() * p.ow * p.o];
            for (buf, oy) in conv.chunks_exact_mut(p.ow * p.o).zip(oys) {
                conv_row(input, &packed, buf, &p, img, oy, blocks.clone());
            }
            super::max_pool_row(&conv, p.ow, p.o, pool, out);
        };
        let groups = channel_groups(&p);
        if groups > 1 {
            return rows_by_channel_groups(dst, &p, pw, groups, &pooled_row);
        }
        // One task per pooled row.
        let rows: Vec<Mutex<&mut [f32]>> = dst.chunks_mut(pw * p.o).map(Into::into).collect();
        super::parallel_for(rows.len(), &|r| {
            pooled_row(r, 0..p.blocks(), &mut rows[r].lock().expect("one task per row"));
        });
    }))
}

/// From this size of packed weights on, the threads split a conv's output channels
/// instead of its rows. Why: with rows split, every core streams all the weights for
/// each row: VGG's conv3_2 (2.4 MB) overflows a 2 MB L2, and its conv3_1 (1.2 MB) shares
/// one with the input. Half the weights each, VGG at batch 1 on 2 threads, alternated
/// against rows split: conv3_1 1,520 -> 1,420 us, conv3_2 + pool3 2,240 -> 2,220 us
/// (medians of ten rounds alone); conv3_2 + pool3 inside a pass faster in 5 of 5 rounds
/// (2,450-2,670 -> 2,250-2,480 us). Below it rows are split, so each core reads half
/// the input and large outputs stream: split by channels, conv1_2 and conv2_1 (147 and
/// 295 KB of weights) were slower alone; conv2_2 (590 KB) was 2-7% faster alone but
/// faster in only 4 of 6 rounds inside a pass, so it stays with rows.
const SPLIT_MIN_BYTES: usize = 1 << 20;

/// How many groups of channel blocks the threads share out (1: they share out rows).
fn channel_groups(p: &Problem) -> usize {
    let threads = tch::get_num_threads().max(1) as usize;
    let bytes = p.blocks() * p.taps() * NR * size_of::<f32>();
    if bytes >= SPLIT_MIN_BYTES {
        threads.min(p.blocks())
    } else {
        1
    }
}

/// Output rows (of `pixels` pixels) as tasks (row, group of channel blocks): `fill(r,
/// blocks, buf)` computes row `r`'s channels of `blocks` into `buf` (a whole row's
/// length), and those channels are copied into `dst`. Task `i` is row `i / groups`, group
/// `i % groups`, so in a team of `groups` threads each thread keeps one group's weights
/// for all rows.
fn rows_by_channel_groups(
    dst: &mut [f32],
    p: &Problem,
    pixels: usize,
    groups: usize,
    fill: &(dyn Fn(usize, Range<usize>, &mut [f32]) + Sync),
) {
    let (row_len, blocks) = (pixels * p.o, p.blocks());
    assert!((1..=blocks).contains(&groups), "no group without a block");
    let out = Shared(dst.as_mut_ptr());
    let out = &out;
    super::parallel_for(dst.len() / row_len * groups, &|task| {
        let (r, g) = (task / groups, task % groups);
        let blocks = g * blocks / groups..(g + 1) * blocks / groups;
        let chans = blocks.start * NR..(blocks.end * NR).min(p.o);
        let mut row = vec![0f32; row_len];
        fill(r, blocks, &mut row);
        for (px, pixel) in row.chunks_exact(p.o).enumerate() {
            let src = &pixel[chans.clone()];
            // SAFETY: `dst` has whole rows of `row_len`; task (r, g) alone writes
            // channels `chans` of row `r`, and `dst` outlives the parallel loop.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    out.0.add(r * row_len + px * p.o + chans.start),
                    src.len(),
                )
            }
        }
    });
}

/// The output's pointer, shared by tasks that write disjoint parts of it.
struct Shared(*mut f32);
// SAFETY: the tasks that share it write disjoint elements (see its uses).
unsafe impl Sync for Shared {}

/// Convolution hyper-parameters, as the conv layer has them (square, Caffe's meaning).
pub use super::direct_conv::Geometry;
/// A max pool right after the convolution, as `direct_conv` takes it.
pub use super::direct_conv::Pooling;

/// The call's sizes; `None` where the kernel does not apply (see `conv2d`).
fn prepare(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: Geometry) -> Option<Problem> {
    let isa = super::isa()?;
    if !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 4
        || ws.len() != 4
        || ws[1] != xs[1]
        || ws[2] != ws[3]
        || !(1..=max_batch(isa)).contains(&xs[0])
    {
        return None;
    }
    let Geometry { stride, pad, dilation } = g;
    if stride < 1 || dilation < 1 || pad < 0 || !b.is_none_or(|b| b.size() == [ws[0]] && b.is_contiguous()) {
        return None;
    }
    let d = &xs;
    if x.stride() != [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]] {
        return None;
    }
    let (c, o, k) = (xs[1] as usize, ws[0] as usize, ws[2] as usize);
    let (hp, wp) = ((xs[2] + 2 * pad) as usize, (xs[3] + 2 * pad) as usize);
    let extent = dilation as usize * (k - 1) + 1;
    if hp < extent || wp < extent || o == 0 {
        return None;
    }
    let s = stride as usize;
    let p = Problem {
        c,
        o,
        k,
        hp,
        wp,
        oh: (hp - extent) / s + 1,
        ow: (wp - extent) / s + 1,
        stride: s,
        dilation: dilation as usize,
        rectify: false,
        stream: false,
        isa,
    };
    Some(p)
}

/// The input with its zero border (NHWC), where the conv pads.
fn padded_input(x: &Tensor, pad: i64) -> Option<Vec<f32>> {
    (pad > 0).then(|| {
        let nhwc = x.permute([0, 2, 3, 1]).constant_pad_nd([0, 0, pad, pad, pad, pad]);
        Vec::<f32>::try_from(nhwc.contiguous().view(-1)).expect("f32 input")
    })
}

/// Conv output row `oy` of image `img`, channel blocks `blocks`, into `out` (`ow * o`
/// floats).
fn conv_row(
    input: &[f32],
    packed: &(Vec<f32>, Vec<f32>),
    out: &mut [f32],
    p: &Problem,
    img: usize,
    oy: usize,
    blocks: Range<usize>,
) {
    for ob in blocks {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `prepare` only makes a `Problem` on a CPU with `p.isa`; the callers pass
        // the (padded) input, the packed weights and one output row.
        unsafe {
            match p.isa {
                Isa::Avx512 => avx512::row(input, &packed.0, &packed.1, out, p, img, oy, ob),
                Isa::Avx2 => avx2::row(input, &packed.0, &packed.1, out, p, img, oy, ob),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (input, packed, out, img, oy, ob);
            unreachable!("no kernel instruction set ({:?}) outside x86-64", p.isa)
        }
    }
}

#[cfg(test)]
mod tests;
