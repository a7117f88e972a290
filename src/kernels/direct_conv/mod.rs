//! A direct convolution with the max pool after it, for layers with 1-16 input channels
//! (a net's first convs: grey or colour input, then LeNet's conv2), used on the CPU when no
//! gradient is wanted (prediction, evaluation, export checks).
//!
//! Why: oneDNN's kernels are built for many input channels, and the first conv's output
//! is the net's largest map. On LeNet's conv1 + pool1 (1 -> 16 channels at 94x94, batch
//! 64, channels-last, jemalloc) libtorch took 1.6-2.9 ms for the conv, about 60-100
//! GFLOP/s, and 4.2 ms for the pool reading its 36 MB output back: 6-7 ms of a 22 ms
//! forward pass. Here each output pixel is k*k*c multiply-adds of one input value by a
//! vector of 16 output channels (one AVX-512 register), 8 pixels at once so the
//! multiply-adds do not wait on each other; for the usual 2x2/2 pool both conv rows of
//! a window stay in registers and only the maxima are stored (9 MB): 1.6-1.8 ms for the
//! pair on 2 threads. Other pools go through one conv row at a time in a small buffer.
//! On CPUs with AVX2 but no AVX-512 (16 registers of 8 floats; `avx2`) the blocks are
//! smaller: 2 conv pixels of both rows of a window by 16 channels, conv rows 6 pixels by
//! 16 channels. On an AMD EPYC (Zen 3), two threads: LeNet's conv1 + pool1 at batch 64
//! in 1.2-1.8 ms against libtorch's 35-40 ms (its one-channel conv takes a slow path
//! there), conv2 + pool2 at batch 1 in 121 us against 185.
//!
//! Every output is the same chain of fused multiply-adds (bias first, then the taps in
//! (ky, kx, channel) order) whichever instruction set runs it, so results do not depend
//! on the machine or the thread count; they differ from oneDNN's in the last bits only.

use super::Isa;
use tch::{Device, Kind, Tensor};

mod train;
pub use train::{conv_max_pool_train, Trained};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The most input channels per group this kernel takes; above it oneDNN is the faster.
pub const MAX_CHANNELS: i64 = 16;

/// Output channels per vector of the packing: one AVX-512 register of f32 (two AVX2 ones).
const LANES: usize = 16;
/// Output pixels computed together by the AVX-512 loops (independent accumulator chains).
const PIXELS: usize = 8;
/// Pooled output pixels per block of a 2x2/2 pool (8 conv pixels of each of 2 rows).
const POOLED: usize = PIXELS / 2;
/// A window's winner where a rectified maximum is not above 0 (no gradient passes).
const BLOCKED: u8 = 4;
/// Below this many multiply-adds (about 8 us on one core) one thread does the whole
/// layer: a parallel region on libtorch's spinning OpenMP team costs a few us. LeNet's
/// conv1 at batch 1 (1.3 M) ran on one thread below the old bound of 2 M, set when each
/// call spawned threads: 64 -> 38 us (medians inside a pass) on two.
const MIN_PARALLEL_FMAS: usize = 1 << 18;

/// Convolution hyper-parameters, as the conv layer has them (square, Caffe's meaning).
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub stride: i64,
    pub pad: i64,
    pub dilation: i64,
}

/// A max pool right after the convolution (no padding), fused into it: the conv's
/// output is never written out, only each window's maximum. `out_h`, `out_w`: the
/// pool's output size as the pool layer rounds it; windows past the conv output's edge
/// are clipped (Caffe's ceil mode). `rectify`: each maximum then goes through max(., 0),
/// a plain ReLU between the conv and the pool (which commutes with the pool), so that
/// layer's pass over the pooled map is saved too.
#[derive(Clone, Copy, Debug)]
pub struct Pooling {
    pub kernel: i64,
    pub stride: i64,
    pub out_h: i64,
    pub out_w: i64,
    pub rectify: bool,
}

impl Pooling {
    /// Whether the kernels can pool an `oh` x `ow` conv map so: kernel and stride at
    /// least 1, and every window starts inside the map (the last may be clipped at its
    /// edge, as Caffe's ceil mode clips; none may start past it).
    pub fn fits(&self, oh: i64, ow: i64) -> bool {
        let starts_inside = |out: i64, size: i64| out >= 1 && (out - 1) * self.stride < size;
        self.kernel >= 1 && self.stride >= 1 && starts_inside(self.out_h, oh) && starts_inside(self.out_w, ow)
    }
}

/// `max_pool2d(conv2d(x, w, b), pool)` by the direct kernel; `None` where it does not
/// apply (the caller then uses libtorch): a gradient is wanted, not float32 on the CPU,
/// neither AVX-512 nor AVX2 + FMA, more than `MAX_CHANNELS` input channels,
/// or an input whose strides are not dense NHWC (or NCHW with one channel). The output
/// has NHWC strides (channels-last), as oneDNN's has for a channels-last input.
pub fn conv_max_pool(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Pooling,
) -> Option<Tensor> {
    if !super::inference_on_cpu(x, w, b) {
        return None;
    }
    let p = problem(x, w, g, pool)?;
    let input = super::data(x); // dense NHWC, checked by `problem`
    let padded = pad_input(input, &p);
    Some(forward(padded.as_deref().unwrap_or(input), w, b, &p, None))
}

/// The sizes of a call the kernel takes (AVX-512 or AVX2, 1-`MAX_CHANNELS` input
/// channels, a square kernel, a dense NHWC input), or `None`.
fn problem(x: &Tensor, w: &Tensor, g: Geometry, pool: Pooling) -> Option<Problem> {
    let isa = super::isa()?;
    let (xs, ws) = (x.size(), w.size());
    if xs.len() != 4 || ws.len() != 4 || ws[1] != xs[1] || xs[1] > MAX_CHANNELS || ws[2] != ws[3] {
        return None;
    }
    if !dense_nhwc(x) {
        return None;
    }
    Problem::new(&xs, &ws, g, pool, isa)
}

/// The pooled map of `image` (the input, padded where the layer pads) with NHWC strides;
/// `winners` (sized as the map) gets each maximum's place in its window where wanted.
fn forward(image: &[f32], w: &Tensor, b: Option<&Tensor>, p: &Problem, winners: Option<&mut [u8]>) -> Tensor {
    let weights = pack_weights(w, b, p);
    let (h, w) = (p.pool.out_h as usize, p.pool.out_w as usize);
    super::channels_last_output(p.n, p.o as usize, h, w, |dst| run(image, &weights, dst, winners, p))
}

/// All output rows, split over libtorch's thread count in contiguous ranges. `winners`
/// (training, 2x2/2 pools only): each maximum's place in its window, as `out` is laid out.
fn run(x: &[f32], weights: &[f32], out: &mut [f32], winners: Option<&mut [u8]>, p: &Problem) {
    let (rows, row_len) = p.out_rows();
    let fmas = (p.n * p.oh * p.ow * p.o) as usize * p.taps();
    let threads = if fmas < MIN_PARALLEL_FMAS { 1 } else { tch::get_num_threads().max(1) as usize };
    let per = rows.div_ceil(threads.min(rows));
    assert!(winners.as_ref().is_none_or(|w| w.len() == out.len() && p.pools_in_pairs()));
    if per == rows {
        return pooled_rows(x, weights, out, winners, p, 0);
    }
    let mut wins = winners.map(|w| w.chunks_mut(per * row_len));
    let ranges: Vec<std::sync::Mutex<(&mut [f32], Option<&mut [u8]>)>> = out
        .chunks_mut(per * row_len)
        .map(|o| (o, wins.as_mut().map(|w| w.next().expect("as many ranges"))).into())
        .collect();
    crate::kernels::parallel_for(ranges.len(), &|i| {
        let mut range = ranges[i].lock().expect("one task per range");
        let (out, wins) = &mut *range;
        pooled_rows(x, weights, out, wins.as_deref_mut(), p, i * per);
    });
}

/// The pooled rows `first..` that `out` holds, by the loops of `p.isa`.
fn pooled_rows(
    x: &[f32],
    weights: &[f32],
    out: &mut [f32],
    winners: Option<&mut [u8]>,
    p: &Problem,
    first: usize,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `problem` only makes a `Problem` on a CPU with `p.isa`; the callers pass the
    // input of `p`, its packed weights and whole pooled rows.
    unsafe {
        match p.isa {
            Isa::Avx512 => avx512::rows(x, weights, out, winners, p, first),
            Isa::Avx2 => avx2::rows(x, weights, out, winners, p, first),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, weights, out, winners, first);
        unreachable!("no kernel instruction set ({:?}) outside x86-64", p.isa)
    }
}

/// Dense NHWC in memory: channels-last strides, or one channel and contiguous (the two
/// are the same bytes).
fn dense_nhwc(x: &Tensor) -> bool {
    let (d, s) = (x.size(), x.stride());
    s == [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]] || (d[1] == 1 && x.is_contiguous())
}

/// Sizes of one call, in the input's padded frame.
#[derive(Debug)]
struct Problem {
    n: i64,
    c: i64,
    o: i64,
    k: i64,
    /// Padded input height and width.
    hp: i64,
    wp: i64,
    /// Conv output height and width (before the pool).
    oh: i64,
    ow: i64,
    stride: i64,
    pad: i64,
    dilation: i64,
    /// Output channels rounded up to whole vectors.
    o_padded: i64,
    pool: Pooling,
    /// The instruction set whose loops run it (chosen on the calling thread).
    isa: Isa,
}

impl Problem {
    fn new(xs: &[i64], ws: &[i64], g: Geometry, pool: Pooling, isa: Isa) -> Option<Self> {
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let (o, k) = (ws[0], ws[2]);
        let (hp, wp) = (h + 2 * g.pad, w + 2 * g.pad);
        let extent = g.dilation * (k - 1) + 1;
        if g.stride < 1 || g.dilation < 1 || g.pad < 0 || hp < extent || wp < extent || n == 0 || o == 0 {
            return None;
        }
        let (oh, ow) = ((hp - extent) / g.stride + 1, (wp - extent) / g.stride + 1);
        // Every window starts inside the conv output (true of any pool without padding).
        if !pool.fits(oh, ow) {
            return None;
        }
        let lanes = LANES as i64;
        Some(Problem {
            n,
            c,
            o,
            k,
            hp,
            wp,
            oh,
            ow,
            stride: g.stride,
            pad: g.pad,
            dilation: g.dilation,
            o_padded: (o + lanes - 1) / lanes * lanes,
            pool,
            isa,
        })
    }

    /// A 2x2, stride-2 pool whose windows all lie inside the conv output, on rows of at
    /// least one block: `pooled_row_2x2`'s case.
    fn pools_in_pairs(&self) -> bool {
        let q = self.pool;
        q.kernel == 2
            && q.stride == 2
            && 2 * q.out_w <= self.ow
            && 2 * q.out_h <= self.oh
            && q.out_w >= POOLED as i64
    }

    fn taps(&self) -> usize {
        (self.k * self.k * self.c) as usize
    }

    /// Each tap's input element relative to the first an output pixel reads, in (ky, kx,
    /// channel) order.
    fn tap_offsets(&self) -> Vec<usize> {
        let (c, k, d, wp) = (self.c as usize, self.k as usize, self.dilation as usize, self.wp as usize);
        let mut offsets = Vec::with_capacity(self.taps());
        for ky in 0..k {
            for kx in 0..k {
                offsets.extend((0..c).map(|ci| (ky * d * wp + kx * d) * c + ci));
            }
        }
        offsets
    }

    /// The rows of the result (all images) and the floats in each.
    fn out_rows(&self) -> (usize, usize) {
        ((self.n * self.pool.out_h) as usize, (self.pool.out_w * self.o) as usize)
    }
}

/// Weights as `[tap][output channel]` (tap = (ky, kx, channel), output channels padded
/// with zeros to whole vectors), preceded by one row of biases.
fn pack_weights(w: &Tensor, b: Option<&Tensor>, p: &Problem) -> Vec<f32> {
    let (o, op, c, k) = (p.o as usize, p.o_padded as usize, p.c as usize, p.k as usize);
    // Read in place through the strides (NCHW or channels-last): at batch 1 the libtorch
    // operators of a permuted copy took longer than the layer.
    let (wt, ws) = (strided(w), w.stride());
    let mut packed = vec![0f32; (p.taps() + 1) * op];
    if let Some(b) = b {
        let (bt, bs) = (strided(b), b.stride()[0] as usize);
        (0..o).for_each(|oc| packed[oc] = bt[oc * bs]);
    }
    let [s0, s1, s2, s3] = [ws[0], ws[1], ws[2], ws[3]].map(|s| s as usize);
    for (tap, row) in packed[op..].chunks_exact_mut(op).enumerate() {
        // tap = (ky, kx, channel), channel fastest
        let (ky, kx, ci) = (tap / (k * c), tap / c % k, tap % c);
        for (oc, v) in row[..o].iter_mut().enumerate() {
            *v = wt[oc * s0 + ci * s1 + ky * s2 + kx * s3];
        }
    }
    packed
}

/// A float32 CPU tensor's elements from its data pointer to its last, to index with its
/// strides.
fn strided(t: &Tensor) -> &[f32] {
    let span = t.size().iter().zip(t.stride()).map(|(&d, s)| (d.max(1) - 1) * s).sum::<i64>() + 1;
    assert!(t.stride().iter().all(|&s| s >= 0) && t.kind() == Kind::Float && t.device() == Device::Cpu);
    // SAFETY: a valid tensor with non-negative strides holds `span` elements from its data
    // pointer on (its largest offset + 1); the slice borrows `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, span as usize) }
}

/// The input with its zero border, when the layer pads (few channels: a small copy).
fn pad_input(x: &[f32], p: &Problem) -> Option<Vec<f32>> {
    if p.pad == 0 {
        return None;
    }
    let (c, w, h) = (p.c as usize, (p.wp - 2 * p.pad) as usize, (p.hp - 2 * p.pad) as usize);
    let (hp, wp, pad) = (p.hp as usize, p.wp as usize, p.pad as usize);
    let mut out = vec![0f32; p.n as usize * hp * wp * c];
    for (img, dst) in x.chunks_exact(h * w * c).zip(out.chunks_exact_mut(hp * wp * c)) {
        for y in 0..h {
            let row = &img[y * w * c..][..w * c];
            dst[((y + pad) * wp + pad) * c..][..w * c].copy_from_slice(row);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Geometry = Geometry { stride: 1, pad: 0, dilation: 1 };

    /// The kernel against libtorch's conv2d + max_pool2d on the same data, and with the
    /// maxima rectified against relu after them; a 1x1 pool of stride 1 checks the
    /// convolution alone.
    fn agrees(x: [i64; 4], o: i64, k: i64, g: Geometry, bias: bool, (pk, ps, ceil): (i64, i64, bool)) {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(7);
        let xt = crate::layers::channels_last(&Tensor::randn(x, (Kind::Float, Device::Cpu)));
        let wt = Tensor::randn([o, x[1], k, k], (Kind::Float, Device::Cpu));
        let b = bias.then(|| Tensor::randn([o], (Kind::Float, Device::Cpu)));
        let conv = xt.conv2d(&wt, b.as_ref(), [g.stride; 2], [g.pad; 2], [g.dilation; 2], 1);
        let pooled = conv.max_pool2d([pk; 2], [ps; 2], [0; 2], [1; 2], ceil);
        for rectify in [false, true] {
            let want = if rectify { pooled.relu() } else { pooled.shallow_clone() };
            let (h, w) = (want.size()[2], want.size()[3]);
            let pool = Pooling { kernel: pk, stride: ps, out_h: h, out_w: w, rectify };
            let case = format!("{x:?} -> {o}, k{k} {g:?} {pool:?}");
            let got = conv_max_pool(&xt, &wt, b.as_ref(), g, pool).expect("the kernel applies");
            assert_eq!(got.size(), want.size(), "{case}");
            assert!(crate::layers::is_channels_last(&got), "NHWC strides out");
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{case}: max difference {diff}");
        }
    }

    #[test]
    fn agrees_with_libtorch_on_the_shipped_first_layers_and_odd_geometries() {
        crate::kernels::for_each_isa(|_isa| {
            let one = (1, 1, false);
            agrees([3, 1, 96, 96], 16, 3, PLAIN, true, (2, 2, false)); // LeNet's conv1 + pool1
            agrees([3, 1, 96, 96], 16, 3, PLAIN, true, one);
            agrees([2, 1, 96, 96], 64, 3, PLAIN, true, (2, 2, false)); // 64 channels: 4 vectors
            agrees([2, 3, 64, 48], 32, 3, Geometry { stride: 1, pad: 1, dilation: 1 }, true, (3, 2, true));
            agrees([2, 3, 33, 31], 30, 5, Geometry { stride: 2, pad: 2, dilation: 1 }, false, (2, 2, true));
            agrees([1, 2, 20, 21], 5, 3, Geometry { stride: 3, pad: 1, dilation: 2 }, true, one);
            agrees([1, 4, 7, 7], 1, 7, PLAIN, true, one); // one output pixel, one channel
            agrees([1, 1, 8, 8], 3, 3, PLAIN, true, (2, 2, false)); // rows shorter than a block
            agrees([1, 1, 6, 6], 3, 3, PLAIN, true, one);
            agrees([70, 1, 12, 12], 8, 3, PLAIN, true, (2, 2, false)); // many images, one thread
            agrees([3, 1, 96, 96], 16, 3, PLAIN, true, (3, 2, true)); // the general pool, threads
            agrees([70, 1, 13, 13], 17, 3, PLAIN, true, (3, 3, true)); // clipped windows
            agrees([5, 1, 23, 23], 16, 3, PLAIN, true, (2, 2, true)); // 21 -> 11: the last clipped
            agrees([3, 16, 47, 47], 32, 3, PLAIN, true, (2, 2, false)); // LeNet's conv2 + pool2
            agrees([2, 16, 20, 20], 48, 3, PLAIN, true, (2, 2, false)); // 3 vectors: one at a time
            agrees([2, 16, 20, 20], 64, 3, Geometry { stride: 1, pad: 1, dilation: 1 }, false, (2, 2, false));
            agrees([2, 9, 20, 20], 40, 3, PLAIN, true, (3, 2, false));
        });
    }

    #[test]
    fn declines_what_it_does_not_do() {
        let pool = Pooling { kernel: 2, stride: 2, out_h: 4, out_w: 4, rectify: false };
        let x = crate::layers::channels_last(&Tensor::randn([1, 32, 10, 10], (Kind::Float, Device::Cpu)));
        let w = Tensor::randn([4, 32, 3, 3], (Kind::Float, Device::Cpu));
        assert!(conv_max_pool(&x, &w, None, PLAIN, pool).is_none(), "32 input channels: oneDNN's job");
        let x = Tensor::randn([1, 3, 10, 10], (Kind::Float, Device::Cpu));
        let w3 = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        assert!(conv_max_pool(&x, &w3, None, PLAIN, pool).is_none(), "NCHW strides with 3 channels");
        let w1 = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x1 = Tensor::randn([1, 1, 10, 10], (Kind::Float, Device::Cpu));
        assert!(conv_max_pool(&x1, &w1, None, PLAIN, pool).is_none(), "a gradient is wanted");
        let _guard = tch::no_grad_guard();
        assert_eq!(
            conv_max_pool(&x1, &w1, None, PLAIN, pool).is_some(),
            super::super::isa().is_some(),
            "no gradient wanted"
        );
        let too_big = Pooling { out_h: 5, ..pool };
        assert!(conv_max_pool(&x1, &w1, None, PLAIN, too_big).is_none(), "a window starting past the map");
        let xb = x1.to_kind(Kind::BFloat16);
        assert!(conv_max_pool(&xb, &w1.to_kind(Kind::BFloat16), None, PLAIN, pool).is_none(), "bf16");
    }
}
