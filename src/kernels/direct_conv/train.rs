//! The direct conv + max pool in a training step, for a net's first layer (its input
//! needs no gradient): the forward pass keeps each maximum's place in its window, and the
//! backward pass gives the conv's weight and bias gradients from the pooled map's.
//!
//! Why: libtorch runs the pair as three operators, each over the conv's full-size map
//! (LeNet's 16x94x94 at batch 64 is 36 MB): oneDNN's conv with one input channel, the
//! pool, and backward the pool's scatter into a zeroed full-size map and oneDNN's weight
//! gradient reading it back. `fkpnet time nets/lenet.yaml` put conv1 + pool1 at 2.2 + 2.9
//! ms forward and 1.6 + 5.6 ms backward, a fifth of the step. Here the forward is the
//! prediction kernel plus one byte per pooled output; the backward visits only the pooled
//! outputs, as only a window's winner gets a gradient.
//!
//! Same results: the forward is bit for bit the prediction kernel's. The winner is the one
//! libtorch's pool takes (the first strict maximum, row by row), and a rectified maximum not
//! above 0 passes nothing, as ReLU's backward. The gradients are sums in another order than
//! oneDNN's (per image, pooled pixel by pooled pixel, then over the images in order), so
//! they differ in the last bits; they do not depend on the thread count.

use super::{dense_nhwc, forward, pad_input, problem, Geometry, Pooling, Problem};
use tch::{Device, Kind, Tensor};

#[cfg(target_arch = "x86_64")]
mod backward;
#[cfg(target_arch = "x86_64")]
use backward::image_grad;

#[cfg(not(target_arch = "x86_64"))]
fn image_grad(_: &[f32], _: &[u8], _: &[f32], _: &[usize], _: &Problem, _: &mut [f32]) {
    unreachable!("conv_max_pool_train declines outside x86-64 (no kernel instruction set)")
}

/// A training step's forward through the fused kernel: the pooled map `y` (no autograd
/// history: the caller makes it a leaf and hands its gradient to `weight_grad`) and what
/// the backward pass reads.
pub struct Trained {
    pub y: Tensor,
    /// The input, and its padded copy where the layer pads.
    x: Tensor,
    padded: Option<Vec<f32>>,
    /// Each pooled output's winner (0-3, row by row in its window; `BLOCKED`), as `y`.
    winners: Vec<u8>,
    p: Problem,
}

/// `max_pool2d(conv2d(x, w, b), pool)` for training, where the input needs no gradient
/// (a net's first layer) and the pool is 2x2 with stride 2 inside the conv output (the
/// study's nets); `None` where the kernel does not apply (then libtorch runs the layers
/// with autograd): an input that wants a gradient, not float32 on the CPU, or what
/// `conv_max_pool` declines.
pub fn conv_max_pool_train(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    pool: Pooling,
) -> Option<Trained> {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    if x.requires_grad() || !cpu_f32(x) || !cpu_f32(w) || !b.is_none_or(cpu_f32) {
        return None;
    }
    let p = problem(x, w, g, pool)?;
    if !p.pools_in_pairs() {
        return None;
    }
    let padded = pad_input(super::super::data(x), &p);
    let mut winners = vec![0u8; (p.n * pool.out_h * pool.out_w * p.o) as usize];
    let image = padded.as_deref().unwrap_or_else(|| super::super::data(x));
    let y = tch::no_grad(|| forward(image, w, b, &p, Some(&mut winners)));
    Some(Trained { y, x: x.shallow_clone(), padded, winners, p })
}

impl Trained {
    /// The conv's weight gradient (its shape, channels-last strides) and bias gradient
    /// from `dy`, the gradient of `y`.
    pub fn weight_grad(&self, dy: &Tensor) -> (Tensor, Tensor) {
        let p = &self.p;
        assert_eq!(dy.size(), self.y.size(), "the gradient of the pooled map");
        let dy = if dense_nhwc(dy) && dy.kind() == Kind::Float {
            dy.shallow_clone()
        } else {
            crate::layers::channels_last(&dy.to_kind(Kind::Float))
        };
        let image = self.padded.as_deref().unwrap_or_else(|| super::super::data(&self.x));
        let (dys, n) = (super::super::data(&dy), p.n as usize);
        let (image_len, pooled_len) = ((p.hp * p.wp * p.c) as usize, self.winners.len() / n);
        let offsets = p.tap_offsets();
        // One sum per image, in its own slice, then the images in order: the result does not
        // depend on how the images were shared out.
        let per_image = (p.taps() + 1) * p.o_padded as usize;
        let mut sums = vec![0f32; n * per_image];
        let slots: Vec<std::sync::Mutex<&mut [f32]>> = sums.chunks_mut(per_image).map(Into::into).collect();
        let (winners, work) = (&self.winners[..], self.winners.len() * offsets.len() * 4);
        let task = |i: usize| {
            let mut acc = slots[i].lock().expect("one task per image");
            let (x, wins, g) = (
                &image[i * image_len..][..image_len],
                &winners[i * pooled_len..][..pooled_len],
                &dys[i * pooled_len..][..pooled_len],
            );
            image_grad(x, wins, g, &offsets, p, &mut acc);
        };
        if work < super::MIN_PARALLEL_FMAS {
            (0..n).for_each(task);
        } else {
            crate::kernels::parallel_for(n, &task);
        }
        let mut total = vec![0f32; per_image];
        for s in sums.chunks_exact(per_image) {
            total.iter_mut().zip(s).for_each(|(t, v)| *t += v);
        }
        self.tensors(&total)
    }

    /// `total` (row 0 the bias, then one row per tap, `o_padded` wide) as the weight
    /// gradient [o, c, k, k] with channels-last strides and the bias gradient [o].
    fn tensors(&self, total: &[f32]) -> (Tensor, Tensor) {
        let (p, op) = (&self.p, self.p.o_padded as usize);
        let (o, taps) = (p.o as usize, p.taps());
        // Taps run (ky, kx, channel): an [o, k, k, c] array, permuted to [o, c, k, k].
        let dw: Vec<f32> = (0..o).flat_map(|oc| (0..taps).map(move |t| total[(t + 1) * op + oc])).collect();
        let dw = Tensor::from_slice(&dw).view([p.o, p.k, p.k, p.c]).permute([0, 3, 1, 2]);
        (dw, Tensor::from_slice(&total[..o]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training kernel against libtorch's conv2d -> max_pool2d (-> relu) with
    /// autograd: the pooled map to the bit of the prediction kernel and close to
    /// libtorch's, and the weight and bias gradients for a random output gradient.
    fn agrees(x: &Tensor, o: i64, k: i64, g: Geometry, rectify: bool) {
        agrees_with_bias(x, o, k, g, rectify, 1.0)
    }

    fn agrees_with_bias(x: &Tensor, o: i64, k: i64, g: Geometry, rectify: bool, bias: f64) {
        let case = format!("{:?} -> {o} k{k} {g:?} rectify {rectify}", x.size());
        let w = Tensor::randn([o, x.size()[1], k, k], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = (Tensor::randn([o], (Kind::Float, Device::Cpu)) * bias).set_requires_grad(true);
        let conv = x.conv2d(&w, Some(&b), [g.stride; 2], [g.pad; 2], [g.dilation; 2], 1);
        let pooled = conv.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let want = if rectify { pooled.relu() } else { pooled };
        let (h, wd) = (want.size()[2], want.size()[3]);
        let pool = Pooling { kernel: 2, stride: 2, out_h: h, out_w: wd, rectify };
        let t = conv_max_pool_train(x, &w, Some(&b), g, pool).expect("the kernel applies");
        assert!(!t.y.requires_grad(), "{case}: no autograd history");
        let predicted = tch::no_grad(|| super::super::conv_max_pool(x, &w, Some(&b), g, pool)).unwrap();
        assert!(t.y.equal(&predicted), "{case}: the prediction kernel's map, to the bit");
        let diff = (&t.y - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{case}: pooled map differs by {diff}");
        let dy = crate::layers::channels_last(&want.randn_like());
        (&want * &dy).sum(Kind::Float).backward();
        let (dw, db) = t.weight_grad(&dy);
        assert!(crate::layers::is_channels_last(&dw), "{case}: the weights' layout");
        for (name, got, want) in [("weight", dw, w.grad()), ("bias", db, b.grad())] {
            let scale = want.abs().max().double_value(&[]).max(1.0);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 2e-5 * scale, "{case}: {name} gradient differs by {diff} (of {scale})");
        }
        // The same gradients to the bit through the contiguous (NCHW) gradient.
        let (again, _) = t.weight_grad(&dy.contiguous());
        assert!(again.equal(&t.weight_grad(&dy).0), "{case}: depends on the gradient's layout");
    }

    fn image(shape: [i64; 4]) -> Tensor {
        crate::layers::channels_last(&Tensor::randn(shape, (Kind::Float, Device::Cpu)))
    }

    #[test]
    fn gradients_match_libtorchs_autograd_on_the_shipped_first_layer_and_odd_ones() {
        crate::kernels::for_each_isa(|_isa| {
            tch::manual_seed(11);
            let plain = Geometry { stride: 1, pad: 0, dilation: 1 };
            for rectify in [true, false] {
                agrees(&image([3, 1, 96, 96]), 16, 3, plain, rectify); // LeNet's conv1 + pool1
            }
            agrees(&image([2, 3, 20, 22]), 32, 3, Geometry { stride: 1, pad: 1, dilation: 1 }, true);
            agrees(&image([2, 3, 33, 31]), 20, 5, Geometry { stride: 2, pad: 2, dilation: 1 }, true);
            agrees(&image([1, 2, 30, 30]), 5, 3, Geometry { stride: 1, pad: 1, dilation: 2 }, false);
            agrees(&image([2, 16, 24, 24]), 48, 3, plain, true); // 3 vectors, one at a time
                                                                 // Flat black regions: conv outputs of exactly 0 with a zero bias, which ReLU's
                                                                 // backward blocks (its output is not above 0), and ties in every window.
            let x = Tensor::randn([2, 1, 40, 40], (Kind::Float, Device::Cpu));
            let _ = x.narrow(2, 0, 20).zero_();
            agrees_with_bias(&crate::layers::channels_last(&x), 16, 3, plain, true, 0.0);
        });
    }

    #[test]
    fn declines_what_it_does_not_do() {
        let plain = Geometry { stride: 1, pad: 0, dilation: 1 };
        let pool = Pooling { kernel: 2, stride: 2, out_h: 4, out_w: 4, rectify: true };
        let w = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([1, 1, 10, 10], (Kind::Float, Device::Cpu));
        assert_eq!(conv_max_pool_train(&x, &w, None, plain, pool).is_some(), crate::kernels::isa().is_some());
        let wants_grad = x.copy().set_requires_grad(true);
        assert!(conv_max_pool_train(&wants_grad, &w, None, plain, pool).is_none(), "not a first layer");
        let three = Pooling { kernel: 3, stride: 2, out_h: 3, out_w: 3, ..pool };
        assert!(conv_max_pool_train(&x, &w, None, plain, three).is_none(), "a 3x3 pool");
        let xb = x.to_kind(Kind::BFloat16);
        assert!(conv_max_pool_train(&xb, &w, None, plain, pool).is_none(), "bf16");
    }
}
