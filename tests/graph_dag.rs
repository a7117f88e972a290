//! BatchNorm (Caffe's running statistics), skip connections and concatenation through
//! `bottom`/`top`, each with a gradient check against finite differences.

mod common;

use common::*;
use fkpnet::config::load_net;
use fkpnet::graph::Graph;
use fkpnet::layers::Layer;
use tch::{Kind, Tensor};

fn graph(dir: &std::path::Path, text: &str) -> anyhow::Result<Graph> {
    let path = write(dir, "net.yaml", text);
    let (net, src) = load_net(&path, &[])?;
    Graph::compile(&net, &src, 30)
}

fn graph_err(dir: &std::path::Path, text: &str) -> String {
    match graph(dir, text) {
        Ok(_) => panic!("compiled, but should not:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

use fkpnet::layers::check::gradients as grad_check;

/// Taken by every test here: libtorch has one random generator per process, and tests
/// run on parallel threads. A test that seeds it and compares two passes (the same
/// dropout masks) failed now and then when another test drew from it in between.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn batchnorm_keeps_caffes_running_statistics_and_normalises() {
    let _rng = rng_lock();
    use fkpnet::layers::batchnorm::BatchNorm;
    let l: BatchNorm = serde_yaml::from_str("{moving_average_fraction: 0.5}").unwrap();
    assert_eq!(l.output_shape(&[2, 3, 3]).unwrap(), vec![2, 3, 3]);
    let defs = l.params(&[2, 3, 3]);
    let names: Vec<_> = defs.iter().map(|d| (d.suffix, d.learn)).collect();
    assert_eq!(
        names,
        [
            ("weight", true),
            ("bias", true),
            ("running_mean", false),
            ("running_var", false),
            ("num_batches_tracked", false)
        ]
    );
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let p: Vec<Tensor> = defs
        .iter()
        .map(|d| {
            vs.root()
                .zeros_no_train(d.suffix, &d.shape)
                .fill_(if d.suffix.contains("var") || d.suffix == "weight" { 1.0 } else { 0.0 })
        })
        .collect();
    let (mean, var, count) = (p[2].shallow_clone(), p[3].shallow_clone(), p[4].shallow_clone());
    let (p_weight, p_bias) = (p[0].shallow_clone(), p[1].shallow_clone());
    let m = l.build(&[2, 3, 3], p, &Default::default());
    let run = |x: &Tensor, train| tch::nn::ModuleT::forward_t(&m, x, train);
    tch::manual_seed(0);
    let b1 = Tensor::randn([4, 2, 3, 3], (Kind::Float, tch::Device::Cpu)) * 3.0 + 5.0;
    let b2 = Tensor::randn([4, 2, 3, 3], (Kind::Float, tch::Device::Cpu)) - 2.0;
    let y = run(&b1, true);
    // Training: each channel normalised with its batch statistics.
    let ch_mean = y.mean_dim(&[0i64, 2, 3][..], false, Kind::Float);
    let ch_var = y.var_dim(&[0i64, 2, 3][..], false, false);
    assert!(ch_mean.abs().max().double_value(&[]) < 1e-5);
    assert!((ch_var - 1.0).abs().max().double_value(&[]) < 1e-3);
    // First batch counts fully (Caffe's scale factor is 1 after one batch) ...
    let stats = |b: &Tensor| {
        (b.mean_dim(&[0i64, 2, 3][..], false, Kind::Float), b.var_dim(&[0i64, 2, 3][..], true, false))
    };
    let (m1, v1) = stats(&b1);
    assert!((&mean - &m1).abs().max().double_value(&[]) < 1e-5);
    assert!((&var - &v1).abs().max().double_value(&[]) < 1e-4, "unbiased variance, as Caffe and PyTorch");
    // ... then (f * sum + batch) / (f * factor + 1): with f = 0.5, (0.5 m1 + m2) / 1.5.
    let _ = run(&b2, true);
    let (m2, v2) = stats(&b2);
    let want_mean = (&m1 * 0.5 + &m2) / 1.5;
    let want_var = (&v1 * 0.5 + &v2) / 1.5;
    assert!((&mean - want_mean).abs().max().double_value(&[]) < 1e-5);
    assert!((&var - want_var).abs().max().double_value(&[]) < 1e-4);
    assert_eq!(count.double_value(&[]), 2.0);
    // Test phase: the running statistics, nothing updated.
    let before = mean.copy();
    let t = run(&b2, false);
    let want = (&b2 - mean.view([1, 2, 1, 1])) / (var.view([1, 2, 1, 1]) + 1e-5).sqrt();
    assert!((t - want).abs().max().double_value(&[]) < 1e-4);
    assert!(before.equal(&mean) && count.double_value(&[]) == 2.0);
    // A net built over buffers that already count 2 batches (a resumed run) goes on
    // from there: batch t weighs (1 - f) / (1 - f^t), t = 3 then 4.
    let again: Vec<Tensor> =
        [&p_weight, &p_bias, &mean, &var, &count].iter().map(|t| t.shallow_clone()).collect();
    let m2 = l.build(&[2, 3, 3], again, &Default::default());
    let b3 = Tensor::randn([4, 2, 3, 3], (Kind::Float, tch::Device::Cpu)) + 1.0;
    let (m3, _) = stats(&b3);
    for t in [3.0, 4.0] {
        let prev = mean.copy();
        let _ = tch::nn::ModuleT::forward_t(&m2, &b3, true);
        let w = 0.5 / (1.0 - 0.5f64.powf(t));
        let want = prev * (1.0 - w) + &m3 * w;
        assert!((&mean - want).abs().max().double_value(&[]) < 1e-5, "batch {t}");
        assert_eq!(count.double_value(&[]), t);
    }
    // Out-of-range settings are errors, not silent defaults.
    let bad: BatchNorm = serde_yaml::from_str("{moving_average_fraction: 1.5}").unwrap();
    assert!(bad.output_shape(&[2, 3, 3]).unwrap_err().contains("[0, 1)"));
}

#[test]
fn batchnorm_eltwise_and_concat_gradients_match_finite_differences() {
    let _rng = rng_lock();
    use fkpnet::layers::{concat::Concat, eltwise::Eltwise, Merge};
    tch::manual_seed(1);
    let opts = Default::default();
    let a = Tensor::randn([2, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
    let b = Tensor::randn([2, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
    let c = Tensor::randn([2, 1, 2, 2], (Kind::Float, tch::Device::Cpu));
    let sum: Eltwise = serde_yaml::from_str("{operation: sum, coeff: [1, -0.5]}").unwrap();
    let f = sum.build_merge(&[vec![3, 2, 2], vec![3, 2, 2]], &opts);
    let y = f(&[&a, &b]);
    assert!(y.allclose(&(&a - &b * 0.5), 1e-6, 1e-6, false));
    grad_check(&|x: &[Tensor]| f(&[&x[0], &x[1]]), &[a.copy(), b.copy()]);
    let prod: Eltwise = serde_yaml::from_str("{operation: prod}").unwrap();
    let f = prod.build_merge(&[vec![3, 2, 2], vec![3, 2, 2]], &opts);
    grad_check(&|x: &[Tensor]| f(&[&x[0], &x[1]]), &[a.copy(), b.copy()]);
    let max: Eltwise = serde_yaml::from_str("{operation: max}").unwrap();
    let f = max.build_merge(&[vec![3, 2, 2], vec![3, 2, 2]], &opts);
    assert!(f(&[&a, &b]).equal(&a.maximum(&b)));
    let cat: Concat = serde_yaml::from_str("{}").unwrap();
    assert_eq!(cat.merge_shape(&[vec![3, 2, 2], vec![1, 2, 2]]).unwrap(), vec![4, 2, 2]);
    assert!(cat.merge_shape(&[vec![3, 2, 2], vec![1, 3, 2]]).unwrap_err().contains("differ outside axis 1"));
    let f = cat.build_merge(&[vec![3, 2, 2], vec![1, 2, 2]], &opts);
    let y = f(&[&a, &c]);
    assert!(y.narrow(1, 3, 1).equal(&c) && y.narrow(1, 0, 3).equal(&a));
    grad_check(&|x: &[Tensor]| f(&[&x[0], &x[1]]), &[a.copy(), c.copy()]);
    // BatchNorm in training mode: the gradient flows through the batch statistics.
    use fkpnet::layers::batchnorm::BatchNorm;
    let bn: BatchNorm = serde_yaml::from_str("{affine: false}").unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let p: Vec<Tensor> =
        bn.params(&[3, 2, 2]).iter().map(|d| vs.root().zeros_no_train(d.suffix, &d.shape)).collect();
    let m = bn.build(&[3, 2, 2], p, &opts);
    grad_check(&|x: &[Tensor]| tch::nn::ModuleT::forward_t(&m, &x[0], true), &[a.copy() * 2.0 + 1.0]);
}

const RESIDUAL: &str = "name: tiny_res
input: [1, 8, 8]
layers:
  - {type: conv, name: c1, num_output: 4, kernel_size: 3, pad: 1}
  - {type: batchnorm, name: bn1, moving_average_fraction: 0.9}
  - {type: relu, name: r1, top: c1}
  - {type: conv, name: c2, num_output: 4, kernel_size: 3, pad: 1}
  - {type: eltwise, name: sum, bottom: [c2, c1]}
  - {type: concat, name: cat, bottom: [sum, data]}
  - {type: pool, name: p, pool: max, kernel_size: 2, stride: 2}
  - {type: dense, name: out, num_output: 30}
loss: {type: mse}
";

#[test]
fn skip_connections_compile_build_and_report_their_bottoms() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), RESIDUAL).unwrap();
    assert!(!g.is_sequential());
    // `top: c1` on the relu: later `c1` means the relu's output, as in Caffe.
    let sum = &g.nodes[4];
    assert_eq!(sum.bottoms, vec![4, 3]);
    assert_eq!(g.nodes[5].output, vec![5, 8, 8]);
    let s = fkpnet::report::summary::table(&g);
    assert!(s.contains("<- c2 + r1 sum") && s.contains("<- sum + data axis 1"), "{s}");
    // Buffers are not parameters: BN adds 4 + 4 learnable values.
    let want = (4 * 9 + 4) + 8 + (4 * 4 * 9 + 4) + (30 * 5 * 16 + 30);
    assert_eq!(g.num_params(), want);
    // The resolved net names every bottom by layer and compiles to the same graph.
    let again = graph(dir.path(), &serde_yaml::to_string(&g.resolved()).unwrap()).unwrap();
    assert_eq!(
        again.nodes.iter().map(|n| n.bottoms.clone()).collect::<Vec<_>>(),
        g.nodes.iter().map(|n| n.bottoms.clone()).collect::<Vec<_>>()
    );
    // Forward and backward through the graph reach every parameter.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let (net, params) = g.build(&vs.root(), Default::default());
    let x = Tensor::rand([3, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
    let y = net.forward_t(&x, true);
    assert_eq!(y.size(), [3, 30]);
    y.sum(Kind::Float).backward();
    for p in params.iter().filter(|p| p.learn) {
        assert!(p.tensor.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{} got no gradient", p.name);
    }
    assert!(params.iter().any(|p| p.name == "bn1.running_var" && !p.learn));
}

#[test]
fn bad_bottoms_are_clear_errors() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let e = graph_err(dir.path(), &RESIDUAL.replace("bottom: [c2, c1]", "bottom: [c2, cl]"));
    assert!(
        e.contains("bottom `cl` is not the name or top of an earlier layer")
            && e.contains("did you mean `c1`"),
        "{e}"
    );
    assert!(e.contains("net.yaml:") && e.contains("layer `sum`"), "{e}");
    let e = graph_err(
        dir.path(),
        &RESIDUAL.replace("name: c2, num_output: 4", "name: c2, bottom: [c1, data], num_output: 4"),
    );
    assert!(e.contains("a conv layer takes one bottom, got 2"), "{e}");
    let e = graph_err(dir.path(), &RESIDUAL.replace("bottom: [c2, c1]", "bottom: [c2, data]"));
    assert!(e.contains("bottoms 4x8x8, 1x8x8 differ"), "{e}");
    // A later layer is not visible yet: no cycles.
    let e = graph_err(dir.path(), &RESIDUAL.replace("bottom: [c2, c1]", "bottom: [c2, cat]"));
    assert!(e.contains("bottom `cat`"), "{e}");
    // A dot in a name would clash with the tensor names (the fuzzer's `.infconv1`).
    let e = graph_err(dir.path(), &RESIDUAL.replace("name: c2,", "name: .infc2,"));
    assert!(e.contains("layer `.infc2`") && e.contains("without `.`"), "{e}");
}

#[test]
fn a_residual_net_with_batchnorm_trains_saves_and_tests_the_same() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "net.yaml",
        &RESIDUAL
            .replace("[1, 8, 8]", "[1, 96, 96]")
            .replace("kernel_size: 2, stride: 2", "kernel_size: 8, stride: 8"),
    );
    write(
        d,
        "solver.yaml",
        &format!(
            "net: net.yaml\ndata: {{train: {}, labels: complete}}\ntype: Adam\nbase_lr: 0.01\n\
             batch_size: 8\nmax_iter: 12\ntest_interval: 6\ndisplay: 6\n",
            mini_csv()
        ),
    );
    ok(&["train", "solver.yaml", "--runs-dir", "runs", "--name", "r", "-q"], d);
    let best = best_val_rmse(&d.join("runs/r"));
    // `test` rebuilds the net from the run dir: the same number only if the running
    // statistics were saved and loaded with the weights.
    let out = ok(&["test", "runs/r"], d);
    let overall = overall_rmse(&out);
    assert!((overall - best).abs() < 2e-3, "test {overall} vs training's best {best}: {out}");
    ok(&["export", "runs/r", "-o", "exp"], d);
    let code = std::fs::read_to_string(d.join("exp/README.md")).unwrap();
    assert!(
        code.contains("class Net(nn.Module)")
            && code.contains("torch.cat([b5, b0], 1)")
            && code.contains("b5 = b4 + b3"),
        "{code}"
    );
}

#[test]
fn soft_argmax_finds_peaks_centres_flat_maps_and_has_true_gradients() {
    let _rng = rng_lock();
    use fkpnet::layers::soft_argmax::SoftArgmax;
    let l: SoftArgmax = serde_yaml::from_str("{beta: 2}").unwrap();
    assert_eq!(l.output_shape(&[15, 12, 12]).unwrap(), vec![30]);
    assert!(l.output_shape(&[30]).unwrap_err().contains("CxHxW"));
    let bad: SoftArgmax = serde_yaml::from_str("{beta: 0}").unwrap();
    assert!(bad.output_shape(&[2, 4, 4]).unwrap_err().contains("beta must be a number > 0"));
    let m = l.build(&[2, 4, 8], vec![], &Default::default());
    // Channel 0 peaks at row 1, column 6 of a 4x8 map; channel 1 is flat.
    let x = Tensor::zeros([1, 2, 4, 8], (Kind::Float, tch::Device::Cpu));
    let _ = x.get(0).get(0).get(1).get(6).fill_(50.0);
    let y = Vec::<f32>::try_from(tch::nn::ModuleT::forward_t(&m, &x, false).flatten(0, -1)).unwrap();
    // Cell centres in target units (image = -1..1): column 6 of 8 -> 13/8 - 1, row 1 of 4 -> 3/4 - 1.
    let want = [0.625f32, -0.25, 0.0, 0.0];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{y:?} != {want:?}");
    }
    // The same maps in channels-last strides and bfloat16 give the same points.
    let cl = fkpnet::layers::channels_last(&x).to_kind(Kind::BFloat16);
    let y2 = tch::nn::ModuleT::forward_t(&m, &cl, false);
    assert_eq!(y2.kind(), Kind::Float);
    assert!(y2.flatten(0, -1).allclose(&Tensor::from_slice(&want), 1e-4, 1e-4, false));
    tch::manual_seed(2);
    grad_check(
        &|x: &[Tensor]| tch::nn::ModuleT::forward_t(&m, &x[0], true),
        &[Tensor::randn([2, 2, 4, 8], (Kind::Float, tch::Device::Cpu))],
    );
}

#[test]
fn a_heatmap_net_compiles_to_the_keypoints_and_exports_its_class() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let g = graph(
        dir.path(),
        "name: hm\ninput: [1, 8, 8]\nlayers:\n  - {type: conv, name: c1, num_output: 15, kernel_size: 3, pad: 1}\n  \
         - {type: soft_argmax, name: points}\nloss: {type: l1}\n",
    )
    .unwrap();
    assert_eq!(g.nodes.last().unwrap().output, vec![30]);
    let e = graph_err(
        dir.path(),
        "name: hm\ninput: [1, 8, 8]\nlayers:\n  - {type: conv, name: c1, num_output: 14, kernel_size: 3, pad: 1}\n  \
         - {type: soft_argmax, name: points}\nloss: {type: l1}\n",
    );
    assert!(e.contains("28") && e.contains("30"), "{e}");
    let net = fkpnet::layers::kind("soft_argmax").unwrap();
    let layer = (net.parse)(serde_yaml::from_str("{}").unwrap()).unwrap();
    let class = layer.pytorch_class().expect("torch.nn has no soft-argmax: the export defines it");
    assert!(
        class.starts_with("class SoftArgmax(nn.Module)") && layer.pytorch(&[15, 8, 8]) == "SoftArgmax(1)"
    );
}

#[test]
fn upsample_repeats_or_interpolates_and_has_true_gradients() {
    let _rng = rng_lock();
    use fkpnet::layers::upsample::Upsample;
    let near: Upsample = serde_yaml::from_str("{}").unwrap();
    assert_eq!(near.output_shape(&[3, 6, 4]).unwrap(), vec![3, 12, 8]);
    assert!(near.output_shape(&[30]).unwrap_err().contains("CxHxW"));
    let bad: Upsample = serde_yaml::from_str("{scale_factor: 0}").unwrap();
    assert!(bad.output_shape(&[2, 4, 4]).unwrap_err().contains("scale_factor must be >= 1"));
    assert!(serde_yaml::from_str::<Upsample>("{mode: cubic}").unwrap_err().to_string().contains("bilinear"));
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 1, 2, 2]);
    let run = |l: &Upsample, x: &Tensor| {
        let m = l.build(&[1, 2, 2], vec![], &Default::default());
        Vec::<f32>::try_from(tch::nn::ModuleT::forward_t(&m, x, false).flatten(0, -1)).unwrap()
    };
    // Nearest: each value fills a 2x2 block.
    assert_eq!(run(&near, &x), [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
    // Bilinear (align_corners false): the first row of the 4x4 output lies a quarter
    // cell inside the input's first row, so it is 1, 1.25, 1.75, 2 (edges clamp).
    let bil: Upsample = serde_yaml::from_str("{mode: bilinear}").unwrap();
    let y = run(&bil, &x);
    for (a, b) in y[0..4].iter().zip([1.0f32, 1.25, 1.75, 2.0]) {
        assert!((a - b).abs() < 1e-6, "{y:?}");
    }
    assert!((y[5] - (1.25 * 0.75 + 3.25 * 0.25)).abs() < 1e-6, "{y:?}");
    assert_eq!(bil.pytorch(&[1, 2, 2]), "nn.Upsample(scale_factor=2, mode=\"bilinear\")");
    tch::manual_seed(4);
    for l in [&near, &bil] {
        let m = l.build(&[2, 3, 5], vec![], &Default::default());
        grad_check(
            &|x: &[Tensor]| tch::nn::ModuleT::forward_t(&m, &x[0], true),
            &[Tensor::randn([2, 2, 3, 5], (Kind::Float, tch::Device::Cpu))],
        );
    }
}

#[test]
fn an_upsampled_block_joins_a_finer_one() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let net = "name: fpn\ninput: [1, 8, 8]\nlayers:\n  - {type: conv, name: fine, num_output: 4, kernel_size: 3, pad: 1}\n  \
               - {type: pool, name: down, kernel_size: 2, stride: 2}\n  \
               - {type: conv, name: coarse, num_output: 4, kernel_size: 3, pad: 1}\n  \
               - {type: upsample, name: up, mode: bilinear}\n  \
               - {type: eltwise, name: join, bottom: [up, fine]}\n  \
               - {type: dense, name: out, num_output: 30}\nloss: {type: l1}\n";
    let g = graph(dir.path(), net).unwrap();
    let up = g.nodes.iter().find(|n| n.name == "up").unwrap();
    assert_eq!(up.output, vec![4, 8, 8]);
    // Without the upsample the shapes do not fit, and the error says so.
    let e = graph_err(dir.path(), &net.replace("up, fine", "coarse, fine"));
    assert!(e.contains("4x4x4") && e.contains("4x8x8"), "{e}");
}

#[test]
fn every_shipped_net_and_solver_loads_and_compiles() {
    let _rng = rng_lock();
    use fkpnet::config::load_solver;
    let mut seen = 0;
    for dir in ["nets", "solvers"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            // A net alone predicts any number of keypoints; a solver, its data's.
            let (net, src, targets) = if dir == "nets" {
                let (net, src) = load_net(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
                (net, src, None)
            } else {
                let r = load_solver(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
                let spec = fkpnet::data::spec(&r.solver.data, &r.net).unwrap_or_else(|e| panic!("{e:#}"));
                (r.net, r.net_source, Some(spec.targets() as i64))
            };
            let g =
                Graph::compile(&net, &src, targets).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let out = g.nodes.last().unwrap().output[0];
            assert_eq!(out, targets.unwrap_or(out), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} shipped configs found");
}

/// An independent reference: JS divergence of two distributions over the same cells.
fn js_ref(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], m: &[f64]| {
        a.iter().zip(m).filter(|(a, _)| **a > 0.0).map(|(a, m)| a * (a / m).ln()).sum::<f64>()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a + b) / 2.0).collect();
    (kl(p, &m) + kl(q, &m)) / 2.0
}

#[test]
fn js_regulariser_matches_a_hand_computed_divergence_and_skips_missing_keypoints() {
    let _rng = rng_lock();
    use fkpnet::layers::soft_argmax::SoftArgmax;
    use fkpnet::loss::js_divergence;
    let (h, w, sigma) = (4i64, 6i64, 0.8);
    // Two keypoints: a random map for the first, the second unannotated (NaN).
    tch::manual_seed(5);
    let maps = Tensor::randn([1, 2, h, w], (Kind::Float, tch::Device::Cpu));
    let sa: SoftArgmax = serde_yaml::from_str("{beta: 1.5}").unwrap();
    let log_p = sa.heatmap_log_probs(&maps).unwrap();
    let (tx, ty) = (0.1f64, -0.3f64);
    let target = Tensor::from_slice(&[tx as f32, ty as f32, f32::NAN, f32::NAN]).view([1, 4]);
    let (sum, count) = js_divergence(&log_p, &target, sigma);
    assert_eq!(count.double_value(&[]), 1.0, "the missing keypoint is not counted");
    // Reference: softmax(beta * map) against a Gaussian of sigma cells at the target,
    // both over the cell centres (-1 + (i + 0.5) * 2 / n), in plain f64.
    let m = Vec::<f64>::try_from(maps.get(0).get(0).flatten(0, -1).to_kind(Kind::Double)).unwrap();
    let z: f64 = m.iter().map(|v| (1.5 * v).exp()).sum();
    let p: Vec<f64> = m.iter().map(|v| (1.5 * v).exp() / z).collect();
    let centre = |i: i64, n: i64| -1.0 + (i as f64 + 0.5) * 2.0 / n as f64;
    let mut q = Vec::new();
    for r in 0..h {
        for c in 0..w {
            let (dx, dy) = ((centre(c, w) - tx) * w as f64 / 2.0, (centre(r, h) - ty) * h as f64 / 2.0);
            q.push((-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp());
        }
    }
    let zq: f64 = q.iter().sum();
    q.iter_mut().for_each(|v| *v /= zq);
    let want = js_ref(&p, &q);
    assert!((sum.double_value(&[]) - want).abs() < 1e-5, "{} vs {want}", sum.double_value(&[]));
    assert!(want > 0.01 && want < std::f64::consts::LN_2);
    // The target's own Gaussian as the map: divergence 0. A target far off the map: finite.
    let own = Tensor::from_slice(&q).view([1, 1, h, w]).log().to_kind(Kind::Float);
    let (s0, _) = js_divergence(&own, &target.narrow(1, 0, 2), sigma);
    assert!(s0.double_value(&[]).abs() < 1e-6, "{}", s0.double_value(&[]));
    let far = Tensor::from_slice(&[30.0f32, -40.0]).view([1, 2]);
    let (sf, _) = js_divergence(&log_p.narrow(1, 0, 1), &far, sigma);
    let sf = sf.double_value(&[]);
    assert!(sf.is_finite() && sf > 0.6, "{sf}");
    // Differentiable in the maps (finite differences).
    let t2 = target.narrow(1, 0, 2);
    grad_check(
        &|x: &[Tensor]| js_divergence(&sa.heatmap_log_probs(&x[0]).unwrap(), &t2, sigma).0.view([1]),
        &[maps.narrow(1, 0, 1).to_kind(Kind::Double).contiguous()],
    );
}

#[test]
fn js_regulariser_needs_a_soft_argmax_head_and_trains_end_to_end() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dense = "name: d\ninput: [1, 8, 8]\nlayers:\n  - {type: dense, name: fc, num_output: 30}\n\
                 loss: {type: l1, js_reg: {sigma: 1}}\n";
    let e = graph_err(d, dense);
    assert!(e.contains("js_reg") && e.contains("soft_argmax") && e.contains("`fc`"), "{e}");
    let e = graph_err(d, &dense.replace("sigma: 1", "sigma: 0"));
    assert!(e.contains("js_reg.sigma"), "{e}");
    let e = graph_err(d, &dense.replace("sigma: 1", "sigm: 1"));
    assert!(e.contains("sigm"), "{e}");
    // A heatmap net with and without the regulariser: the same first loss (it reports
    // the coordinate loss only), different training after the first update.
    write(
        d,
        "net.yaml",
        "name: hm\ninput: [1, 96, 96]\nlayers:\n  - {type: pool, kernel_size: 8, stride: 8}\n  \
         - {type: conv, name: c1, num_output: 15, kernel_size: 3, pad: 1}\n  \
         - {type: soft_argmax, name: points}\nloss: {type: l1}\n",
    );
    let solver = write(
        d,
        "s.yaml",
        "net: net.yaml\ndata: {train: synthetic, synthetic: {size: 128}}\ntype: Adam\nbase_lr: 0.01\n\
         batch_size: 32\nmax_iter: 6\ndisplay: 1\ntest_interval: 3\nrandom_seed: 1\n",
    );
    let s = solver.to_str().unwrap();
    ok(&["train", s, "--runs-dir", "runs", "--name", "plain", "-q"], d);
    ok(&["train", s, "--runs-dir", "runs", "--name", "js", "-q", "--set", "net.loss.js_reg.sigma=1"], d);
    let rows = |n: &str| fkpnet::run::read_metrics(&d.join(format!("runs/{n}/metrics.csv"))).unwrap();
    let (a, b) = (rows("plain"), rows("js"));
    let loss = |r: &[fkpnet::run::MetricsRow]| r.iter().filter_map(|r| r.train_loss).collect::<Vec<_>>();
    let (la, lb) = (loss(&a), loss(&b));
    assert_eq!(la.len(), 6);
    assert_eq!(la[0], lb[0]);
    assert!(la[1..].iter().zip(&lb[1..]).all(|(x, y)| x != y && y.is_finite()), "{la:?} vs {lb:?}");
}

/// relu -> max pool runs pool-first in `forward_t`: where that is exact, and only there.
const POOLED: &str = "name: pooled
input: [2, 32, 32]
layers:
  - {type: conv, name: c1, num_output: 4, kernel_size: 3, pad: 1}
  - {type: relu, name: flipped, negative_slope: -0.5}
  - {type: pool, name: p1, pool: max, kernel_size: 2, stride: 2}
  - {type: conv, name: c2, num_output: 4, kernel_size: 3, pad: 1}
  - {type: relu, name: leaky, negative_slope: 0.1}
  - {type: pool, name: p2, pool: max, kernel_size: 3, stride: 2, pad: 1}
  - {type: conv, name: c3, num_output: 4, kernel_size: 3, pad: 1}
  - {type: relu, name: r3}
  - {type: pool, name: p3, pool: max, kernel_size: 2, stride: 2, round_mode: ceil}
  - {type: conv, name: c4, num_output: 4, kernel_size: 3, pad: 1}
  - {type: relu, name: r4}
  - {type: pool, name: p4, pool: ave, kernel_size: 2, stride: 1}
  - {type: conv, name: c5, num_output: 4, kernel_size: 3, pad: 1}
  - {type: relu, name: r5}
  - {type: pool, name: p5, pool: max, kernel_size: 3, stride: 1, pad: 1}
  - {type: eltwise, name: skip, operation: sum, bottom: [p5, r5]}
  - {type: dense, name: out, num_output: 30}
loss: {type: mse}
";

#[test]
fn a_rectifier_before_max_pooling_runs_after_it_with_the_same_outputs_and_gradients() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), POOLED).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let (net, params) = g.build(&vs.root(), Default::default());
    // relu and leaky relu (non-decreasing) move behind max pools; a negative slope
    // (not monotone), an average pool or a second reader of the rectified blob (r5's,
    // read by `skip`) keep the order. Every rectifier reads a conv's output, so each
    // wrong move would change the numbers below.
    assert_eq!(net.moved_behind_pool(), vec![4, 7]);
    tch::manual_seed(5);
    let x = Tensor::randn([3, 2, 32, 32], (Kind::Float, tch::Device::Cpu));
    let r = Tensor::randn([3, 30], (Kind::Float, tch::Device::Cpu));
    let grads = |y: Tensor| {
        for p in &params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        (&y * &r).sum(Kind::Float).backward();
        params.iter().filter(|p| p.learn).map(|p| p.tensor.grad().copy()).collect::<Vec<_>>()
    };
    let fused = net.forward_t(&x, true);
    let layer_by_layer = net.forward_all(&x, true).pop().unwrap();
    let blobs = tch::no_grad(|| net.forward_all(&x, false));
    for conv in [1, 4, 7, 10, 13] {
        let b = &blobs[conv];
        assert!(b.min().double_value(&[]) < 0.0 && b.max().double_value(&[]) > 0.0, "blob {conv} one-signed");
    }
    assert_eq!(fused.size(), layer_by_layer.size());
    assert_eq!((&fused - &layer_by_layer).abs().max().double_value(&[]), 0.0, "outputs differ");
    // A kept blob (as the heatmap regulariser reads its maps) is the one forward_all
    // computes, here p2's output, whose rectifier ran after it.
    let (again, p2) = net.forward_keeping(&x, true, 6);
    assert_eq!((&again - &fused).abs().max().double_value(&[]), 0.0);
    assert_eq!((&p2 - &blobs[6]).abs().max().double_value(&[]), 0.0, "kept blob differs");
    let (a, b) = (grads(fused), grads(layer_by_layer));
    for (p, (ga, gb)) in params.iter().filter(|p| p.learn).zip(a.iter().zip(&b)) {
        let diff = (ga - gb).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-6 * (1.0 + gb.abs().max().double_value(&[])),
            "{}: gradients differ by {diff}",
            p.name
        );
    }
}

/// A leaky rectifier between a conv and its max pool: fused, the slope applied after the
/// pool (by `direct_conv` for 3 input channels, by `wide_conv` for 24); the bias pushes
/// most conv outputs below zero.
const LEAKY_POOLED: &str = "name: leaky_pooled
input: [3, 12, 12]
layers:
  - {type: conv, name: c1, num_output: 8, kernel_size: 3, bias_filler: {type: constant, value: -3}}
  - {type: relu, name: leaky, negative_slope: 0.1}
  - {type: pool, name: p1, pool: max, kernel_size: 2, stride: 2}
  - {type: dense, name: out, num_output: 30}
loss: {type: mse}
";

/// A prediction of one face through the shipped LeNet (the case `fkpnet predict` and the
/// batch-1 benchmarks run): conv5 + relu5 + pool5 (2x2 -> 1x1) by `few_rows`, each dense
/// layer with its ReLU applied as the kernel writes, the same outputs as layer by layer.
#[test]
fn lenet_predicting_one_face_fuses_its_rectifiers_into_its_kernels() {
    let _rng = rng_lock();
    let own = fkpnet::kernels::isa().is_some() && fkpnet::kernels::enabled();
    let dir = tempfile::tempdir().unwrap();
    let lenet = std::fs::read_to_string(root().join("nets/lenet.yaml")).unwrap();
    let g = graph(dir.path(), &lenet).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let opts = fkpnet::layers::BuildOptions { channels_last: true, ..Default::default() };
    let (net, _params) = g.build(&vs.root(), opts);
    assert_eq!(net.fused_with_relu(), if own { vec![15, 17, 19, 21] } else { vec![] });
    tch::manual_seed(11);
    let x = Tensor::rand([1, 1, 96, 96], (Kind::Float, tch::Device::Cpu));
    let all = tch::no_grad(|| net.forward_all(&x, false));
    let fast = tch::no_grad(|| net.forward_t(&x, false));
    let layer_by_layer = all.last().unwrap();
    // The ReLUs have something to zero: the dense layers' outputs before them go below 0.
    assert!(all[16].min().double_value(&[]) < 0.0, "a test that cannot fail");
    let scale = layer_by_layer.abs().max().double_value(&[]);
    let diff = (&fast - layer_by_layer).abs().max().double_value(&[]);
    assert!(diff <= 1e-5 * scale.max(1e-3), "fused outputs differ by {diff} (of {scale})");
    // fc2's output kept: computed unfused, as forward_all has it.
    let (y, kept) = tch::no_grad(|| net.forward_keeping(&x, false, 18));
    assert_eq!((&kept - &all[18]).abs().max().double_value(&[]), 0.0, "kept blob");
    assert!((&y - layer_by_layer).abs().max().double_value(&[]) <= 1e-5 * scale.max(1e-3));
}

/// A conv and the max pool after it run as one kernel of fkpnet's own for predictions, on
/// CPUs with AVX-512 or AVX2: all five of the shipped LeNet's conv + pool pairs (the first two by
/// `direct_conv`, the others by `winograd` or `wide_conv` at this batch of 4), the same outputs as layer
/// by layer, and never where gradients are wanted, a blob in between is kept or read twice,
/// or the pool pads.
#[test]
fn a_conv_and_its_max_pool_run_as_one_kernel_for_predictions() {
    let _rng = rng_lock();
    let own = fkpnet::kernels::isa().is_some() && fkpnet::kernels::enabled();
    if !own {
        eprintln!("fkpnet's own kernels are off here (neither AVX-512 nor AVX2, or FKPNET_KERNELS=libtorch): checking they stay off");
    }
    let dir = tempfile::tempdir().unwrap();
    let lenet = std::fs::read_to_string(root().join("nets/lenet.yaml")).unwrap();
    let opts = fkpnet::layers::BuildOptions { channels_last: true, ..Default::default() };
    let leaky_wide = LEAKY_POOLED.replace("[3, 12, 12]", "[24, 12, 12]");
    for (text, input, fused) in [
        (lenet.as_str(), [4, 1, 96, 96], vec![(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]),
        (POOLED, [3, 2, 32, 32], vec![(6, 8)]),
        (LEAKY_POOLED, [2, 3, 12, 12], vec![(0, 2)]),
        (leaky_wide.as_str(), [2, 24, 12, 12], vec![(0, 2)]),
    ] {
        let g = graph(dir.path(), text).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let (net, _params) = g.build(&vs.root(), opts);
        // POOLED's c1 feeds a non-monotone rectifier, c2's pool pads, c4's averages and
        // r5 has a second reader: only c3 -> r3 -> p3 (ceil mode, no partial window) fuses.
        assert_eq!(net.fused_with_pool(), if own { fused } else { vec![] }, "{}", g.name);
        tch::manual_seed(3);
        let x = Tensor::randn(input, (Kind::Float, tch::Device::Cpu));
        let (fast, layer_by_layer) =
            tch::no_grad(|| (net.forward_t(&x, false), net.forward_all(&x, false).pop().unwrap()));
        if g.name == "leaky_pooled" {
            // Maxima below zero, which a plain ReLU would zero: the slope must be applied.
            let pooled = tch::no_grad(|| net.forward_all(&x, false))[3].shallow_clone();
            assert!(pooled.min().double_value(&[]) < 0.0, "a test that cannot fail");
        }
        let scale = layer_by_layer.abs().max().double_value(&[]);
        let diff = (&fast - &layer_by_layer).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * scale.max(1.0), "{}: fused outputs differ by {diff} (of {scale})", g.name);
        // With gradients (training) the layers run as built, to the bit.
        let trained = net.forward_t(&x, true);
        let built = net.forward_all(&x, true).pop().unwrap();
        assert_eq!((&trained - &built).abs().max().double_value(&[]), 0.0, "{}", g.name);
        // A kept blob inside the fused pair is computed, as forward_all computes it.
        let (conv, _) = net.fused_with_pool().first().copied().unwrap_or((0, 0));
        let (y, kept) = tch::no_grad(|| net.forward_keeping(&x, false, conv + 1));
        let all = tch::no_grad(|| net.forward_all(&x, false));
        assert_eq!((&kept - &all[conv + 1]).abs().max().double_value(&[]), 0.0, "{}: kept blob", g.name);
        assert_eq!(
            (&y - &layer_by_layer).abs().max().double_value(&[]),
            0.0,
            "{}: unfused when kept",
            g.name
        );
    }
}

/// Training steps of the shipped LeNet and VGG through fkpnet's training kernels (LeNet's
/// conv1 + ReLU + pool1 on CPUs with AVX-512 or AVX2; on AVX2 without AVX-512 also every
/// conv's weight gradient with 8+ input channels and 32+ output pixels) give the
/// gradients autograd gives layer by layer, every parameter's.
#[test]
fn training_kernels_give_autograds_gradients_on_the_shipped_nets() {
    let _rng = rng_lock();
    use fkpnet::kernels::Isa;
    let own = fkpnet::kernels::enabled().then(fkpnet::kernels::isa).flatten();
    let dir = tempfile::tempdir().unwrap();
    for (name, steps) in [
        (
            "lenet",
            match own {
                Some(Isa::Avx2) => 4,
                Some(Isa::Avx512) => 1,
                None => 0,
            },
        ),
        (
            "vgg",
            match own {
                Some(Isa::Avx2) => 5,
                _ => 0,
            },
        ),
    ] {
        let text = std::fs::read_to_string(root().join(format!("nets/{name}.yaml"))).unwrap();
        let g = graph(dir.path(), &text).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let opts = fkpnet::layers::BuildOptions { channels_last: true, ..Default::default() };
        let (net, params) = g.build(&vs.root(), opts);
        tch::manual_seed(3);
        let x = net.input(&Tensor::rand([2, 1, 96, 96], (Kind::Float, tch::Device::Cpu)));
        let grads = |fast: bool| {
            for p in &params {
                let mut t = p.tensor.shallow_clone();
                t.zero_grad();
            }
            tch::manual_seed(5); // the same dropout masks
            let y = if fast {
                let (y, tape) = net.forward_train(&x);
                assert_eq!(tape.len(), steps, "{name}: the kernels' backward steps");
                tape.backward(&y.square().sum(Kind::Float));
                y
            } else {
                let y = net.forward_all(&x, true).pop().unwrap();
                y.square().sum(Kind::Float).backward();
                y
            };
            let gs: Vec<Tensor> = params.iter().map(|p| p.tensor.grad().copy()).collect();
            (y.detach(), gs)
        };
        let (y_fast, fast) = grads(true);
        let (y_plain, plain) = grads(false);
        assert!((&y_fast - &y_plain).abs().max().double_value(&[]) < 1e-4, "{name}: outputs");
        for ((p, a), b) in params.iter().zip(&fast).zip(&plain) {
            let scale = b.abs().max().double_value(&[]);
            assert!(scale > 0.0, "{name} {}: a gradient that cannot tell", p.name);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 1e-4 * scale, "{name} {}: gradients differ by {diff} (of {scale})", p.name);
        }
    }
}

/// `fkpnet time` times each row as a training step runs it: LeNet's conv1 + ReLU + pool1
/// in its kernel (the net's input wants no gradient), conv2 not in it (its input does),
/// and on CPUs with AVX2 and no AVX-512 conv2-conv4 with their weight gradients by the
/// kernel (conv5's 2x2 outputs are too few for it), whose share of their backward the
/// table shows.
#[test]
fn time_rows_run_as_a_training_step_does() {
    let _rng = rng_lock();
    use fkpnet::kernels::Isa;
    let own = fkpnet::kernels::enabled().then(fkpnet::kernels::isa).flatten();
    let dir = tempfile::tempdir().unwrap();
    let lenet = std::fs::read_to_string(root().join("nets/lenet.yaml")).unwrap();
    let g = graph(dir.path(), &lenet).unwrap();
    let opts = fkpnet::layers::BuildOptions { channels_last: true, ..Default::default() };
    let t = fkpnet::timing::time_net(&g, 4, 1, tch::Device::Cpu, opts);
    let fused: Vec<&str> = t.fused.iter().map(|(row, _)| row.as_str()).collect();
    assert_eq!(fused, if own.is_some() { vec!["conv1"] } else { vec![] });
    let expected: Vec<&str> = if own == Some(Isa::Avx2) { vec!["conv2", "conv3", "conv4"] } else { vec![] };
    assert_eq!(t.own_grads, expected);
    assert!(t.layers.iter().find(|l| l.name == "conv2").is_some_and(|l| l.backward_ms > 0.0));
    // The kernel's share is timed on its rows only, and in the whole backward pass.
    for l in &t.layers {
        assert_eq!(l.kernel_ms > 0.0, expected.contains(&l.name.as_str()), "{}: {} ms", l.name, l.kernel_ms);
    }
    assert_eq!(t.backward_kernel_ms > 0.0, !expected.is_empty());
    assert!(t.backward_kernel_ms < t.backward_ms);
    let table = t.table();
    assert_eq!(table.contains("of it wgrad ms"), !expected.is_empty(), "{table}");
    assert_eq!(table.contains("weight-gradient kernel"), !expected.is_empty(), "{table}");
}

/// Predictions between training steps (the val tests) follow the solver's updates: the
/// kernels' packed copies of the weights (`wide_conv`) are made again after Adam's own
/// passes write the weights, as after libtorch's operators. The same outputs as a net
/// built fresh from the updated weights.
#[test]
fn predictions_follow_the_solvers_updates_of_the_weights() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let lenet = std::fs::read_to_string(root().join("nets/lenet.yaml")).unwrap();
    let g = graph(dir.path(), &lenet).unwrap();
    let opts = fkpnet::layers::BuildOptions { channels_last: true, ..Default::default() };
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let (net, params) = g.build(&vs.root(), opts);
    let yaml = "net: x\ndata: {train: synthetic}\ntype: Adam\nbase_lr: 0.01\nmax_iter: 1\nbatch_size: 8\n";
    let cfg: fkpnet::config::SolverConfig = serde_yaml::from_str(yaml).unwrap();
    let mut solver = fkpnet::solver::Solver::new(&cfg, &params);
    tch::manual_seed(9);
    let x = net.input(&Tensor::rand([8, 1, 96, 96], (Kind::Float, tch::Device::Cpu)));
    let before = tch::no_grad(|| net.forward_t(&x, false));
    let (y, tape) = net.forward_train(&x);
    tape.backward(&y.square().sum(Kind::Float));
    solver.step(&params, 0.01);
    let after = tch::no_grad(|| net.forward_t(&x, false));
    let vs2 = tch::nn::VarStore::new(tch::Device::Cpu);
    let (fresh_net, fresh) = g.build(&vs2.root(), opts);
    tch::no_grad(|| {
        for (p, q) in params.iter().zip(&fresh) {
            let _ = q.tensor.shallow_clone().copy_(&p.tensor);
        }
    });
    let want = tch::no_grad(|| fresh_net.forward_t(&x, false));
    let scale = want.abs().max().double_value(&[]);
    assert!((&after - &before).abs().max().double_value(&[]) > 1e-3 * scale, "a step that moves the outputs");
    let diff = (&after - &want).abs().max().double_value(&[]);
    assert!(
        diff < 1e-4 * scale,
        "predictions after the step differ by {diff} (of {scale}) from fresh weights'"
    );
}
