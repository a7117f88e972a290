//! `fkpnet sweep`: the grid, checked up front, trained in order, compared as `diff`;
//! the sweep dir (plan, run a trial, collect), resuming, the executors, random search
//! and the stopping rules.

mod common;

use common::*;
use fkpnet::sweep::{grid, parse_axis, run_name};

#[test]
fn axes_split_at_top_level_commas_and_grid_is_every_combination() {
    assert_eq!(
        parse_axis("base_lr=1e-3, 3e-4").unwrap(),
        ("base_lr".into(), vec!["1e-3".into(), "3e-4".into()])
    );
    let (k, v) = parse_axis("stepvalue=[100,200],[300]").unwrap();
    assert_eq!((k.as_str(), v), ("stepvalue", vec!["[100,200]".to_string(), "[300]".to_string()]));
    assert!(parse_axis("base_lr").unwrap_err().to_string().contains("KEY=V1,V2"));
    assert!(parse_axis("base_lr=1e-3,").is_err());
    let g = grid(&[parse_axis("a=1,2").unwrap(), parse_axis("b.c=x,y,z").unwrap()]);
    assert_eq!(g.len(), 6);
    assert_eq!(g[0], ["a=1", "b.c=x"]);
    assert_eq!(g[5], ["a=2", "b.c=z"]);
    assert_eq!(run_name("lenet", &g[1]), "lenet-a=1-c=y");
    assert_eq!(run_name("p", &["data.augment={flip: true}".to_string()]), "p-augment=_flip__true_");
    assert_eq!(run_name("p", &[]), "p");
}

#[test]
fn sweep_checks_every_variant_first_then_trains_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let s = solver.to_str().unwrap();
    let data = format!("data.train={}", mini_csv());
    // A bad value anywhere in the grid: an error naming it, and nothing trained.
    let e = err(&["sweep", s, "--set", &data, "--set", "base_lr=1e-3,fast", "--runs-dir", "runs"], d);
    assert!(e.contains("base_lr=fast") && e.contains("base_lr"), "{e}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().next().is_none());
    let e = err(&["sweep", s, "--set", &data, "--runs-dir", "runs"], d);
    assert!(e.contains("nothing to sweep"), "{e}");
    let out = ok(
        &[
            "sweep",
            s,
            "--set",
            &data,
            "--set",
            "max_iter=4",
            "--set",
            "test_interval=2",
            "--set",
            "batch_size=16",
            "--set",
            "layers.fc1.num_output=32,64",
            "--runs-dir",
            "runs",
            "--name",
            "sw",
            "-q",
        ],
        d,
    );
    for n in ["sw-num_output=32", "sw-num_output=64"] {
        let cfg = std::fs::read_to_string(d.join("runs").join(n).join("config.yaml")).unwrap();
        assert!(cfg.contains(&format!("num_output: {}", &n[14..])), "{n}: {cfg}");
    }
    assert!(out.contains("layers.fc1.num_output: 32 -> 64") && out.contains("best"), "{out}");
    // Both runs averaged, scored as `fkpnet test A --ensemble B` scores them.
    let line = out.lines().find(|l| l.starts_with("ensemble of all 2 runs: val RMSE ")).expect(&out);
    let swept: f64 = line.split_whitespace().nth(7).unwrap().parse().unwrap();
    let runs = d.join("runs");
    let (a, b) = (runs.join("sw-num_output=32"), runs.join("sw-num_output=64"));
    let test = ok(&["test", a.to_str().unwrap(), "--ensemble", b.to_str().unwrap()], d);
    assert!((swept - overall_rmse(&test)).abs() < 1e-3, "{line} vs {test}");
    // The same sweep again trains nothing: every trial has its result.
    let args = [
        "sweep",
        s,
        "--set",
        &data,
        "--set",
        "max_iter=4",
        "--set",
        "test_interval=2",
        "--set",
        "batch_size=16",
        "--set",
        "layers.fc1.num_output=32,64",
        "--runs-dir",
        "runs",
        "--name",
        "sw",
        "-q",
    ];
    let again = ok(&args, d);
    assert!(again.contains("trained 0 runs") && again.contains("layers.fc1.num_output: 32 -> 64"), "{again}");
    // Another sweep under the same name is refused before training.
    let e = err(
        &[
            "sweep",
            s,
            "--set",
            &data,
            "--set",
            "layers.fc1.num_output=32,128",
            "--runs-dir",
            "runs",
            "--name",
            "sw",
        ],
        d,
    );
    assert!(e.contains("holds another sweep"), "{e}");
    // A run of that name made outside a sweep is never trained over either.
    std::fs::create_dir_all(d.join("runs/other-num_output=32")).unwrap();
    let e = err(&["sweep", s, "--set", &data, "--set", "layers.fc1.num_output=32,64", "--name", "other"], d);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn sweep_trains_several_solver_files_and_scores_their_ensemble() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two solvers that differ in their net: the dense baseline and the study's LeNet.
    let (a, b) = (root().join("solvers/baseline_adam.yaml"), root().join("solvers/lenet_adam.yaml"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let data = format!("data.train={}", mini_csv());
    let common =
        ["--set", &data, "--set", "max_iter=4", "--set", "test_interval=2", "--set", "batch_size=16"];
    // A bad override is reported with the solver it breaks, before anything trains.
    let mut bad = vec!["sweep", a, b, "--set", "layers.conv1.num_output=8", "--runs-dir", "runs"];
    bad.extend(common);
    let e = err(&bad, d);
    assert!(e.contains("baseline_adam.yaml") && e.contains("conv1"), "{e}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().next().is_none());
    // The same file twice would give two runs one name.
    let mut twice = vec!["sweep", a, a, "--runs-dir", "runs"];
    twice.extend(common);
    assert!(err(&twice, d).contains("both be named"));
    let mut args = vec!["sweep", a, b, "--runs-dir", "runs", "--name", "pair", "-q"];
    args.extend(common);
    let out = ok(&args, d);
    let runs = d.join("runs");
    let (ra, rb) = (runs.join("pair-baseline_adam"), runs.join("pair-lenet_adam"));
    assert!(std::fs::read_to_string(ra.join("config.yaml")).unwrap().contains("name: baseline"));
    assert!(std::fs::read_to_string(rb.join("config.yaml")).unwrap().contains("name: lenet"));
    assert!(out.contains("trained 2 runs in "), "{out}");
    let line = out.lines().find(|l| l.starts_with("ensemble of all 2 runs: val RMSE ")).expect(&out);
    let swept: f64 = line.split_whitespace().nth(7).unwrap().parse().unwrap();
    let test = ok(&["test", ra.to_str().unwrap(), "--ensemble", rb.to_str().unwrap()], d);
    assert!((swept - overall_rmse(&test)).abs() < 1e-3, "{line} vs {test}");
}

/// Ctrl-C in a sweep snapshots the run in progress, prints the command that resumes
/// it, and that command finishes it.
#[test]
fn ctrl_c_in_a_sweep_snapshots_the_current_run() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    let bin = env!("CARGO_BIN_EXE_fkpnet");
    let child = Command::new(bin)
        .args([
            "sweep",
            solver.to_str().unwrap(),
            "--set",
            &data,
            "--set",
            "max_iter=150",
            "--set",
            "batch_size=8",
        ])
        .args(["--set", "display=2", "--set", "base_lr=1e-3,3e-4", "--runs-dir", "runs", "--name", "sw"])
        .env("FKPNET_PROGRAM", bin)
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = d.join("runs/sw-base_lr=1e-3/metrics.csv");
    let t0 = Instant::now();
    while fkpnet::run::read_metrics(&metrics).map_or(0, |r| r.len()) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the sweep did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{e}");
    assert!(e.contains("sweep interrupted after 0 of 2 runs"), "{e}");
    assert!(!d.join("runs/sw-base_lr=3e-4").exists(), "the second run never started");
    // The printed command resumes the sweep: the interrupted trial from its snapshot,
    // then the one that never started.
    let cmd = e.lines().skip_while(|l| !l.contains("Resume with")).nth(1).unwrap_or_else(|| panic!("{e}"));
    assert!(cmd.contains("sweep run") && cmd.contains("sw.sweep"), "{cmd}");
    let resumed = Command::new("sh").args(["-c", cmd.trim()]).current_dir(d).output().unwrap();
    let out = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{cmd}:\n{out}");
    assert!(out.contains("resuming from"), "{out}");
    let rows = fkpnet::run::read_metrics(&d.join("runs/sw-base_lr=1e-3_resumed/metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().iter, 150, "the resumed run trains to max_iter");
    let log = std::fs::read_to_string(d.join("runs/sw-base_lr=1e-3_resumed/train.log")).unwrap();
    assert!(log.contains("Resuming from"), "it continues from the snapshot: {log}");
    let rows = fkpnet::run::read_metrics(&d.join("runs/sw-base_lr=3e-4/metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().iter, 150);
    let result = std::fs::read_dir(d.join("runs/sw.sweep/results")).unwrap().count();
    assert_eq!(result, 2, "both trials have their result");
}
