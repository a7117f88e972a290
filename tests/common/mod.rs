//! Helpers shared by the integration tests: paths, running the `fkpnet` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared test data (../shared/data beside the checkout; FKPNET_DATA overrides).
pub fn shared_data() -> PathBuf {
    std::env::var_os("FKPNET_DATA").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/data"))
}

/// A file of the small Kaggle-format slice.
pub fn mini(file: &str) -> String {
    shared_data().join("faces-mini").join(file).display().to_string()
}

pub fn mini_csv() -> String {
    mini("training.csv")
}

pub fn fkpnet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fkpnet")).args(args).current_dir(cwd).output().expect("runs")
}

/// Run and expect success; returns stdout.
pub fn ok(args: &[&str], cwd: &Path) -> String {
    let out = fkpnet(args, cwd);
    assert!(out.status.success(), "fkpnet {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Run and expect a clean failure; returns stderr.
pub fn err(args: &[&str], cwd: &Path) -> String {
    let out = fkpnet(args, cwd);
    // 1: fkpnet's errors, 2: argument errors (clap); a panic would be 101.
    assert!(matches!(out.status.code(), Some(1 | 2)), "fkpnet {args:?} should fail cleanly: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The output-shape column of `fkpnet summary`, for layer rows whose type is not in `skip`.
pub fn shapes(summary: &str, skip: &[&str]) -> Vec<String> {
    summary
        .lines()
        .filter(|l| !l.starts_with("net ") && !l.starts_with("layer") && !l.starts_with('-'))
        .filter(|l| !l.starts_with("input") && !l.starts_with("total"))
        .filter(|l| !l.split_whitespace().nth(1).is_some_and(|t| skip.contains(&t)))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect()
}

/// The `overall` RMSE (px) that `fkpnet test` prints.
pub fn overall_rmse(test_output: &str) -> f64 {
    test_output
        .lines()
        .find(|l| l.starts_with("overall"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall RMSE in:\n{test_output}"))
}

/// The val RMSE (px) at the run's lowest val loss: what `best.safetensors` holds.
pub fn best_val_rmse(run: &Path) -> f64 {
    fkpnet::run::read_metrics(&run.join("metrics.csv"))
        .unwrap()
        .iter()
        .filter_map(|r| r.val_loss.map(|l| (l, r.val_rmse_px.unwrap())))
        .min_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap()
        .1
}

/// Keypoints per face from a prediction CSV: fkpnet's (a header, the input's name
/// first) or an oracle's (numbers only).
pub fn keypoints_csv(path: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').filter_map(|v| v.parse().ok()).collect::<Vec<f64>>())
        .filter(|r| !r.is_empty()) // the header
        .collect()
}

/// The largest difference between two predictions of the same faces, in pixels.
pub fn max_keypoint_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (keypoints_csv(a), keypoints_csv(b));
    assert_eq!(a.len(), b.len(), "the same faces");
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
