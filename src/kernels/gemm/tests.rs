use super::*;
use crate::kernels::{for_each_isa, Isa};
use tch::{Device, Kind};

fn randn(s: &[i64]) -> Tensor {
    Tensor::randn(s, (Kind::Float, Device::Cpu))
}

#[test]
fn agrees_with_libtorch_over_sizes_biases_and_rectifiers() {
    let _g = tch::no_grad_guard();
    tch::manual_seed(7);
    // Row tiles of 1-6, panels cut short, blocks of inputs cut short, the baseline's fc1.
    for (m, n, k) in
        [(5i64, 1i64, 1i64), (7, 17, 3), (12, 16, 256), (13, 33, 300), (64, 500, 9216), (9, 40, 513)]
    {
        let (x, w, b) = (randn(&[m, k]), randn(&[n, k]), randn(&[n]));
        for (bias, rectify) in [(true, false), (false, true), (true, true)] {
            let b = bias.then_some(&b);
            let want = x.linear(&w, b);
            let want = if rectify { want.relu() } else { want };
            for_each_isa(|isa| {
                let got = linear(&x, &w, b, rectify, &Packed::default());
                if isa != Isa::Avx2 {
                    assert!(got.is_none(), "taken on {isa:?}");
                    return;
                }
                let got = got.expect("taken");
                let scale = want.abs().max().double_value(&[]).max(1.0);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-5 * scale,
                    "{m}x{n}x{k} bias {bias} relu {rectify}: off by {diff} (of {scale})"
                );
            });
        }
    }
}

#[test]
fn follows_the_weights_when_they_change_and_declines_what_it_does_not_compute() {
    for_each_isa(|isa| {
        if isa != Isa::Avx2 {
            return;
        }
        let _g = tch::no_grad_guard();
        let (x, mut w, packed) = (randn(&[8, 20]), randn(&[10, 20]), Packed::default());
        let before = linear(&x, &w, None, false, &packed).unwrap();
        let _ = w.g_mul_scalar_(2.0); // in place: the same pointer, a new version
        let after = linear(&x, &w, None, false, &packed).unwrap();
        let diff = (&after - &before * 2.0).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "stale packed weights: off by {diff}");
        // Four rows are few_rows', a strided input and a wrong bias are libtorch's.
        assert!(linear(&randn(&[4, 20]), &w, None, false, &packed).is_none());
        assert!(linear(&randn(&[20, 8]).tr(), &w, None, false, &packed).is_none());
        assert!(linear(&x, &w, Some(&randn(&[9])), false, &packed).is_none());
    });
    // A gradient wanted: libtorch's.
    let w = randn(&[10, 20]).set_requires_grad(true);
    assert!(linear(&randn(&[8, 20]), &w, None, false, &Packed::default()).is_none());
}
