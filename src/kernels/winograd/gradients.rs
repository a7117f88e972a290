//! A conv's gradients by the same transforms, for training steps (`layers::conv`): the
//! input's as this kernel's conv of the output's gradient with the flipped weights, the
//! weight's by the three transforms' adjoints.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::{conv2d, dense_channels_last, Packed, Problem, Shared, MIN_CHANNELS};
use crate::kernels::direct_conv::Geometry;
use crate::kernels::Isa;
use tch::{Device, Kind, Tensor};

/// The input's gradient of a stride-1 3x3 conv with `w` (padding 0-2), given its output's
/// gradient `dy` (dense channels-last): this kernel's conv of `dy` with the weights' taps
/// flipped and their channels swapped, padded by 2 less the conv's padding. `None` where
/// `conv2d` declines that conv (then `conv_grad::input_grad` computes the same).
pub fn input_grad(dy: &Tensor, w: &Tensor, g: Geometry) -> Option<Tensor> {
    let flipped = crate::layers::channels_last(&w.detach().flip([2, 3]).transpose(0, 1));
    let full = Geometry { pad: 2 - g.pad, ..g };
    // A new packing each call: the flipped weights are a new tensor each step.
    conv2d(dy, &flipped, None, full, false, &Packed::default())
}

/// The weight's gradient of a stride-1 3x3 conv of `x` (padding `g.pad`), given its
/// output's gradient `dy`, as `[o, c, 3, 3]` with channels-last strides: per part of the
/// batch, the input transform `V` (as the forward pass's) and the gradient's transform
/// `Z = A dy A^T` (the adjoint of the output transform), `M += V^T Z` for each of the 16
/// positions (libtorch's `baddbmm`), and at the end `G^T M G` (the adjoint of the weight
/// transform). 16 products per channel pair and 2x2 block against a direct sum's 36.
/// `None` where it does not apply: see `gradient_problem`.
pub fn weight_grad(x: &Tensor, dy: &Tensor, g: Geometry) -> Option<Tensor> {
    let p = gradient_problem(x, dy, g)?;
    let dy = if dense_channels_last(dy) { dy.shallow_clone() } else { crate::layers::channels_last(dy) };
    let (input, grads) = (crate::kernels::data(x), crate::kernels::data(&dy));
    let (c, o) = (p.c as i64, p.o as i64);
    let mut m = Tensor::zeros([16, c, o], (Kind::Float, Device::Cpu));
    let rows_per_part = (GRADIENT_PART_BYTES / (16 * p.tw * (p.c + p.o) * 4)).clamp(1, p.n * p.th);
    for first in (0..p.n * p.th).step_by(rows_per_part) {
        let part = first..(first + rows_per_part).min(p.n * p.th);
        let tiles = part.len() * p.tw;
        let v = Tensor::empty([16, tiles as i64, c], (Kind::Float, Device::Cpu));
        let z = Tensor::empty([16, tiles as i64, o], (Kind::Float, Device::Cpu));
        let (vs, zs) = (Shared(v.data_ptr() as *mut f32), Shared(z.data_ptr() as *mut f32));
        crate::kernels::parallel_for(part.len(), &|i| {
            let (img, ty) = ((part.start + i) / p.th, (part.start + i) % p.th);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `gradient_problem` checked AVX2 and the sizes; `v` and `z` hold
            // `16 * tiles` blocks of `c` and `o` floats, this task writes its own `i * tw ..`.
            unsafe {
                avx2::input_row(input, &p, img, ty, vs.ptr(), tiles, i * p.tw);
                avx2::gradient_row(grads, &p, img, ty, zs.ptr(), tiles, i * p.tw);
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("{:?}", (img, ty, vs.ptr(), zs.ptr(), grads.len()))
        });
        let _ = m.baddbmm_(&v.transpose(1, 2), &z);
    }
    // G^T M G for each channel pair: [c * o, 4, 4] -> [c * o, 3, 3].
    let gt =
        Tensor::from_slice(&[1.0f32, 0.5, 0.5, 0.0, 0.0, 0.5, -0.5, 0.0, 0.0, 0.5, 0.5, 1.0]).view([3, 4]);
    let m = m.view([4, 4, c * o]).permute([2, 0, 1]);
    let dw = gt.matmul(&m).matmul(&gt.tr()).view([c, o, 3, 3]).transpose(0, 1);
    Some(crate::layers::channels_last(&dw))
}

/// The transformed input and gradient of one part of `weight_grad` are at most this
/// large together.
const GRADIENT_PART_BYTES: usize = 4 << 20;

/// The sizes of a `weight_grad` call that applies: an AVX2 CPU without AVX-512, float32
/// on the CPU, a dense channels-last `x` of `MIN_CHANNELS` or more channels (a multiple
/// of 8), a 3x3 kernel of stride 1 and dilation 1, and `dy` the size of the conv's
/// output with a multiple of 8 channels.
fn gradient_problem(x: &Tensor, dy: &Tensor, g: Geometry) -> Option<Problem> {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    if crate::kernels::isa()? != Isa::Avx2 || !cpu_f32(x) || !cpu_f32(dy) || !dense_channels_last(x) {
        return None;
    }
    let (xs, ys) = (x.size(), dy.size());
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    if g.stride != 1 || g.dilation != 1 || g.pad < 0 || c < MIN_CHANNELS || c % 8 != 0 {
        return None;
    }
    let (oh, ow) = (h + 2 * g.pad - 2, wd + 2 * g.pad - 2);
    let o = *ys.get(1)?;
    if ys.len() != 4 || ys != [n, o, oh, ow] || o < 1 || o % 8 != 0 || oh < 1 || ow < 1 {
        return None;
    }
    Some(Problem::new([n, c, h, wd], o, g.pad, ((oh + 1) / 2, (ow + 1) / 2)))
}
