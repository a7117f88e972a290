//! few_rows against libtorch: linear and few-pixel convs (with their pool), batch and
//! thread independence, declines.

use super::*;
use tch::{Device, Kind};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

#[test]
fn a_few_rows_match_libtorchs_linear_with_and_without_bias() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(7);
        // Widths with and without a partial vector, rows in blocks of 4 and the rest,
        // one thread and several; LeNet's and the baseline's shapes among them.
        for (m, n, k) in
            [(1, 500, 500), (1, 500, 256), (4, 30, 500), (2, 7, 5), (3, 1, 17), (1, 500, 9216), (4, 13, 16)]
        {
            let (x, w, b) = (randn(&[m, k]), randn(&[n, k]), randn(&[n]));
            for (bias, rectify) in [(Some(&b), false), (None, false), (Some(&b), true)] {
                let got = linear(&x, &w, bias, rectify).expect("takes it");
                let want = x.linear(&w, bias);
                let want = if rectify { want.relu() } else { want };
                assert_eq!(got.size(), [m, n]);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-4 * (k as f64).sqrt(),
                    "{m}x{n}x{k} bias {} rectify {rectify}: max diff {diff}",
                    bias.is_some()
                );
                let negative = got.min().double_value(&[]) < 0.0;
                assert!(
                    negative != rectify || n * m < 4,
                    "{m}x{n}x{k}: rectify {rectify}, negative {negative}"
                );
            }
        }
    });
}

#[test]
fn the_same_outputs_whatever_the_batch_and_threads() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        let (x, w, b) = (randn(&[4, 700]), randn(&[600, 700]), randn(&[600]));
        let all = linear(&x, &w, Some(&b), false).unwrap();
        for r in 0..4 {
            let one = linear(&x.narrow(0, r, 1).contiguous(), &w, Some(&b), false).unwrap();
            assert!(one.equal(&all.narrow(0, r, 1)), "row {r} alone differs from in a batch of 4");
        }
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let single = linear(&x, &w, Some(&b), false).unwrap();
        tch::set_num_threads(threads);
        assert!(single.equal(&all), "one thread differs from {threads}");
    });
}

#[test]
fn convs_with_a_few_output_pixels_match_libtorch() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(3);
        let cl = crate::layers::channels_last;
        // (input N, C, H, W), (outputs, kernel), stride, pad, dilation: LeNet's conv5 at
        // batch 1, then padding, stride, dilation, a batch of 1x1 outputs, 3 channels.
        for (xs, (o, k), s, p, d) in [
            ([1, 128, 4, 4], (256, 3), 1, 0, 1),
            ([1, 8, 3, 3], (5, 3), 2, 1, 1),
            ([1, 4, 5, 5], (7, 2), 3, 0, 2),
            ([4, 16, 2, 2], (33, 2), 1, 0, 1),
            ([2, 3, 3, 4], (2, 3), 1, 0, 1),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], k, k]));
            let b = randn(&[o]);
            for bias in [Some(&b), None] {
                let got = conv2d(&x, &w, bias, Geometry { stride: s, pad: p, dilation: d }, false)
                    .expect("takes it");
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert_eq!(got.size(), want.size(), "{xs:?} -> {o} k{k} s{s} p{p} d{d}");
                assert!(crate::layers::is_channels_last(&got));
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-4 * ((xs[1] * k * k) as f64).sqrt(), "{xs:?} -> {o}: max diff {diff}");
            }
        }
        let (x, w) = (cl(&randn(&[1, 8, 4, 4])), cl(&randn(&[4, 8, 3, 3])));
        assert!(
            conv2d(&x, &w, None, Geometry { stride: 1, pad: 1, dilation: 1 }, false).is_none(),
            "16 output pixels: more than MAX_ROWS"
        );
        assert!(
            conv2d(&x.contiguous(), &w, None, Geometry { stride: 1, pad: 0, dilation: 1 }, false).is_none(),
            "an NCHW input"
        );
        assert!(
            conv2d(&x, &w.contiguous(), None, Geometry { stride: 1, pad: 0, dilation: 1 }, false).is_none(),
            "NCHW weights"
        );
    });
}

#[test]
fn a_conv_with_a_few_output_pixels_and_its_max_pool_match_libtorch() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(5);
        let cl = crate::layers::channels_last;
        // LeNet's conv5 + relu5 + pool5 at batch 1 (2x2 -> 1x1), a clipped window (ceil
        // mode: 2x2 conv output, 3x3 pool of stride 2 -> 1x1; 1x3 output, 2/2 -> 1x2 with
        // the last window one pixel wide), and a batch of two.
        let mut negative_maxima = false;
        for (xs, k, (pk, ps, ph, pw)) in [
            ([1, 128, 4, 4], 3, (2, 2, 1, 1)),
            ([1, 8, 4, 4], 3, (3, 2, 1, 1)),
            ([1, 8, 3, 5], 3, (2, 2, 1, 2)),
            ([2, 16, 3, 2], 2, (2, 2, 1, 1)),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[24, xs[1], k, k]));
            let b = randn(&[24]);
            let g = Geometry { stride: 1, pad: 0, dilation: 1 };
            for rectify in [false, true] {
                let pool = Pooling { kernel: pk, stride: ps, out_h: ph, out_w: pw, rectify };
                let got = conv_max_pool(&x, &w, Some(&b), g, pool).expect("takes it");
                let conv = x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1);
                let conv = if rectify { conv.relu() } else { conv };
                let want = conv.max_pool2d([pk, pk], [ps, ps], [0, 0], [1, 1], true);
                assert_eq!(got.size(), want.size(), "{xs:?} pool {pk}/{ps}");
                assert!(crate::layers::is_channels_last(&got));
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-4 * ((xs[1] * k * k) as f64).sqrt(),
                    "{xs:?} pool {pk}/{ps}: max diff {diff}"
                );
                let below_zero = got.min().double_value(&[]) < 0.0;
                assert!(!(rectify && below_zero), "{xs:?}: a rectified maximum below 0");
                negative_maxima |= below_zero;
            }
        }
        assert!(negative_maxima, "a test that cannot fail: no maximum below 0 for the ReLU to zero");
        let (x, w) = (cl(&randn(&[1, 8, 5, 5])), cl(&randn(&[4, 8, 3, 3])));
        let g = Geometry { stride: 1, pad: 0, dilation: 1 };
        let pool = Pooling { kernel: 2, stride: 2, out_h: 2, out_w: 2, rectify: false };
        assert!(conv_max_pool(&x, &w, None, g, pool).is_none(), "9 output pixels: more than MAX_ROWS");
    });
}

#[test]
fn it_declines_what_it_does_not_compute() {
    let (x, w) = (randn(&[1, 8]), randn(&[3, 8]));
    let _g = tch::no_grad_guard();
    assert!(linear(&randn(&[5, 8]), &w, None, false).is_none(), "more than MAX_ROWS rows");
    assert!(
        linear(&randn(&[8, 1]).tr(), &w, None, false).is_some() == crate::kernels::isa().is_some(),
        "a [1, 8] view is contiguous"
    );
    assert!(
        linear(&randn(&[8, 2]).tr(), &randn(&[3, 8]), None, false).is_none(),
        "a transposed (strided) batch"
    );
    assert!(linear(&x, &randn(&[8, 3]).tr(), None, false).is_none(), "a strided weight");
    assert!(linear(&x, &w, Some(&randn(&[4])), false).is_none(), "a bias of the wrong size");
    assert!(linear(&x.to_kind(Kind::BFloat16), &w.to_kind(Kind::BFloat16), None, false).is_none(), "bf16");
    drop(_g);
    let wg = w.set_requires_grad(true);
    assert!(linear(&x, &wg, None, false).is_none(), "a gradient wanted");
    let _g = tch::no_grad_guard();
    assert_eq!(linear(&x, &wg, None, false).is_some(), crate::kernels::isa().is_some(), "no gradient wanted");
}
