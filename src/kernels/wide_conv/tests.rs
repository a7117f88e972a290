//! wide_conv against libtorch: geometries, the fused pool, repacking, threads, declines.

use super::*;
use tch::{Device, Kind};

fn geo(stride: i64, pad: i64, dilation: i64) -> Geometry {
    Geometry { stride, pad, dilation }
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

#[test]
fn large_outputs_stream_to_the_same_values() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(12);
        let cl = crate::layers::channels_last;
        // VGG's conv1_1 at batch 1 (64 channels: whole lines streamed) and 48 channels (the
        // last block's 16 stored as before, beside streamed lines), rectified and not.
        for (xs, o) in [([1, 1, 96, 96], 64), ([1, 4, 80, 80], 48)] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let want = x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1);
            assert!(want.numel() * 4 >= STREAM_MIN_BYTES, "a case that streams");
            for rectify in [false, true] {
                let got =
                    conv2d(&x, &w, Some(&b), geo(1, 0, 1), rectify, &Packed::default()).expect("takes it");
                let want = if rectify { want.relu() } else { want.shallow_clone() };
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-4 * ((xs[1] * 9) as f64).sqrt(),
                    "{xs:?} -> {o} rectify {rectify}: max diff {diff}"
                );
            }
        }
    });
}

#[test]
fn agrees_with_libtorch_over_geometries_and_repacks_changed_weights() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(11);
        let cl = crate::layers::channels_last;
        // (input N, C, H, W), (outputs, kernel), stride, pad, dilation: LeNet's conv3 and
        // conv4 at batch 1, then padding, stride, dilation, outputs that are not whole
        // blocks, one and three channels, rows of 13 (a 12-tile and a 4-tile overlapping it),
        // of 3 (1-tiles), of 19 (VGG's conv3_1: 12 and an overlapping 8), of 42 (3 x 14), of
        // 44 (3 x 12 + 8), of 17 (14 and an overlapping 4), of 10 and of 6 (8 or 4, then an
        // overlapping 4).
        for (xs, (o, k), s, p, d) in [
            ([1, 32, 22, 22], (64, 3), 1, 0, 1),
            ([1, 64, 10, 10], (128, 3), 1, 0, 1),
            ([2, 8, 9, 9], (40, 3), 2, 1, 1),
            ([1, 5, 11, 11], (5, 3), 1, 2, 2),
            ([3, 1, 15, 15], (33, 3), 1, 0, 1),
            ([1, 3, 5, 5], (16, 3), 1, 0, 1),
            ([4, 16, 6, 6], (64, 1), 1, 0, 1),
            ([1, 16, 21, 21], (32, 3), 1, 0, 1),
            ([1, 8, 44, 44], (32, 3), 1, 0, 1),
            ([1, 8, 46, 46], (32, 3), 1, 0, 1),
            ([1, 8, 19, 19], (40, 3), 1, 0, 1),
            ([1, 8, 12, 12], (32, 3), 1, 0, 1),
            ([1, 4, 8, 8], (32, 3), 1, 0, 1),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], k, k]));
            let b = randn(&[o]);
            for bias in [Some(&b), None] {
                let packed = Packed::default();
                let got = conv2d(&x, &w, bias, geo(s, p, d), false, &packed).expect("takes it");
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert_eq!(got.size(), want.size(), "{xs:?} -> {o} k{k} s{s} p{p} d{d}");
                assert!(crate::layers::is_channels_last(&got));
                let tol = 1e-4 * ((xs[1] * k * k) as f64).sqrt();
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < tol, "{xs:?} -> {o} k{k} s{s} p{p} d{d}: max diff {diff}");
                // A plain ReLU after the conv, applied by the kernel.
                let rectified = conv2d(&x, &w, bias, geo(s, p, d), true, &packed).expect("takes it");
                let diff = (&rectified - &want.relu()).abs().max().double_value(&[]);
                assert!(diff < tol, "{xs:?} -> {o} rectified: max diff {diff}");
                assert!(want.min().double_value(&[]) < 0.0, "a test that cannot fail: nothing to rectify");
                // The solver changes weights in place: the packing must follow.
                let _ = w.shallow_clone().g_add_scalar_(0.5);
                let again = conv2d(&x, &w, bias, geo(s, p, d), false, &packed).unwrap();
                let want = x.conv2d(&w, bias, [s, s], [p, p], [d, d], 1);
                assert!(
                    (&again - &want).abs().max().double_value(&[]) < tol,
                    "stale packing after an update"
                );
            }
        }
    });
}

#[test]
#[cfg(target_arch = "x86_64")]
fn rows_are_cut_into_the_tiles_that_recompute_least() {
    // (row width, main tile, the tiles in order): 14s unless 12s leave a cheaper rest.
    for (ow, main) in [(92, 14), (44, 12), (42, 14), (19, 12), (17, 14), (20, 12), (3, 14)] {
        assert_eq!(avx512::main_tile(ow), main, "rows of {ow}");
    }
    assert_eq!(avx512::rest_tile(8, 92), 8);
    assert_eq!(avx512::rest_tile(3, 17), 4, "covers the rest, overlapping the tile before");
    assert_eq!(avx512::rest_tile(10, 10), 8, "no tile covers a row of 10: 8 first");
    assert_eq!(avx512::rest_tile(2, 3), 1, "rows narrower than 4");
}

#[test]
fn pooled_agrees_with_libtorchs_conv_then_max_pool() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(12);
        let cl = crate::layers::channels_last;
        // LeNet's conv3 + pool3 and conv4 + pool4 at batch 1; a batch of 3 with padding;
        // Caffe's ceil mode (the last window clipped); overlapping 3x3/2 windows; a 3x3/3
        // pool clipped on an odd map; a stride-2 conv.
        for (xs, o, (s, p), (pk, ps, ceil)) in [
            ([1, 32, 22, 22], 64, (1, 0), (2, 2, false)),
            ([1, 64, 10, 10], 128, (1, 0), (2, 2, false)),
            ([3, 24, 9, 9], 40, (1, 1), (2, 2, false)),
            ([1, 20, 11, 11], 33, (1, 0), (2, 2, true)),
            ([2, 17, 13, 13], 16, (1, 1), (3, 2, false)),
            ([1, 18, 12, 12], 48, (1, 0), (3, 3, true)),
            ([4, 32, 15, 15], 64, (2, 1), (2, 2, true)),
        ] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let pooled = x
                .conv2d(&w, Some(&b), [s, s], [p, p], [1, 1], 1)
                .max_pool2d([pk; 2], [ps; 2], [0; 2], [1; 2], ceil);
            let g = Geometry { stride: s, pad: p, dilation: 1 };
            // The maxima as they are, and rectified (a plain ReLU between conv and pool).
            for rectify in [false, true] {
                let want = if rectify { pooled.relu() } else { pooled.shallow_clone() };
                let (out_h, out_w) = (want.size()[2], want.size()[3]);
                let pool = Pooling { kernel: pk, stride: ps, out_h, out_w, rectify };
                let case = format!("{xs:?} -> {o} s{s} p{p}, pool {pk}/{ps} ceil {ceil} rectify {rectify}");
                let got = conv_max_pool(&x, &w, Some(&b), g, pool, &Packed::default()).expect(&case);
                assert_eq!(got.size(), want.size(), "{case}");
                assert!(crate::layers::is_channels_last(&got), "{case}");
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-4 * ((xs[1] * 9) as f64).sqrt(), "{case}: max diff {diff}");
            }
        }
        let (x, w) = (cl(&randn(&[1, 32, 10, 10])), cl(&randn(&[8, 32, 3, 3])));
        let g = Geometry { stride: 1, pad: 0, dilation: 1 };
        let past = Pooling { kernel: 2, stride: 2, out_h: 5, out_w: 4, rectify: false };
        assert!(conv_max_pool(&x, &w, None, g, past, &Packed::default()).is_none(), "a window past the map");
        let tiny = cl(&randn(&[1, 32, 4, 4]));
        let one = Pooling { kernel: 2, stride: 2, out_h: 1, out_w: 1, rectify: false };
        assert!(
            conv_max_pool(&tiny, &w, None, g, one, &Packed::default()).is_none(),
            "few_rows' case: 2x2 outputs"
        );
    });
}

#[test]
fn the_same_outputs_whatever_the_threads_and_declines_what_it_does_not_compute() {
    let cl = crate::layers::channels_last;
    let (x, w) = (cl(&randn(&[1, 32, 12, 12])), cl(&randn(&[64, 32, 3, 3])));
    let packed = Packed::default();
    let _g = tch::no_grad_guard();
    crate::kernels::for_each_isa(|isa| {
        let all = conv2d(&x, &w, None, geo(1, 0, 1), false, &packed).unwrap();
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let single = conv2d(&x, &w, None, geo(1, 0, 1), false, &packed).unwrap();
        tch::set_num_threads(threads);
        assert!(single.equal(&all), "one thread differs from {threads}");
        let five = cl(&randn(&[5, 32, 12, 12]));
        let taken = conv2d(&five, &w, None, geo(1, 0, 1), false, &packed).is_some();
        assert_eq!(taken, max_batch(isa) >= 5, "a batch of 5 with {isa:?}");
    });
    assert!(conv2d(&x.contiguous(), &w, None, geo(1, 0, 1), false, &packed).is_none(), "an NCHW input");
    assert!(
        conv2d(&x, &w, Some(&randn(&[3])), geo(1, 0, 1), false, &packed).is_none(),
        "a bias of the wrong size"
    );
    drop(_g);
    let wg = w.set_requires_grad(true);
    assert!(conv2d(&x, &wg, None, geo(1, 0, 1), false, &packed).is_none(), "a gradient wanted");
}

#[test]
fn large_weights_split_by_channels_to_the_same_bits_as_by_rows() {
    crate::kernels::for_each_isa(|_isa| {
        let _g = tch::no_grad_guard();
        tch::manual_seed(13);
        let cl = crate::layers::channels_last;
        // VGG's conv3_2 at batch 1 (8 blocks), 80 outputs from 304 channels (3 blocks, the
        // last half full) and 150 from 224 (5 blocks, the last 22 wide); alone and with their
        // 2x2 pool; on 2 threads and on 4 (groups of 2 and 1 blocks, 1 and 2).
        for (xs, o) in [([1, 256, 19, 19], 256), ([2, 304, 7, 7], 80), ([1, 224, 6, 6], 150)] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let p = prepare(&x, &w, Some(&b), geo(1, 0, 1)).expect("takes it");
            assert!(p.blocks() * p.taps() * NR * 4 >= SPLIT_MIN_BYTES, "a case that splits");
            let want = x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1).relu();
            let oh = want.size()[2] / 2;
            let pool = Pooling { kernel: 2, stride: 2, out_h: oh, out_w: oh, rectify: true };
            let want_pooled = want.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            let threads = tch::get_num_threads();
            let run = |threads: i32| {
                tch::set_num_threads(threads);
                let packed = Packed::default();
                let alone = conv2d(&x, &w, Some(&b), geo(1, 0, 1), true, &packed).expect("takes it");
                let pooled = conv_max_pool(&x, &w, Some(&b), geo(1, 0, 1), pool, &packed).expect("takes it");
                (channel_groups(&p), alone, pooled)
            };
            let (rows, by_rows, by_rows_pooled) = run(1);
            let split: Vec<_> = [2, 4].map(run).into();
            tch::set_num_threads(threads);
            assert_eq!(rows, 1, "one thread splits rows");
            for (t, (groups, by_channels, by_channels_pooled)) in [2, 4].iter().zip(&split) {
                let case = format!("{xs:?} -> {o} on {t} threads");
                assert_eq!(*groups, (*t as usize).min(p.blocks()), "{case}: channel groups");
                assert!(by_channels.equal(&by_rows), "{case}: split by channels differs from by rows");
                assert!(
                    by_channels_pooled.equal(&by_rows_pooled),
                    "{case}: pooled, split by channels differs"
                );
                let tol = 1e-4 * ((xs[1] * 9) as f64).sqrt();
                let diff = (by_channels - &want).abs().max().double_value(&[]);
                assert!(diff < tol, "{case}: max diff {diff}");
                let diff = (by_channels_pooled - &want_pooled).abs().max().double_value(&[]);
                assert!(diff < tol, "{case} pooled: max diff {diff}");
            }
        }
    });
}

#[test]
fn the_avx2_loops_take_a_training_sized_batch() {
    crate::kernels::for_each_isa(|isa| {
        if max_batch(isa) < 64 {
            return;
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(14);
        let cl = crate::layers::channels_last;
        // LeNet's conv3 + pool3 and conv5 at batch 64: one task per row of 64 images.
        for (xs, o) in [([64, 32, 22, 22], 64), ([64, 128, 4, 4], 256)] {
            let x = cl(&randn(&xs));
            let w = cl(&randn(&[o, xs[1], 3, 3]));
            let b = randn(&[o]);
            let want = x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1).relu();
            let side = want.size()[2] / 2;
            let pool = Pooling { kernel: 2, stride: 2, out_h: side, out_w: side, rectify: true };
            let packed = Packed::default();
            let got = conv_max_pool(&x, &w, Some(&b), geo(1, 0, 1), pool, &packed).expect("takes it");
            let want = want.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-4 * ((xs[1] * 9) as f64).sqrt(), "{xs:?} -> {o}: max diff {diff}");
        }
    });
}
