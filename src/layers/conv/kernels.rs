//! The chains of fkpnet's own kernels (`crate::kernels`) a conv layer runs, for predictions and
//! for training steps, each falling back to the next and finally to libtorch.

use crate::kernels::direct_conv::Geometry;
use crate::layers::{add_gradients, channels_last, is_channels_last};
use tch::Tensor;

/// Handles on the weight and the bias (where the layer has one), for a kernel's closure.
pub(super) fn weight_and_bias(params: &[Tensor]) -> (Tensor, Option<Tensor>) {
    (params[0].shallow_clone(), params.get(1).map(|b| b.shallow_clone()))
}

/// The smallest convs a training step runs through Winograd's transforms: input channels
/// and output pixels per image. On an AMD EPYC (Zen 3), batch 64, alternated steps in one
/// process (least disturbed of 4-15): VGG (64-256 channels, 17x17 to 92x92 outputs)
/// 2,731 ms a step against 3,440 without; LeNet (conv3: 32 channels at 20x20, conv4: 64
/// at 8x8, and conv2's input gradient) 117 ms against 101, so LeNet stays with libtorch
/// (again with Winograd's weight gradients in both: 101 against 90 ms).
const TRAIN_MIN_CHANNELS: i64 = 64;
const TRAIN_MIN_PIXELS: i64 = 256;

/// A training step's conv by Winograd's transforms (`kernels::winograd`, where it takes the
/// call and its input's gradient can be had as a conv too), put into autograd's graph
/// with a backward of fkpnet's own (`autograd::with_input_gradient`) that computes the
/// input's gradient by the same transforms: the conv of the output's gradient with the
/// weights' taps flipped and their channels swapped. The weight's and the bias's
/// gradients stay with the caller's hook. `None`: libtorch's conv and backward.
///
/// Why: oneDNN's convs here already ran near the CPU's peak, forward and for the input's
/// gradient; the transforms do 2.25x fewer multiplications (the kernel's file says more).
fn winograd_forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: Geometry,
    packed: &crate::kernels::winograd::Packed,
) -> Option<Tensor> {
    use crate::kernels::{conv_grad, winograd};
    let xs = x.size();
    let pixels = (xs[2] + 2 * g.pad - 2) * (xs[3] + 2 * g.pad - 2);
    let applies =
        conv_grad::input_grad_applies(3, g) && xs[1] >= TRAIN_MIN_CHANNELS && pixels >= TRAIN_MIN_PIXELS;
    if !applies {
        return None;
    }
    let y = tch::no_grad(|| winograd::conv2d(&x.detach(), &w.detach(), bias, g, false, packed))?;
    let w = w.shallow_clone();
    // Where Winograd declines the input's gradient (fewer than 32 outputs), libtorch's conv.
    let input_grad = move |dy: &Tensor| {
        let dy = if is_channels_last(dy) { dy.shallow_clone() } else { channels_last(dy) };
        Some(tch::no_grad(|| {
            winograd::input_grad(&dy, &w, g).unwrap_or_else(|| conv_grad::input_grad(&dy, &w, g))
        }))
    };
    crate::autograd::with_input_gradient(&y, x, input_grad).then_some(y)
}

/// The weights as fkpnet's conv kernels pack them, kept between calls.
#[derive(Default)]
pub(super) struct Packings {
    pub(super) wide: crate::kernels::wide_conv::Packed,
    pub(super) winograd: crate::kernels::winograd::Packed,
}

/// A conv for predictions by fkpnet's own kernels (rectified where asked): `few_rows`
/// where the output has a few pixels, else `winograd` (3x3, 32 or more channels, AVX2),
/// else `wide_conv`; `None` where none takes the call (the caller then uses libtorch).
pub(super) fn own_conv(
    xs: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Geometry,
    rectify: bool,
    packed: &Packings,
) -> Option<Tensor> {
    use crate::kernels::{few_rows, wide_conv, winograd};
    few_rows::conv2d(xs, w, b, g, rectify)
        .or_else(|| winograd::conv2d(xs, w, b, g, rectify, &packed.winograd))
        .or_else(|| wide_conv::conv2d(xs, w, b, g, rectify, &packed.wide))
}

/// A training step's conv whose weight gradient fkpnet's kernels compute (`None`: the
/// caller runs libtorch's conv): forward by Winograd's transforms where
/// `winograd_forward` takes it, else libtorch's conv with the weight and bias detached,
/// so that autograd computes only the input's gradient; a hook on the output
/// (`autograd::on_gradient`) gets the output's gradient in autograd's pass and adds the
/// weight's gradient (Winograd's for 3x3 convs where it applies, else `conv_grad`'s)
/// and the gradient's sum for the bias.
pub(super) fn trained(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    o: i64,
    k: i64,
    g: Geometry,
    packed: &crate::kernels::winograd::Packed,
) -> Option<Tensor> {
    use crate::kernels::conv_grad;
    if !conv_grad::applies(x, o, k, g) || !w.requires_grad() || !x.requires_grad() {
        return None;
    }
    let (s, bias) = ([g.stride, g.stride], b.map(|b| b.detach()));
    let y = match winograd_forward(x, w, bias.as_ref(), g, packed) {
        Some(y) => y,
        None => x.conv2d(&w.detach(), bias.as_ref(), s, [g.pad; 2], [g.dilation; 2], 1),
    };
    // The input goes with the hook's call: autograd's graph (which holds the hook)
    // lives to the end of the backward pass, and VGG's conv1_2 input held to then
    // raised its peak memory by 140 MiB.
    let mut x = Some(x.detach());
    let (w, b) = (w.shallow_clone(), b.map(|b| b.shallow_clone()));
    let add_gradients = move |dy: &Tensor| {
        let x = x.take().expect("one backward pass per training step");
        let winograd = || crate::kernels::winograd::weight_grad(&x, dy, g);
        let dw = conv_grad::timed(|| (k == 3).then(winograd).flatten())
            .or_else(|| conv_grad::weight_grad(&x, dy, k, g))
            .expect("checked in the forward pass");
        let mut grads = vec![(&w, dw)];
        let db = || dy.sum_dim_intlist([0i64, 2, 3].as_slice(), false, tch::Kind::Float);
        grads.extend(b.as_ref().filter(|b| b.requires_grad()).map(|b| (b, db())));
        add_gradients(&grads);
    };
    crate::autograd::on_gradient(&y, add_gradients).then_some(y)
}
