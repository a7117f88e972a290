//! `fkpnet export --format onnx` against real clients: every shipped solver's net,
//! trained for two iterations in its default layout, exported, checked by
//! onnx.checker (full) and run by onnxruntime (tests/oracle/onnx_check.py), predicts
//! what `fkpnet predict` does with the run's test-time views off (the model is one
//! view); and run by tract (pure Rust, through fkpnet-infer's library), the same.

mod common;
use common::*;

use std::process::Command;

fn oracle() -> Option<std::path::PathBuf> {
    let python = root().join(".venv/bin/python");
    let ok =
        Command::new(&python).args(["-c", "import onnx, onnxruntime"]).status().is_ok_and(|s| s.success());
    ok.then_some(python)
}

#[test]
fn every_shipped_kaggle_net_runs_in_onnxruntime_and_tract_as_in_fkpnet() {
    // tract runs without Python; onnxruntime and onnx.checker need the oracle's packages.
    let python = oracle();
    if python.is_none() {
        eprintln!("onnxruntime part skipped: needs .venv/bin/python with onnx and onnxruntime (scripts/setup installs them); tract runs");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faces = mini("test.csv");
    let train = format!("data.train={}", mini_csv());
    let mut solvers: Vec<String> = std::fs::read_dir(root().join("solvers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().file_stem().unwrap().to_string_lossy().to_string())
        .filter(|s| !s.ends_with("68")) // the landmark sets: tests/landmarks.rs data, checked below
        .collect();
    solvers.sort();
    assert!(solvers.len() >= 14, "{solvers:?}");
    let (mut worst, mut worst_tract) = (0.0f64, 0.0f64);
    for s in &solvers {
        let solver = root().join("solvers").join(format!("{s}.yaml"));
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
                "batch_size=4",
                "--name",
                s,
                "-q",
            ],
            d,
        );
        let run = format!("runs/{s}");
        let onnx = format!("{s}.onnx");
        ok(&["export", &run, "-o", &onnx, "--format", "onnx", "--weights", "final"], d);
        let fk = format!("{s}_fk.csv");
        ok(
            &[
                "predict",
                &run,
                &faces,
                "-o",
                &fk,
                "--weights",
                "final",
                "--set",
                "test.flip=false",
                "--set",
                "test.shift=0",
                "--set",
                "test.rotate=0",
                "--set",
                "test.scale=0",
            ],
            d,
        );
        if let Some(python) = &python {
            let ort = format!("{s}_ort.csv");
            let out = Command::new(python)
                .arg(root().join("tests/oracle/onnx_check.py"))
                .args([&onnx, &faces, &ort])
                .current_dir(d)
                .output()
                .unwrap();
            assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
            let diff = max_keypoint_diff(&d.join(&fk), &d.join(&ort));
            // fkpnet prints 0.01 px, so this is within 0.005 px of the rounding.
            assert!(diff < 0.01, "{s}: max difference {diff} px");
            worst = worst.max(diff);
        }
        // tract on the same faces, at full precision against fkpnet's 0.01 px.
        let model = fkpnet_infer::Model::load(&d.join(&onnx)).unwrap();
        let (pixels, n) = kaggle_faces(&faces);
        let kp = model.run(&pixels, n).unwrap();
        let fk = keypoints_csv(&d.join(&fk));
        assert_eq!(fk.len(), n);
        let t = kp.len() / n;
        let diff = (0..n)
            .flat_map(|i| (0..t).map(move |j| (i, j)))
            .map(|(i, j)| (kp[i * t + j] as f64 - fk[i][j]).abs())
            .fold(0.0, f64::max);
        // 0.005 of it is the rounding of fkpnet's printed 0.01 px.
        assert!(diff < 0.006, "{s}: tract differs from fkpnet by {diff} px");
        worst_tract = worst_tract.max(diff);
    }
    eprintln!(
        "{} nets, max difference {worst:.4} px (onnxruntime), {worst_tract:.4} px (tract)",
        solvers.len()
    );
    // The 68-landmark nets (the same kinds at 136 outputs): checked and run by
    // onnxruntime on their input size.
    for s in ["lenet68", "resnet_fpn68"] {
        let solver = root().join("solvers").join(format!("{s}.yaml"));
        let data =
            format!("data.train={}", shared_data().join("landmarks68-mini/train/keypoints.csv").display());
        ok(
            &[
                "train",
                solver.to_str().unwrap(),
                "--set",
                &data,
                "--set",
                "max_iter=1",
                "--set",
                "test_interval=0",
                "--set",
                "batch_size=4",
                "--name",
                s,
                "-q",
            ],
            d,
        );
        let onnx = format!("{s}.onnx");
        ok(&["export", &format!("runs/{s}"), "-o", &onnx, "--format", "onnx", "--weights", "final"], d);
        if let Some(python) = &python {
            let out = Command::new(python)
                .arg(root().join("tests/oracle/onnx_check.py"))
                .args([onnx.as_str(), "-", "68"])
                .current_dir(d)
                .output()
                .unwrap();
            assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
        }
        // tract plans and runs it too (the photo-to-keypoints path: crates/fkpnet-infer/tests).
        let model = fkpnet_infer::Model::load(&d.join(&onnx)).unwrap();
        let i = &model.meta.input;
        let kp = model.run(&vec![128u8; 2 * i.channels * i.height * i.width], 2).unwrap();
        assert_eq!(kp.len(), 2 * 136, "{s}");
        assert!(kp.iter().all(|v| v.is_finite()), "{s}");
    }
    // A file that exists is never overwritten.
    let e = err(&["export", "runs/adam", "-o", "adam.onnx", "--format", "onnx", "--weights", "final"], d);
    assert!(e.contains("exists"), "{e}");
    // The directory form carries data.yaml and a README.
    ok(&["export", "runs/adam", "-o", "adam_onnx", "--format", "onnx", "--weights", "final"], d);
    for f in ["model.onnx", "data.yaml", "README.md"] {
        assert!(d.join("adam_onnx").join(f).is_file(), "{f}");
    }
}

/// A Kaggle CSV's faces as the net's input bytes (N x 96 x 96) and their count.
fn kaggle_faces(path: &str) -> (Vec<u8>, usize) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let col = r.headers().unwrap().iter().position(|h| h == "Image").unwrap();
    let mut pixels = Vec::new();
    let mut n = 0;
    for row in r.records() {
        pixels.extend(row.unwrap()[col].split_whitespace().map(|v| v.parse::<u8>().unwrap()));
        n += 1;
    }
    (pixels, n)
}
