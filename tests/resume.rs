//! Resume is exact for what users run: every shipped solver with its own net in its
//! default layout, and LeNet and a heatmap net in both layouts and both precisions.
//! A snapshot written mid-run and resumed gives the uninterrupted run's metrics rows
//! and final weights, bit for bit (same machine, same thread count).
//!
//! Each run is tiny (faces-mini, batch 8, 6 iterations, a snapshot at 3), so every
//! shipped solver fits in the suite. The snapshot bug this guards against hit only
//! conv layers with more than one input channel in the channels-last layout, where a
//! solver history tensor is not contiguous: the suite's earlier nets never had one.

mod common;
use common::*;

use fkpnet::run::{read_metrics, MetricsRow};
use std::path::{Path, PathBuf};

/// Short-run overrides for any shipped solver: the small data, few iterations, a
/// test every 2, a row every iteration, a snapshot at 3 (and 6).
fn short(extra: &[&str]) -> Vec<String> {
    short_on(&mini_csv(), extra)
}

/// The small data a solver's format reads: Kaggle's faces-mini, or landmarks68-mini.
fn mini_data_for(solver: &Path) -> String {
    let text = std::fs::read_to_string(solver).unwrap();
    if text.contains("format: csv") {
        shared_data().join("landmarks68-mini/train/keypoints.csv").display().to_string()
    } else {
        mini_csv()
    }
}

fn short_on(data: &str, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        format!("data.train={data}"),
        "batch_size=8".into(),
        "max_iter=6".into(),
        "test_interval=2".into(),
        "display=1".into(),
        "snapshot=3".into(),
        "warmup_iter=2".into(),
        "histograms=false".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets.into_iter().flat_map(|s| ["--set".to_string(), s]).collect()
}

fn rows(run: &Path) -> Vec<MetricsRow> {
    read_metrics(&run.join("metrics.csv"))
        .unwrap()
        .into_iter()
        .map(|r| MetricsRow { seconds: 0.0, ..r })
        .collect()
}

fn tensors(p: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(p).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Same rows (every value, bit for bit) and the same final and best weights.
fn assert_identical(full: &Path, resumed: &Path, what: &str) {
    let (a, b) = (rows(full), rows(resumed));
    assert!(a.len() >= 6, "{what}: too few rows to compare: {a:?}");
    assert_eq!(a, b, "{what}: the resumed run's rows differ from the uninterrupted run's");
    for f in ["weights.safetensors", "best.safetensors"] {
        let (wa, wb) = (tensors(&full.join(f)), tensors(&resumed.join(f)));
        assert_eq!(wa.len(), wb.len(), "{what}: {f}");
        for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
            assert_eq!(na, nb, "{what}: {f}");
            assert!(ta.equal(tb), "{what}: {f}: `{na}` differs after resume");
        }
    }
}

/// Train `solver` uninterrupted, then again from its iteration-3 snapshot, and compare.
fn check_resume(d: &Path, solver: &Path, extra: &[&str], tag: &str) {
    let s = solver.to_str().unwrap();
    let sets = short_on(&mini_data_for(solver), extra);
    let run = |name: &str, more: &[&str]| {
        let mut args: Vec<&str> = vec!["train", s, "--runs-dir", "runs", "--name", name, "-q"];
        args.extend(sets.iter().map(String::as_str));
        args.extend(more);
        ok(&args, d);
        d.join("runs").join(name)
    };
    let full = run(&format!("{tag}-full"), &[]);
    let snap = full.join("snapshot_iter_3.solverstate");
    assert!(snap.is_file() && full.join("snapshot_iter_3.safetensors").is_file(), "{tag}: no snapshot");
    let resumed = run(&format!("{tag}-resumed"), &["--snapshot", snap.to_str().unwrap()]);
    assert_identical(&full, &resumed, tag);
}

fn shipped_solvers() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("solvers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_solver_snapshots_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let solvers = shipped_solvers();
    assert!(solvers.len() >= 16, "{solvers:?}");
    let t0 = std::time::Instant::now();
    for solver in &solvers {
        let tag = solver.file_stem().unwrap().to_str().unwrap();
        check_resume(dir.path(), solver, &[], tag);
    }
    eprintln!("{} shipped solvers resumed exactly in {:.0} s", solvers.len(), t0.elapsed().as_secs_f64());
}

#[test]
fn lenet_and_a_heatmap_net_resume_exactly_in_every_layout_and_precision() {
    let dir = tempfile::tempdir().unwrap();
    for solver in ["adam", "resnet_heatmap"] {
        let path = root().join("solvers").join(format!("{solver}.yaml"));
        for layout in ["nchw", "channels_last"] {
            for precision in ["fp32", "bf16"] {
                let (l, p) = (format!("layout={layout}"), format!("precision={precision}"));
                check_resume(dir.path(), &path, &[&l, &p], &format!("{solver}-{layout}-{precision}"));
            }
        }
    }
}

/// Buffers of every shape a solverstate holds come back in the layout the resumed
/// run computes in: a channels-last conv weight's Adam moments stay channels-last.
#[test]
fn solverstate_buffers_are_restored_into_the_runs_layout() {
    use fkpnet::config::solver::{Layout, Precision};
    let dir = tempfile::tempdir().unwrap();
    let r = fkpnet::config::load_solver(
        &root().join("solvers/adam.yaml"),
        &fkpnet::config::parse_sets(&["ema_decay=0.9".into()]).unwrap(),
    )
    .unwrap();
    let graph = fkpnet::graph::Graph::compile(&r.net, &r.net_source, 30).unwrap();
    let opts = fkpnet::train::build_options(&graph, tch::Device::Cpu, Precision::Fp32, Layout::Auto);
    assert!(opts.channels_last, "LeNet trains channels-last on CPU by default");
    let build = |seed: i64| {
        tch::manual_seed(seed);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let (_net, params) = graph.build(&vs.root(), opts);
        (vs, params)
    };
    let (_vs, params) = build(1);
    let mut solver = fkpnet::solver::Solver::new(&r.solver, &params);
    tch::no_grad(|| {
        for h in solver.history.iter_mut().flatten() {
            let _ = h.uniform_(-1.0, 1.0);
        }
    });
    let conv2 = params.iter().position(|p| p.name == "conv2.weight").unwrap();
    assert!(!solver.history[conv2][0].is_contiguous(), "the history follows the weight's NHWC strides");
    let path = dir.path().join("s.solverstate");
    let looped = fkpnet::train::LoopState {
        window_sq: 0.5,
        recent_losses: [1.5].into_iter().collect(),
        best: Some(fkpnet::train::BestVal { loss: 1.0, rmse_px: 2.0, iter: 3 }),
        ..Default::default()
    };
    fkpnet::solver::state::save(&path, &solver, &params, looped.to_entries()).unwrap();

    let (_vs2, params2) = build(2);
    let mut back = fkpnet::solver::Solver::new(&r.solver, &params2);
    let entries = fkpnet::solver::state::load(&path, &mut back, &params2).unwrap();
    assert_eq!(fkpnet::train::LoopState::from_entries(&entries, "s").unwrap(), looped);
    for (p, (a, b)) in params.iter().zip(solver.history.iter().zip(&back.history)) {
        for (x, y) in a.iter().zip(b) {
            assert!(x.equal(y), "{}: history differs", p.name);
            assert_eq!(x.stride(), y.stride(), "{}: restored into another layout", p.name);
        }
    }
    let (ea, eb) = (solver.ema.as_ref().unwrap(), back.ema.as_ref().unwrap());
    for ((p, a), b) in params.iter().zip(&ea.shadow).zip(&eb.shadow) {
        if let (Some(a), Some(b)) = (a, b) {
            assert!(a.equal(b), "{}: weight average differs", p.name);
            assert_eq!(a.stride(), b.stride(), "{}: weight average in another layout", p.name);
        }
    }
}

/// `--snapshot` with a solver that is not the one the snapshot's run was trained with
/// says what differs and refuses; `--allow-config-change` resumes anyway, and the run's
/// own config.yaml resumes it as it was.
#[test]
fn resuming_with_another_config_is_refused_with_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let s = solver.to_str().unwrap();
    let sets = short(&[]);
    let mut args: Vec<&str> = vec!["train", s, "--runs-dir", "runs", "--name", "a", "-q"];
    args.extend(sets.iter().map(String::as_str));
    ok(&args, d);
    let snap = d.join("runs/a/snapshot_iter_3.solverstate");
    let snap = snap.to_str().unwrap();
    // The same solver with one override dropped (max_iter) and one changed (base_lr).
    let mut changed: Vec<&str> = vec!["train", s, "--runs-dir", "runs", "--snapshot", snap];
    for pair in sets.chunks(2).filter(|p| !p[1].starts_with("max_iter")) {
        changed.extend(pair.iter().map(String::as_str));
    }
    changed.extend(["--set", "base_lr=0.01"]);
    let e = err(&changed, d);
    assert!(e.contains("differs from the run the snapshot belongs to"), "{e}");
    assert!(e.contains("base_lr: 0.001 -> 0.01") && e.contains("max_iter: 6 -> 2400"), "{e}");
    assert!(e.contains("--weights") && e.contains("--allow-config-change"), "{e}");
    assert!(!d.join("runs/a_resumed").exists(), "a refused resume makes no run dir");
    // Asked for: resumes, says what changed, and is named after the run it continues.
    changed.push("--allow-config-change");
    changed.extend(["--set", "max_iter=5"]);
    let out = fkpnet(&changed, d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("changed since the snapshot") && e.contains("base_lr: 0.001 -> 0.01"), "{e}");
    assert!(d.join("runs/a_resumed/weights.safetensors").is_file());
    // From the run's own config: no difference, no flag needed; the next name is _2.
    let cfg = d.join("runs/a/config.yaml");
    ok(&["train", cfg.to_str().unwrap(), "--runs-dir", "runs", "--snapshot", snap, "-q"], d);
    assert_identical(&d.join("runs/a"), &d.join("runs/a_resumed_2"), "from config.yaml");
}
