//! Fuzzing: mutated versions of the checked-in seed corpus (tests/fuzz_corpus) go
//! through the config loader + graph compiler, the Kaggle CSV reader and the prototxt
//! importer; every input must give Ok or a clean error, never a panic.
//!
//! The suite runs 256 cases per target; the long run is
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz` (see README).

use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(name)).unwrap()
}

/// Pieces that tend to reach interesting paths of the parsers.
const TOKENS: &[&str] = &[
    ":",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "  ",
    "#",
    "\"",
    "'",
    "0",
    "-1",
    "1e400",
    "nan",
    ".inf",
    "99999999999999999999",
    "type: conv",
    "type: pool",
    "type: dense",
    "type: bogus",
    "kernel_size: 0",
    "num_output: 0",
    "stride: -3",
    "group: 0",
    "pad: 9",
    "round_mode: ceil",
    "global_pooling: true",
    "base: lenet.yaml",
    "type: batchnorm",
    "type: eltwise",
    "type: concat",
    "type: soft_argmax",
    "beta: 0",
    "type: upsample",
    "scale_factor: 0",
    "scale_factor: 40000",
    "mode: bilinear",
    "bottom: [res3b_bn, data]",
    "bottom: pool2",
    "top: pool3",
    "operation: max",
    "coeff: [1, 2, 3]",
    "axis: 2",
    "moving_average_fraction: 1",
    "type: \"BatchNorm\"",
    "type: \"Scale\"",
    "type: \"Eltwise\"",
    "type: \"Concat\"",
    "layers:",
    "input: [1, 2]",
    "layer {",
    "type: \"Convolution\"",
    "bottom: \"data\"",
    "top: \"x\"",
    "include { phase: TEST }",
    " ",
    "\u{00e9}",
    "\u{0}",
];

#[derive(Debug, Clone)]
enum Edit {
    Byte(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Insert(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Byte(p, b)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        (any::<usize>(), 0usize..TOKENS.len()).prop_map(|(p, t)| Edit::Insert(p, t)),
    ];
    proptest::collection::vec(edit, 0..8)
}

fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *e {
            Edit::Byte(p, v) if !b.is_empty() => {
                let i = p % b.len();
                b[i] = v;
            }
            Edit::Byte(..) => {}
            Edit::Delete(p, n) => {
                let i = at(p, b.len());
                let j = (i + n).min(b.len());
                b.drain(i..j);
            }
            Edit::Duplicate(p, n) => {
                let i = at(p, b.len());
                let j = (i + n).min(b.len());
                let piece = b[i..j].to_vec();
                b.splice(i..i, piece);
            }
            Edit::Insert(p, t) => {
                let i = at(p, b.len());
                b.splice(i..i, TOKENS[t].bytes());
            }
        }
    }
    b
}

/// A scratch dir holding the whole corpus, so relative references resolve.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let p = dir.path().to_path_buf();
    (dir, p)
}

proptest! {
    #[test]
    fn net_configs_never_panic(seed in 0usize..3, e in edits()) {
        let (_keep, d) = scratch();
        let name = ["lenet.yaml", "adam_solver.yaml", "resnet.yaml"][seed];
        let path = d.join(format!("fuzzed_{name}"));
        std::fs::write(&path, mutate(&corpus(name), &e)).unwrap();
        let loaded = if seed != 1 {
            fkpnet::config::load_net(&path, &[])
        } else {
            fkpnet::config::load_solver(&path, &[]).map(|r| (r.net, r.net_source))
        };
        if let Ok((net, src)) = loaded {
            // A net that compiles must also build and run on one face (small ones only,
            // to keep the cases fast): shape inference and libtorch must agree.
            if let Ok(g) = fkpnet::graph::Graph::compile(&net, &src, 30) {
                if g.num_params() < 3_000_000 && g.flops() < 1_000_000_000 {
                    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
                    let (n, _) = g.build(&vs.root(), Default::default());
                    let mut shape = vec![2];
                    shape.extend(&g.input);
                    let y = n.forward_t(&tch::Tensor::zeros(shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu)), true);
                    prop_assert_eq!(y.size(), vec![2, 30]);
                }
            }
        }
    }

    #[test]
    fn kaggle_csvs_never_panic(seed in 0usize..2, e in edits()) {
        let (_keep, d) = scratch();
        let name = ["training_head.csv", "test_head.csv"][seed];
        let path = d.join(format!("fuzzed_{name}"));
        std::fs::write(&path, mutate(&corpus(name), &e)).unwrap();
        let _ = fkpnet::data::kaggle::parse(&path);
    }

    #[test]
    fn prototxt_never_panics(seed in 0usize..3, e in edits()) {
        let (_keep, d) = scratch();
        let net = d.join("fuzzed.prototxt");
        let solver = d.join("fuzzed_solver.prototxt");
        if seed != 1 {
            let name = ["lenet.prototxt", "", "resnet_block.prototxt"][seed];
            std::fs::write(&net, mutate(&corpus(name), &e)).unwrap();
            let _ = fkpnet::caffe::import(&net, None, &Default::default());
        } else {
            std::fs::write(&net, corpus("lenet.prototxt")).unwrap();
            std::fs::write(&solver, mutate(&corpus("lenet_solver.prototxt"), &e)).unwrap();
            let _ = fkpnet::caffe::import(&net, Some(&solver), &Default::default());
        }
    }
}
