//! Winograd's conv against libtorch's: maps of odd and even sizes, padding, the bias,
//! the ReLU and the pool written as the blocks are, parts of a batch, and declines.

use super::*;
use crate::layers::channels_last;

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn geo(pad: i64) -> Geometry {
    Geometry { stride: 1, pad, dilation: 1 }
}

/// The largest difference from `want`, relative to its largest magnitude.
fn relative_diff(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]);
    (got - want).abs().max().double_value(&[]) / scale
}

#[test]
fn agrees_with_libtorchs_conv_and_pool_over_sizes_and_padding() {
    crate::kernels::for_each_isa(|isa| {
        tch::manual_seed(24);
        // (N, C, H, W), outputs, pad: an even and an odd map (a last row and column of
        // blocks half outside it), padding 1 and 2, a wide map, VGG's conv3_2 at batch 2,
        // LeNet's conv3 and conv4 (for one image through the fused loop, for two through the
        // products in parts), rows of 8 blocks (the fused loop's 6 + 2).
        for (xs, o, pad) in [
            ([1, 32, 10, 18], 16, 0),
            ([2, 32, 22, 22], 64, 0),
            ([1, 64, 10, 10], 128, 0),
            ([2, 64, 10, 10], 128, 0),
            ([2, 128, 10, 10], 16, 0),
            ([3, 128, 9, 11], 24, 0),
            ([1, 136, 7, 8], 8, 1),
            ([2, 128, 5, 6], 16, 2),
            ([1, 128, 4, 40], 32, 0),
            ([2, 256, 19, 19], 256, 0),
        ] {
            let x = channels_last(&randn(&xs));
            let w = channels_last(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let want = x.conv2d(&w, Some(&b), [1, 1], [pad, pad], [1, 1], 1);
            assert!(want.min().double_value(&[]) < 0.0, "a test that cannot fail: nothing to rectify");
            let case = format!("{xs:?} -> {o} pad {pad}");
            for rectify in [false, true] {
                let got = conv2d(&x, &w, Some(&b), geo(pad), rectify, &Packed::default());
                let Some(got) = got else {
                    assert_eq!(isa, Isa::Avx512, "{case}: declined with AVX2");
                    continue;
                };
                let want = if rectify { want.relu() } else { want.shallow_clone() };
                assert_eq!(got.size(), want.size(), "{case}");
                assert!(crate::layers::is_channels_last(&got), "{case}: channels-last output");
                let diff = relative_diff(&got, &want);
                assert!(diff < 1e-5, "{case} rectify {rectify}: relative diff {diff}");
            }
            let (oh, ow) = (want.size()[2], want.size()[3]);
            for rectify in [false, true] {
                let pool = Pooling { kernel: 2, stride: 2, out_h: oh / 2, out_w: ow / 2, rectify };
                let pooled = want.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                let pooled = if rectify { pooled.relu() } else { pooled };
                let Some(got) = conv_max_pool(&x, &w, Some(&b), geo(pad), pool, &Packed::default()) else {
                    assert_eq!(isa, Isa::Avx512, "{case}: pooled declined with AVX2");
                    continue;
                };
                assert_eq!(got.size(), pooled.size(), "{case}");
                let diff = relative_diff(&got, &pooled);
                assert!(diff < 1e-5, "{case} pooled, rectify {rectify}: relative diff {diff}");
            }
        }
    });
}

#[test]
fn a_batch_in_parts_gives_each_image_its_own_output_and_changed_weights_are_transformed_again() {
    crate::kernels::with_isa(Some(Isa::Avx2), || {
        if crate::kernels::detected_isa().is_none() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        tch::manual_seed(25);
        // 4 blocks, 32 KB of transformed input per image: PART_BYTES holds 64, so 1200
        // images go in many parts (the last one short).
        let x = channels_last(&randn(&[1200, 128, 6, 6]));
        assert!(16 * 4 * 128 * 4 * 1200 > PART_BYTES * 2);
        let mut w = channels_last(&randn(&[8, 128, 3, 3]));
        let packed = Packed::default();
        let got = conv2d(&x, &w, None, geo(0), false, &packed).expect("takes it");
        let want = x.conv2d(&w, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert!(relative_diff(&got, &want) < 1e-5);
        // The same weight tensor, changed in place (as a solver step changes it).
        tch::no_grad(|| {
            let _ = w.g_mul_scalar_(-2.0);
        });
        let got = conv2d(&x, &w, None, geo(0), false, &packed).expect("takes it");
        let want = x.conv2d(&w, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert!(relative_diff(&got, &want) < 1e-5, "the old transformed weights were used");
    });
}

#[test]
fn declines_what_it_does_not_compute() {
    crate::kernels::with_isa(Some(Isa::Avx2), || {
        let x = channels_last(&randn(&[1, 128, 8, 8]));
        let w = channels_last(&randn(&[16, 128, 3, 3]));
        let packed = Packed::default();
        assert!(
            conv2d(&x, &w, None, geo(0), false, &packed).is_some()
                || crate::kernels::detected_isa().is_none()
        );
        let stride = Geometry { stride: 2, pad: 0, dilation: 1 };
        let dilated = Geometry { stride: 1, pad: 0, dilation: 2 };
        for (why, g) in [("stride 2", stride), ("dilation 2", dilated)] {
            assert!(conv2d(&x, &w, None, g, false, &packed).is_none(), "{why}");
        }
        let few = channels_last(&randn(&[2, 24, 8, 8]));
        let w24 = channels_last(&randn(&[16, 24, 3, 3]));
        assert!(conv2d(&few, &w24, None, geo(0), false, &packed).is_none(), "24 input channels, 2 images");
        let w12in = channels_last(&randn(&[16, 12, 3, 3]));
        let twelve = channels_last(&randn(&[1, 12, 8, 8]));
        assert!(conv2d(&twelve, &w12in, None, geo(0), false, &packed).is_none(), "12 input channels");
        let w12 = channels_last(&randn(&[12, 128, 3, 3]));
        assert!(conv2d(&x, &w12, None, geo(0), false, &packed).is_none(), "12 outputs");
        let w5 = channels_last(&randn(&[16, 128, 5, 5]));
        assert!(conv2d(&x, &w5, None, geo(0), false, &packed).is_none(), "a 5x5 kernel");
        assert!(conv2d(&x.contiguous(), &w, None, geo(0), false, &packed).is_none(), "NCHW input");
        let tiny = channels_last(&randn(&[1, 128, 4, 4]));
        assert!(conv2d(&tiny, &w, None, geo(0), false, &packed).is_none(), "2x2 outputs: few_rows' call");
        let grad = w.detach().set_requires_grad(true);
        assert!(conv2d(&x, &grad, None, geo(0), false, &packed).is_none(), "a gradient wanted");
        // Pools: 3x3 windows, stride 1, and a ceil-mode window clipped at the edge (6x6 map).
        for (why, pool) in [
            ("3x3 pool", Pooling { kernel: 3, stride: 2, out_h: 2, out_w: 2, rectify: false }),
            ("stride 1", Pooling { kernel: 2, stride: 1, out_h: 5, out_w: 5, rectify: false }),
            ("clipped window", Pooling { kernel: 2, stride: 2, out_h: 4, out_w: 3, rectify: false }),
        ] {
            assert!(conv_max_pool(&x, &w, None, geo(0), pool, &packed).is_none(), "{why}");
        }
    });
    crate::kernels::with_isa(Some(Isa::Avx512), || {
        let x = channels_last(&randn(&[1, 128, 8, 8]));
        let w = channels_last(&randn(&[16, 128, 3, 3]));
        assert!(conv2d(&x, &w, None, geo(0), false, &Packed::default()).is_none(), "unmeasured on AVX-512");
    });
}

/// autograd's gradient of `sum(conv2d(x, w) * dy)` with respect to `w`.
fn autograd_weight_grad(x: &Tensor, w: &Tensor, dy: &Tensor, pad: i64) -> Tensor {
    let w = w.detach().set_requires_grad(true);
    let y = x.conv2d(&w, None::<&Tensor>, [1, 1], [pad, pad], [1, 1], 1);
    (y * dy).sum(Kind::Float).backward();
    w.grad()
}

#[test]
fn weight_gradient_agrees_with_autograds_over_sizes_padding_and_parts() {
    crate::kernels::with_isa(Some(Isa::Avx2), || {
        if crate::kernels::detected_isa().is_none() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        tch::manual_seed(26);
        // Even and odd maps (a last row and column of blocks half outside), padding 1 and
        // 2, a batch in many parts (GRADIENT_PART_BYTES), VGG's conv3_2 at batch 2.
        for (xs, o, pad) in [
            ([2, 32, 22, 22], 64, 0),
            ([3, 64, 9, 11], 24, 0),
            ([1, 40, 7, 8], 8, 1),
            ([2, 32, 5, 6], 16, 2),
            ([300, 64, 10, 10], 32, 1),
            ([2, 256, 19, 19], 256, 0),
        ] {
            let x = channels_last(&randn(&xs));
            let w = channels_last(&randn(&[o, xs[1], 3, 3]));
            let (oh, ow) = (xs[2] + 2 * pad - 2, xs[3] + 2 * pad - 2);
            let dy = channels_last(&randn(&[xs[0], o, oh, ow]));
            let want = autograd_weight_grad(&x, &w, &dy, pad);
            let case = format!("{xs:?} -> {o} pad {pad}");
            let got = weight_grad(&x, &dy, geo(pad)).unwrap_or_else(|| panic!("{case}: declined"));
            assert_eq!(got.size(), want.size(), "{case}");
            assert!(crate::layers::is_channels_last(&got), "{case}: channels-last");
            let diff = relative_diff(&got, &want);
            assert!(diff < 1e-5, "{case}: relative diff {diff}");
            // An NCHW gradient is read as well (copied first).
            let nchw = weight_grad(&x, &dy.contiguous(), geo(pad)).expect("NCHW dy");
            assert!(relative_diff(&nchw, &want) < 1e-5, "{case}: NCHW dy");
        }
        let x = channels_last(&randn(&[1, 64, 8, 8]));
        let dy = channels_last(&randn(&[1, 16, 6, 6]));
        assert!(weight_grad(&x, &dy, geo(0)).is_some());
        let dy12 = channels_last(&randn(&[1, 12, 6, 6]));
        assert!(weight_grad(&x, &dy12, geo(0)).is_none(), "12 outputs");
        assert!(weight_grad(&x, &dy, geo(1)).is_none(), "dy not the output's size");
        let strided = Geometry { stride: 2, pad: 0, dilation: 1 };
        assert!(weight_grad(&x, &dy, strided).is_none(), "stride 2");
        assert!(weight_grad(&x.contiguous(), &dy, geo(0)).is_none(), "NCHW input");
        let few = channels_last(&randn(&[1, 24, 8, 8]));
        assert!(weight_grad(&few, &dy, geo(0)).is_none(), "24 input channels");
    });
}

#[test]
fn a_conv_of_few_channels_is_taken_for_one_image_only() {
    crate::kernels::with_isa(Some(Isa::Avx2), || {
        if crate::kernels::detected_isa().is_none() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        tch::manual_seed(27);
        // LeNet's conv2 + pool2 (16 -> 32, 45x45 conv rows pooled to 22x22), 8 channels
        // with padding on an odd map, and 24 channels.
        for (xs, o, pad) in
            [([1i64, 16, 47, 47], 32i64, 0i64), ([1, 8, 9, 11], 16, 1), ([1, 24, 12, 12], 8, 0)]
        {
            let x = channels_last(&randn(&xs));
            let w = channels_last(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let conv = x.conv2d(&w, Some(&b), [1, 1], [pad, pad], [1, 1], 1);
            let (oh, ow) = (conv.size()[2], conv.size()[3]);
            let pool = Pooling { kernel: 2, stride: 2, out_h: oh / 2, out_w: ow / 2, rectify: true };
            let want = conv.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).relu();
            let case = format!("{xs:?} -> {o} pad {pad}");
            let got = conv_max_pool(&x, &w, Some(&b), geo(pad), pool, &Packed::default())
                .unwrap_or_else(|| panic!("{case}: declined"));
            let diff = relative_diff(&got, &want);
            assert!(diff < 1e-5, "{case}: relative diff {diff}");
            let plain = conv2d(&x, &w, Some(&b), geo(pad), false, &Packed::default()).expect("plain conv");
            let diff = relative_diff(&plain, &conv);
            assert!(diff < 1e-5, "{case}: plain conv, relative diff {diff}");
        }
        let two = channels_last(&randn(&[2, 16, 10, 10]));
        let w = channels_last(&randn(&[16, 16, 3, 3]));
        let pool = Pooling { kernel: 2, stride: 2, out_h: 4, out_w: 4, rectify: false };
        assert!(conv_max_pool(&two, &w, None, geo(0), pool, &Packed::default()).is_none(), "2 images");
        assert!(conv2d(&two, &w, None, geo(0), false, &Packed::default()).is_none(), "2 images, no pool");
    });
}

#[test]
fn a_nan_in_the_input_reaches_the_pooled_outputs_libtorch_gives_nan() {
    crate::kernels::with_isa(Some(Isa::Avx2), || {
        if crate::kernels::detected_isa().is_none() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        tch::manual_seed(28);
        // The fused loop (32 channels) and the products in parts (256).
        for (xs, o) in [([1i64, 32, 12, 12], 16i64), ([1, 256, 10, 10], 256)] {
            let x = randn(&xs);
            let _ = x.get(0).get(3).get(5).get(6).fill_(f64::NAN);
            let x = channels_last(&x);
            let w = channels_last(&randn(&[o, xs[1], 3, 3]));
            let conv = x.conv2d(&w, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1);
            let (oh, ow) = (conv.size()[2], conv.size()[3]);
            for rectify in [false, true] {
                let pooled = conv.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                let want = if rectify { pooled.relu() } else { pooled };
                let pool = Pooling { kernel: 2, stride: 2, out_h: oh / 2, out_w: ow / 2, rectify };
                let got = conv_max_pool(&x, &w, None, geo(0), pool, &Packed::default()).expect("taken");
                let nans = want.isnan().sum(Kind::Int64).int64_value(&[]);
                assert!(nans > 0, "a test that cannot fail");
                assert!(
                    got.isnan().eq_tensor(&want.isnan()).all().int64_value(&[]) == 1,
                    "{xs:?} relu {rectify}: NaNs differ"
                );
                let finite = want.isnan().logical_not();
                let diff =
                    (got.masked_select(&finite) - want.masked_select(&finite)).abs().max().double_value(&[]);
                assert!(diff < 1e-3, "{xs:?} relu {rectify}: off by {diff}");
            }
        }
    });
}
