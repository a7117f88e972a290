//! Caffe's trained weights both ways, checked against a second implementation
//! (tests/oracle/caffemodel.py: Google's Python protobuf on proto/caffe.proto and the
//! study's LeNet in PyTorch from ../shared/bench): a .caffemodel the oracle writes
//! predicts in fkpnet as in PyTorch, and fkpnet's `export --format caffe` loads into
//! the oracle and predicts there as in fkpnet.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oracle's Python, or why the test cannot run.
fn oracle() -> Result<PathBuf, String> {
    let python = root().join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import torch, grpc_tools, google.protobuf"])
        .status()
        .is_ok_and(|s| s.success());
    let nets = shared_data().join("../bench/nets.py");
    match (ok, nets.is_file()) {
        (true, true) => Ok(python),
        _ => Err(format!(
            "needs {} with torch, protobuf and grpcio-tools (scripts/setup installs them) and {}",
            python.display(),
            nets.display()
        )),
    }
}

fn run_oracle(python: &Path, args: &[&str]) {
    let out =
        Command::new(python).arg(root().join("tests/oracle/caffemodel.py")).args(args).output().unwrap();
    assert!(out.status.success(), "oracle {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The largest difference between two predictions of the same faces, in pixels.
fn max_diff(a: &Path, b: &Path) -> f64 {
    let diff = max_keypoint_diff(a, b);
    assert!(keypoints_csv(a).iter().all(|r| r.len() == 30), "30 values per face");
    diff
}

/// The spread of the predictions across faces: a test on nearly constant outputs
/// could not tell a wrong weight layout from a right one.
fn spread(a: &Path) -> f64 {
    let k = keypoints_csv(a);
    (0..30)
        .map(|j| {
            let col: Vec<f64> = k.iter().map(|r| r[j]).collect();
            col.iter().cloned().fold(f64::MIN, f64::max) - col.iter().cloned().fold(f64::MAX, f64::min)
        })
        .fold(0.0, f64::max)
}

#[test]
fn a_caffemodel_predicts_as_pytorch_with_the_same_weights() {
    let python = match oracle() {
        Ok(p) => p,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let caffe = shared_data().join("../caffe");
    let prototxt = caffe.join("lenet_train_val.prototxt");
    let faces = shared_data().join("faces-mini/test.csv");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |f: &str| d.join(f).display().to_string();
    run_oracle(
        &python,
        &["write", prototxt.to_str().unwrap(), &p("w.caffemodel"), faces.to_str().unwrap(), &p("torch.csv")],
    );
    ok(
        &[
            "import-caffe",
            prototxt.to_str().unwrap(),
            caffe.join("adam_solver.prototxt").to_str().unwrap(),
            "-o",
            "setup",
        ],
        d,
    );
    // As `caffe test -model -weights`: the imported net (or its solver) with the weights.
    for config in ["setup/LeNetFKP.yaml", "setup/adam_solver.yaml"] {
        let out = format!("fk_{}.csv", config.len());
        ok(&["predict", config, "--weights", "w.caffemodel", faces.to_str().unwrap(), "-o", &out], d);
        let diff = max_diff(&d.join(&out), &d.join("torch.csv"));
        assert!(diff <= 0.0051, "{config}: max difference {diff} px (fkpnet prints 2 decimals)");
    }
    assert!(spread(&d.join("torch.csv")) > 1.0, "the oracle's keypoints vary from face to face");
    // Finetuning from it, as `caffe train --weights`: every tensor found, the first
    // test (iteration 0) scores the oracle's weights.
    let train = format!("data.train={}", shared_data().join("faces-mini/training.csv").display());
    ok(
        &[
            "train",
            "setup/adam_solver.yaml",
            "--weights",
            "w.caffemodel",
            "--set",
            &train,
            "--set",
            "data.val=null",
            "--set",
            "data.format=kaggle",
            "--set",
            "max_iter=2",
            "--set",
            "test_interval=1",
            "--name",
            "ft",
            "-q",
        ],
        d,
    );
    let log = std::fs::read_to_string(d.join("runs/ft/train.log")).unwrap();
    assert!(log.contains("Finetuning from w.caffemodel"), "{log}");
    // Without weights, a config file is refused with what to give.
    let out = fkpnet(&["predict", "setup/LeNetFKP.yaml", faces.to_str().unwrap()], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--weights"), "{err}");
}

#[test]
fn an_exported_caffemodel_predicts_in_the_oracle_as_in_fkpnet() {
    let python = match oracle() {
        Ok(p) => p,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faces = shared_data().join("faces-mini/test.csv");
    // The shipped study LeNet, trained briefly in its default (channels-last) layout.
    let solver = root().join("solvers/adam.yaml");
    let train = format!("data.train={}", shared_data().join("faces-mini/training.csv").display());
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--set",
            &train,
            "--set",
            "max_iter=20",
            "--set",
            "test_interval=10",
            "--name",
            "lenet",
            "-q",
        ],
        d,
    );
    ok(&["export", "runs/lenet", "-o", "caffe", "--format", "caffe"], d);
    for f in ["deploy.prototxt", "model.caffemodel", "data.yaml", "README.md"] {
        assert!(d.join("caffe").join(f).is_file(), "{f}");
    }
    ok(&["predict", "runs/lenet", faces.to_str().unwrap(), "-o", "fk.csv"], d);
    let p = |f: &str| d.join(f).display().to_string();
    run_oracle(
        &python,
        &[
            "read",
            &p("caffe/deploy.prototxt"),
            &p("caffe/model.caffemodel"),
            faces.to_str().unwrap(),
            &p("torch.csv"),
        ],
    );
    let diff = max_diff(&d.join("fk.csv"), &d.join("torch.csv"));
    assert!(diff <= 0.0051, "max difference {diff} px");
    assert!(spread(&d.join("fk.csv")) > 1.0, "trained keypoints vary from face to face");
    // And back: the deploy net and its weights import into fkpnet and predict the same.
    ok(&["import-caffe", "caffe/deploy.prototxt", "-o", "back"], d);
    ok(
        &[
            "predict",
            "back/lenet.yaml",
            "--weights",
            "caffe/model.caffemodel",
            faces.to_str().unwrap(),
            "-o",
            "back.csv",
        ],
        d,
    );
    assert!(max_diff(&d.join("fk.csv"), &d.join("back.csv")) <= 0.0051);
}

#[test]
fn caffe_exports_and_weights_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A heatmap net has a layer Caffe lacks: refused before anything is written.
    let solver = root().join("solvers/resnet_heatmap.yaml");
    let train = format!("data.train={}", shared_data().join("faces-mini/training.csv").display());
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--set",
            &train,
            "--set",
            "max_iter=2",
            "--set",
            "test_interval=1",
            "--set",
            "batch_size=8",
            "--name",
            "hm",
            "-q",
        ],
        d,
    );
    let out = fkpnet(&["export", "runs/hm", "-o", "hm_caffe", "--format", "caffe"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Caffe has no such layer"), "{err}");
    assert!(!d.join("hm_caffe").exists());
    // Not a caffemodel, and one of another net.
    std::fs::write(d.join("junk.caffemodel"), b"\xff\xff\xff not protobuf").unwrap();
    let out = fkpnet(&["predict", "runs/hm", "--weights", "junk.caffemodel", "x.png"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("junk.caffemodel"), "{err}");
}
