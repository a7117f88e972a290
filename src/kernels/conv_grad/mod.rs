//! A convolution's weight gradient in a training step, on CPUs with AVX2 but no AVX-512,
//! from its input and its output's gradient (both channels-last).
//!
//! Why: there oneDNN computes the weight gradient of a channels-last conv with its older
//! `jit:avx2` kernel (ONEDNN_VERBOSE), far below the forward's rate. On an AMD EPYC (Zen 3),
//! two threads, batch 64, PyTorch and fkpnet alike: VGG's conv1_2 (64 -> 64 channels at
//! 94x94) forward 245-330 ms, weight gradient about 860 ms; conv2_1 and conv3_2 about 3x
//! their forward. Here each weight's gradient is a sum over the output pixels of an output
//! gradient times an input value: tiles of 6 output channels by 16 input channels (12
//! accumulators; per pixel two input vectors and six broadcast gradients feed 12 fused
//! multiply-adds), for one tap (ky, kx) over a run of output pixels.
//!
//! Deterministic: the images are cut into at most `CHUNKS` fixed runs, whatever the
//! thread count; each run's sum is one chain over its pixels in order, and the runs'
//! sums are added in order. The result differs from oneDNN's in the last bits.

use super::{direct_conv::Geometry, Isa};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// The most runs of images summed separately (each its own buffer of the gradient's size).
const CHUNKS: usize = 8;
/// The fewest output pixels per image this kernel takes: each tile's sums are loaded and
/// stored once per run of a row, which costs more than it saves on tiny maps (LeNet's
/// conv5, 2x2 outputs at batch 64: 4.8 ms against oneDNN's 3.4; conv4, 8x8: 5.8 against 6.2).
const MIN_PIXELS: i64 = 32;

/// Sizes of one call, in the input's padded frame.
pub(super) struct Problem {
    n: usize,
    c: usize,
    o: usize,
    k: usize,
    hp: usize,
    wp: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    dilation: usize,
    /// The output gradient's strides (image, channel, row, column): channels-last, or
    /// NCHW as autograd hands the gradient of a broadcast leaf.
    dy_strides: [usize; 4],
}

impl Problem {
    /// Taps per output channel: (ky, kx, channel), channel fastest (the weights' NHWC order).
    fn taps(&self) -> usize {
        self.k * self.k * self.c
    }

    /// Where input pixel (y, x) of image `img` starts in padded NHWC images (`img`
    /// counted from the first image they hold).
    fn input_at(&self, img: usize, y: usize, x: usize) -> usize {
        ((img * self.hp + y) * self.wp + x) * self.c
    }
}

/// Whether `weight_grad` computes the weight gradient of `conv2d(x, w)` for `o` outputs,
/// a square kernel of `k` and `g`: a CPU with AVX2 and without AVX-512 (unmeasured
/// against oneDNN there), float32 on the CPU, input channels a multiple of 8, at least
/// `MIN_PIXELS` output pixels per image, and an input that is dense channels-last.
pub fn applies(x: &Tensor, o: i64, k: i64, g: Geometry) -> bool {
    problem(x, o, k, g).is_some()
}

/// The gradient of `conv2d(x, w)` with respect to `w` (`[o, c, k, k]`, channels-last
/// strides) given `dy`, the gradient of its output; `None` where it does not apply (see
/// `applies`; the caller then lets libtorch compute it) or `dy` is not float32 of the
/// conv's output size. `dy` channels-last or NCHW is read as it is; in another layout it
/// is copied into channels-last first.
pub fn weight_grad(x: &Tensor, dy: &Tensor, k: i64, g: Geometry) -> Option<Tensor> {
    timed(|| compute(x, dy, k, g))
}

/// `f()`, its time counted as a weight gradient's (`time_spent`): for the other kernels
/// that compute one (`winograd::weight_grad`).
pub fn timed(f: impl FnOnce() -> Option<Tensor>) -> Option<Tensor> {
    let start = std::time::Instant::now();
    let grad = f();
    SPENT_NS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    grad
}

/// Time spent in weight gradients so far (`weight_grad` and `timed`), by every caller:
/// `fkpnet time` tells it apart from the rest of a conv's backward with it.
pub fn time_spent() -> std::time::Duration {
    std::time::Duration::from_nanos(SPENT_NS.load(Ordering::Relaxed))
}

static SPENT_NS: AtomicU64 = AtomicU64::new(0);

/// `weight_grad` untimed.
fn compute(x: &Tensor, dy: &Tensor, k: i64, g: Geometry) -> Option<Tensor> {
    let ys = dy.size();
    let p = problem(x, *ys.get(1)?, k, g)?;
    let float = dy.device() == Device::Cpu && dy.kind() == Kind::Float;
    if !float || ys != [p.n, p.o, p.oh, p.ow].map(|d| d as i64) {
        return None;
    }
    let dy = if dense_nhwc(dy) || dy.is_contiguous() {
        dy.shallow_clone()
    } else {
        crate::layers::channels_last(dy)
    };
    let p = Problem { dy_strides: [0, 1, 2, 3].map(|d| dy.stride()[d] as usize), ..p };
    let (x, pad) = (super::data(x), g.pad as usize);
    let (grads, chunks) = (super::data(&dy), CHUNKS.min(p.n));
    let len = p.o * p.taps();
    let mut sums = vec![0f32; chunks * len];
    let slots: Vec<Mutex<&mut [f32]>> = sums.chunks_mut(len).map(Into::into).collect();
    super::parallel_for(chunks, &|j| {
        let mut sum = slots[j].lock().expect("one task per run");
        let images = j * p.n / chunks..(j + 1) * p.n / chunks;
        // Each run pads its own images: a padded copy of the whole batch was as large
        // as the input (75 MiB for VGG's conv1_2 at batch 64) at the step's peak.
        let padded = (pad > 0).then(|| padded_images(x, &p, pad, images.clone()));
        let image_len = p.hp * p.wp * p.c;
        let input = padded.as_deref().unwrap_or_else(|| &x[images.start * image_len..images.end * image_len]);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `problem` checked the CPU has AVX2 and FMA and the sizes of `x` and
        // `grads`; `input` holds the run's images padded as `p` says, `sum` `o * taps` floats.
        unsafe {
            avx2::images(input, grads, &mut sum, &p, images)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("{:?}", (images, &sum, input))
    });
    let mut total = sums.split_off((chunks - 1) * len);
    for part in sums.chunks_exact(len).rev() {
        total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
    }
    let (o, c) = (p.o as i64, p.c as i64);
    Some(Tensor::from_slice(&total).view([o, k, k, c]).permute([0, 3, 1, 2]))
}

/// Whether `input_grad` computes the input's gradient of a conv with a square kernel of
/// `k` and geometry `g`: stride 1, and no more padding than the kernel's extent less one.
pub fn input_grad_applies(k: i64, g: Geometry) -> bool {
    g.stride == 1 && g.dilation >= 1 && k >= 1 && (0..=g.dilation * (k - 1)).contains(&g.pad)
}

/// The gradient of `conv2d(x, w)` (stride 1, `input_grad_applies`) with respect to `x`,
/// given `dy`: the forward conv of `dy` with `w`'s taps flipped and its input and output
/// channels swapped, padded by the kernel's extent less one less the conv's padding.
///
/// The training path's input gradient where Winograd's transforms decline (`layers::conv`).
///
/// Why: libtorch's conv backward runs oneDNN's backward-data kernel, its forward runs the
/// newer brgemm kernel (`ONEDNN_VERBOSE`). On an AMD EPYC (Zen 3, AVX2), two threads,
/// batch 64, alternated in one process (7 rounds, least disturbed): VGG's conv1_2 296 ms
/// against 352, conv2_1 121 against 160, conv2_2 297 against 321, conv3_1 83 against 91,
/// conv3_2 136 against 185. The sums come in another order: the same values to rounding.
pub fn input_grad(dy: &Tensor, w: &Tensor, g: Geometry) -> Tensor {
    let k = w.size()[2];
    let flipped = crate::layers::channels_last(&w.detach().flip([2, 3]).transpose(0, 1));
    let pad = g.dilation * (k - 1) - g.pad;
    dy.conv2d(&flipped, None::<&Tensor>, [1, 1], [pad; 2], [g.dilation; 2], 1)
}

/// The sizes of a call that applies, or `None` (see `applies`).
fn problem(x: &Tensor, o: i64, k: i64, g: Geometry) -> Option<Problem> {
    if super::isa()? != Isa::Avx2 {
        return None;
    }
    let xs = x.size();
    if x.device() != Device::Cpu || x.kind() != Kind::Float || xs.len() != 4 || !dense_nhwc(x) {
        return None;
    }
    let Geometry { stride, pad, dilation } = g;
    if stride < 1 || dilation < 1 || pad < 0 || k < 1 || o < 1 || xs[1] % 8 != 0 || xs[0] == 0 {
        return None;
    }
    let (hp, wp) = (xs[2] + 2 * pad, xs[3] + 2 * pad);
    let extent = dilation * (k - 1) + 1;
    if hp < extent || wp < extent {
        return None;
    }
    let (oh, ow) = ((hp - extent) / stride + 1, (wp - extent) / stride + 1);
    if oh * ow < MIN_PIXELS {
        return None;
    }
    let u = |v: i64| v as usize;
    Some(Problem {
        n: u(xs[0]),
        c: u(xs[1]),
        o: u(o),
        k: u(k),
        hp: u(hp),
        wp: u(wp),
        oh: u(oh),
        ow: u(ow),
        stride: u(stride),
        dilation: u(dilation),
        dy_strides: [0; 4],
    })
}

/// Dense NHWC in memory (channels-last strides).
fn dense_nhwc(t: &Tensor) -> bool {
    let d = t.size();
    d.len() == 4 && t.stride() == [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]]
}

/// Images `images` of the dense NHWC input `x` with a zero border of `pad` (the frame
/// `p` describes), image `images.start` first.
fn padded_images(x: &[f32], p: &Problem, pad: usize, images: std::ops::Range<usize>) -> Vec<f32> {
    let (h, w, c) = (p.hp - 2 * pad, p.wp - 2 * pad, p.c);
    let mut out = vec![0f32; images.len() * p.hp * p.wp * c];
    for (i, img) in images.enumerate() {
        for y in 0..h {
            let from = ((img * h + y) * w) * c;
            let to = ((i * p.hp + y + pad) * p.wp + pad) * c;
            out[to..to + w * c].copy_from_slice(&x[from..from + w * c]);
        }
    }
    out
}

#[cfg(test)]
mod tests;
