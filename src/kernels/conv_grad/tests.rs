//! The weight gradient against libtorch's autograd: geometries, tails, threads, declines;
//! the input gradient as a forward conv against libtorch's backward.

use super::*;

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// libtorch's weight gradient of conv2d(x, w) for the output gradient `dy`.
fn libtorchs(x: &Tensor, w: &Tensor, dy: &Tensor, g: Geometry) -> Tensor {
    let w = w.detach().set_requires_grad(true);
    let y = x.conv2d(&w, None::<&Tensor>, [g.stride; 2], [g.pad; 2], [g.dilation; 2], 1);
    (&y * dy).sum(Kind::Float).backward();
    w.grad()
}

#[test]
fn agrees_with_libtorchs_autograd_over_geometries() {
    crate::kernels::for_each_isa(|isa| {
        tch::manual_seed(21);
        let cl = crate::layers::channels_last;
        // (input N, C, H, W), (outputs, kernel), stride, pad, dilation: VGG's conv1_2 and
        // conv3_2 at a small batch, LeNet's conv3, padding, stride, dilation, 8 and 24
        // input channels (a half tile), outputs that are not whole tiles of 6, rows longer
        // than one run of pixels, more images than runs.
        for (xs, (o, k), s, p, d) in [
            ([2, 64, 20, 40], (64, 3), 1, 0, 1),
            ([1, 256, 19, 19], (256, 3), 1, 0, 1),
            ([3, 32, 22, 22], (64, 3), 1, 0, 1),
            ([2, 16, 15, 15], (40, 3), 2, 1, 1),
            ([1, 8, 11, 11], (5, 3), 1, 2, 2),
            ([2, 24, 7, 70], (7, 1), 1, 0, 1),
            ([11, 16, 8, 8], (13, 3), 1, 1, 1),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], k, k]));
            let g = Geometry { stride: s, pad: p, dilation: d };
            let y = x.conv2d(&w, None::<&Tensor>, [s; 2], [p; 2], [d; 2], 1);
            let dy = cl(&y.randn_like());
            let case = format!("{xs:?} -> {o} k{k} s{s} p{p} d{d}");
            let Some(got) = weight_grad(&x, &dy, k, g) else {
                assert_eq!(isa, Isa::Avx512, "{case}: declined with AVX2");
                continue;
            };
            assert_eq!(isa, Isa::Avx2, "{case}: only the AVX2 loops compute it");
            let want = libtorchs(&x, &w, &dy, g);
            assert_eq!(got.size(), want.size(), "{case}");
            assert!(crate::layers::is_channels_last(&got), "{case}: the weights' layout");
            let scale = want.abs().max().double_value(&[]);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-5 * scale, "{case}: max diff {diff} of {scale}");
            // An NCHW output gradient (read as it is) and a strided one (copied) give the
            // same bits.
            assert!(weight_grad(&x, &dy.contiguous(), k, g).unwrap().equal(&got), "{case}: NCHW dy");
            let strided = dy.permute([0, 1, 3, 2]).contiguous().permute([0, 1, 3, 2]);
            assert!(!strided.is_contiguous() && !crate::layers::is_channels_last(&strided));
            assert!(weight_grad(&x, &strided, k, g).unwrap().equal(&got), "{case}: a strided dy");
        }
    });
}

#[test]
fn the_same_bits_whatever_the_threads() {
    crate::kernels::for_each_isa(|isa| {
        if isa != Isa::Avx2 {
            return;
        }
        let cl = crate::layers::channels_last;
        let x = cl(&randn(&[9, 32, 12, 12]));
        let dy = cl(&randn(&[9, 48, 10, 10]));
        let g = Geometry { stride: 1, pad: 0, dilation: 1 };
        let all = weight_grad(&x, &dy, 3, g).unwrap();
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = weight_grad(&x, &dy, 3, g).unwrap();
        tch::set_num_threads(threads);
        assert!(one.equal(&all), "one thread differs from {threads}");
    });
}

#[test]
fn declines_what_it_does_not_compute() {
    let cl = crate::layers::channels_last;
    let g = Geometry { stride: 1, pad: 0, dilation: 1 };
    let (x, dy) = (cl(&randn(&[2, 16, 8, 8])), cl(&randn(&[2, 4, 6, 6])));
    let avx2 = crate::kernels::isa() == Some(Isa::Avx2);
    assert_eq!(weight_grad(&x, &dy, 3, g).is_some(), avx2, "AVX2 only");
    assert!(weight_grad(&cl(&randn(&[2, 3, 8, 8])), &dy, 3, g).is_none(), "3 input channels");
    assert!(weight_grad(&x.contiguous(), &dy, 3, g).is_none(), "an NCHW input");
    assert!(weight_grad(&x, &dy, 5, g).is_none(), "a gradient of the wrong size");
    let (small, dys) = (cl(&randn(&[2, 16, 6, 6])), cl(&randn(&[2, 4, 4, 4])));
    assert!(weight_grad(&small, &dys, 3, g).is_none(), "16 output pixels: fewer than MIN_PIXELS");
    let xb = x.to_kind(Kind::BFloat16);
    assert!(weight_grad(&xb, &dy.to_kind(Kind::BFloat16), 3, g).is_none(), "bf16");
}

#[test]
fn the_input_gradient_as_a_forward_conv_agrees_with_libtorchs_backward() {
    tch::manual_seed(24);
    let cl = crate::layers::channels_last;
    // (input N, C, H, W), (outputs, kernel), pad, dilation: VGG's conv2_1 at a small
    // batch, LeNet's conv3, "same" padding, a 5x5 kernel with part padding, dilation, a 1x1.
    for (xs, (o, k), p, d) in [
        ([2, 64, 12, 30], (128, 3), 0, 1),
        ([3, 32, 22, 22], (64, 3), 0, 1),
        ([2, 16, 9, 9], (24, 3), 1, 1),
        ([1, 8, 11, 13], (5, 5), 1, 1),
        ([1, 8, 11, 11], (7, 3), 2, 2),
        ([2, 16, 7, 7], (4, 1), 0, 1),
    ] {
        let g = Geometry { stride: 1, pad: p, dilation: d };
        assert!(input_grad_applies(k, g));
        let x = cl(&randn(&xs)).set_requires_grad(true);
        let w = cl(&randn(&[o, xs[1], k, k]));
        let y = x.conv2d(&w, None::<&Tensor>, [1, 1], [p; 2], [d; 2], 1);
        let dy = cl(&y.randn_like());
        (&y * &dy).sum(Kind::Float).backward();
        let (got, want) = (input_grad(&dy, &w, g), x.grad());
        let case = format!("{xs:?} -> {o} k{k} p{p} d{d}");
        assert_eq!(got.size(), want.size(), "{case}");
        let scale = want.abs().max().double_value(&[]);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5 * scale, "{case}: max diff {diff} of {scale}");
    }
    // A stride, or more padding than the kernel reaches: libtorch's backward instead.
    assert!(!input_grad_applies(3, Geometry { stride: 2, pad: 1, dilation: 1 }));
    assert!(!input_grad_applies(3, Geometry { stride: 1, pad: 3, dilation: 1 }));
    assert!(input_grad_applies(3, Geometry { stride: 1, pad: 4, dilation: 2 }));
}
