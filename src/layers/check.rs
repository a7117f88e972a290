//! Checks shared by every layer kind's tests (in the kinds' own files) and the
//! integration tests: a layer built on its own, and autograd's gradients against
//! central finite differences.

use super::{BuildOptions, Layer};
use tch::{Kind, Tensor};

/// A layer from its YAML mapping (`{type: conv, num_output: 4, ...}`), as a net file
/// would give it.
pub fn layer(yaml: &str) -> Box<dyn Layer> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("valid YAML");
    crate::graph::parse_layer(&v).unwrap_or_else(|e| panic!("{yaml}: {e}")).1
}

/// The layer's params for `input`, filled by their fillers, and its forward function
/// of one batch with them (params as extra inputs, so gradients reach them too).
pub fn params(l: &dyn Layer, input: &[i64]) -> Vec<Tensor> {
    l.params(input)
        .iter()
        .map(|d| {
            let t = Tensor::zeros(d.shape.as_slice(), (Kind::Float, tch::Device::Cpu));
            tch::no_grad(|| t.shallow_clone().init(d.filler.init(&d.shape)));
            t
        })
        .collect()
}

/// `l` applied to `x` with `params` (train mode as given).
pub fn forward(l: &dyn Layer, input: &[i64], x: &Tensor, params: &[Tensor], train: bool) -> Tensor {
    use tch::nn::ModuleT;
    let f = l.build(input, params.iter().map(Tensor::shallow_clone).collect(), &BuildOptions::default());
    f.forward_t(x, train)
}

/// Central differences of sum(f(x) * r) against autograd's dx for every input, at a
/// dozen values each, in float32; panics naming the input and value that differ.
pub fn gradients(f: &dyn Fn(&[Tensor]) -> Tensor, xs: &[Tensor]) {
    tch::manual_seed(3);
    let xs: Vec<Tensor> = xs.iter().map(|x| x.detach().set_requires_grad(true)).collect();
    let y = f(&xs);
    let r = Tensor::randn(y.size(), (Kind::Float, tch::Device::Cpu));
    (&y * &r).sum(Kind::Float).backward();
    let h = 1e-2;
    for (k, x) in xs.iter().enumerate() {
        let analytic = x.grad().flatten(0, -1);
        let n = x.numel() as i64;
        for i in (0..n).step_by((n as usize / 12).max(1)) {
            let value = |d: f64| {
                let moved: Vec<Tensor> = xs
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        let t = t.detach().copy();
                        if j == k {
                            let _ = t.flatten(0, -1).get(i).g_add_scalar_(d);
                        }
                        t
                    })
                    .collect();
                tch::no_grad(|| (f(&moved) * &r).sum(Kind::Double).double_value(&[]))
            };
            let numeric = (value(h) - value(-h)) / (2.0 * h);
            let a = analytic.double_value(&[i]);
            assert!(
                (a - numeric).abs() <= 2e-2 * (1.0 + numeric.abs()),
                "input {k} value {i}: autograd {a}, numeric {numeric}"
            );
        }
    }
}
