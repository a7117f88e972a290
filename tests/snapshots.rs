//! Snapshots, resume, finetune, interrupts and the Caffe-style log.

mod common;
use common::*;

use fkpnet::run::{read_metrics, MetricsRow};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A small net with dropout (so resume must also restore the dropout masks) and a
/// solver with momentum history, snapshots and smoothing.
fn setup(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("net.yaml"),
        "name: small\ninput: [1, 96, 96]\nlayers:\n  - {type: pool, kernel_size: 4, stride: 4}\n  \
         - {type: dense, name: fc1, num_output: 64}\n  - {type: relu}\n  - {type: dropout, dropout_ratio: 0.3}\n  \
         - {type: dense, name: out, num_output: 30}\nloss: {type: euclidean}\n",
    )
    .unwrap();
    let solver = dir.join("small.yaml");
    std::fs::write(
        &solver,
        format!(
            "net: net.yaml\ndata: {{train: {}, labels: masked}}\ntype: SGD\nbase_lr: 0.01\nmomentum: 0.9\n\
             lr_policy: step\ngamma: 0.5\nstepsize: 7\nbatch_size: 16\nmax_iter: 30\ntest_interval: 6\n\
             display: 4\naverage_loss: 3\nsnapshot: 10\nrandom_seed: 3\n",
            mini_csv()
        ),
    )
    .unwrap();
    solver
}

fn rows(p: &Path) -> Vec<MetricsRow> {
    read_metrics(p).unwrap().into_iter().map(|r| MetricsRow { seconds: 0.0, ..r }).collect()
}

/// A safetensors file's tensors, sorted by name.
fn tensors(p: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(p).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Two runs measured the same metrics and ended with the same weights.
fn assert_same_run(full: &Path, resumed: &Path) {
    let (a, b) = (rows(&full.join("metrics.csv")), rows(&resumed.join("metrics.csv")));
    assert!(a.len() > 10);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.iter, x.lr, x.val_loss.is_some()), (y.iter, y.lr, y.val_loss.is_some()));
        for (u, v) in
            [(x.train_loss, y.train_loss), (x.val_loss, y.val_loss), (x.train_rmse_px, y.train_rmse_px)]
        {
            if let (Some(u), Some(v)) = (u, v) {
                assert!((u - v).abs() <= 1e-5 * u.abs().max(1e-12), "iter {}: {u} vs {v}", x.iter);
            }
        }
    }
    let (wa, wb) =
        (tensors(&full.join("weights.safetensors")), tensors(&resumed.join("weights.safetensors")));
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        assert!(ta.allclose(tb, 1e-5, 1e-6, false), "{na} differs after resume");
    }
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = setup(d);
    let s = solver.to_str().unwrap();
    ok(&["train", s, "--runs-dir", "runs", "--name", "full", "-q"], d);
    let full = d.join("runs/full");
    for f in ["snapshot_iter_10", "snapshot_iter_20", "snapshot_iter_30"] {
        assert!(
            full.join(format!("{f}.safetensors")).is_file()
                && full.join(format!("{f}.solverstate")).is_file()
        );
    }
    let state = full.join("snapshot_iter_20.solverstate");
    ok(
        &["train", s, "--runs-dir", "runs", "--name", "resumed", "--snapshot", state.to_str().unwrap(), "-q"],
        d,
    );
    assert_same_run(&full, &d.join("runs/resumed"));
    let log = std::fs::read_to_string(d.join("runs/resumed/train.log")).unwrap();
    assert!(log.contains("Resuming from"), "{log}");

    // Resume and finetune exclude each other; a state from another solver type is refused.
    let w = full.join("weights.safetensors");
    let out =
        fkpnet(&["train", s, "--snapshot", state.to_str().unwrap(), "--weights", w.to_str().unwrap()], d);
    assert!(!out.status.success());
    let adam =
        ["train", s, "--runs-dir", "runs", "--set", "type=Adam", "--snapshot", state.to_str().unwrap()];
    let e = err(&adam, d);
    assert!(e.contains("type: SGD -> Adam"), "{e}");
    // Even when told to take the changed config, SGD's history cannot become Adam's.
    let e = err(&[&adam[..], &["--allow-config-change"]].concat(), d);
    assert!(e.contains("written by a SGD solver"), "{e}");
    assert!(!d.join("runs/full_resumed").exists(), "refused before a run dir is made");
}

/// The weights' moving average: training itself is unchanged (same train losses),
/// tests and the final weights see the average, and it resumes exactly.
#[test]
fn moving_average_is_what_tests_see_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = setup(d);
    let s = solver.to_str().unwrap();
    let ema = ["--set", "ema_decay=0.9"];
    ok(&["train", s, "--runs-dir", "runs", "--name", "plain", "-q"], d);
    ok(&[&["train", s, "--runs-dir", "runs", "--name", "ema", "-q"][..], &ema].concat(), d);
    let (plain, avg) = (rows(&d.join("runs/plain/metrics.csv")), rows(&d.join("runs/ema/metrics.csv")));
    assert_eq!(plain.len(), avg.len());
    let mut val_differs = 0;
    for (x, y) in plain.iter().zip(&avg) {
        assert_eq!(x.train_loss, y.train_loss, "iter {}: the average must not change training", x.iter);
        if let (Some(u), Some(v)) = (x.val_loss, y.val_loss) {
            if x.iter == 0 {
                assert_eq!(u, v, "the average starts at the initial weights");
            } else if (u - v).abs() > 1e-6 * u {
                val_differs += 1;
            }
        }
    }
    assert!(val_differs >= 4, "val tests after iteration 0 must see the average: {plain:?} vs {avg:?}");
    // Final weights = the average; the last snapshot keeps the raw weights (as `plain`'s).
    let read = |p: &str| tensors(&d.join(p));
    let (fin, raw, plain_raw) = (
        read("runs/ema/weights.safetensors"),
        read("runs/ema/snapshot_iter_30.safetensors"),
        read("runs/plain/weights.safetensors"),
    );
    for ((n, f), ((_, r), (_, p))) in fin.iter().zip(raw.iter().zip(&plain_raw)) {
        assert!(r.allclose(p, 1e-6, 1e-7, false), "{n}: the raw weights must be plain training's");
        if n.ends_with("weight") {
            assert!(!f.allclose(r, 1e-4, 1e-6, false), "{n}: final weights must be the average");
        }
    }
    let state = d.join("runs/ema/snapshot_iter_20.solverstate");
    let resume = ["--snapshot", state.to_str().unwrap()];
    ok(&[&["train", s, "--runs-dir", "runs", "--name", "resumed", "-q"][..], &ema, &resume].concat(), d);
    assert_same_run(&d.join("runs/ema"), &d.join("runs/resumed"));
    // A state without an average cannot resume a run that keeps one.
    let plain_state = d.join("runs/plain/snapshot_iter_20.solverstate");
    let out = fkpnet(
        &[&["train", s, "--runs-dir", "runs", "--snapshot", plain_state.to_str().unwrap()][..], &ema]
            .concat(),
        d,
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("ema_decay"), "{e}");
    let out = fkpnet(&["train", s, "--runs-dir", "runs", "--set", "ema_decay=1"], d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("ema_decay must be in [0, 1)"), "{e}");
}

#[test]
fn finetune_loads_weights_by_name_and_reports_shape_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = setup(d);
    let s = solver.to_str().unwrap();
    ok(&["train", s, "--runs-dir", "runs", "--name", "a", "-q", "--set", "max_iter=20"], d);
    let w = d.join("runs/a/weights.safetensors");
    // Same net: the run starts where the first ended (lower initial val loss than from scratch).
    ok(
        &[
            "train",
            s,
            "--runs-dir",
            "runs",
            "--name",
            "b",
            "-q",
            "--weights",
            w.to_str().unwrap(),
            "--set",
            "max_iter=6",
        ],
        d,
    );
    let (a, b) = (rows(&d.join("runs/a/metrics.csv")), rows(&d.join("runs/b/metrics.csv")));
    assert!(b[0].val_loss.unwrap() < a[0].val_loss.unwrap() * 0.9, "{:?} vs {:?}", b[0], a[0]);
    // A different fc1 width: the error names the tensor and both shapes.
    let out = fkpnet(
        &[
            "train",
            s,
            "--runs-dir",
            "runs",
            "--weights",
            w.to_str().unwrap(),
            "--set",
            "layers.fc1.num_output=32",
        ],
        d,
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("`fc1.weight` has shape [64, 576], but the net's is [32, 576]"), "{e}");
}

/// Ctrl-C to the default LeNet (channels-last conv layers with several input
/// channels, as shipped): the snapshot is written, the resume command printed, and
/// that command, run as printed, continues the run to the uninterrupted run's rows and
/// weights, bit for bit: it keeps every `--set`, the runs dir and the thread count.
#[test]
fn ctrl_c_snapshots_and_the_printed_command_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    let sets = ["--set", &data, "--set", "max_iter=40", "--set", "test_interval=10", "--set", "display=2"];
    let common =
        [&["--threads", "2", "train", solver.to_str().unwrap(), "--runs-dir", "my runs"][..], &sets].concat();
    ok(&[&common[..], &["--name", "full", "-q"]].concat(), d);
    let bin = env!("CARGO_BIN_EXE_fkpnet");
    let child = Command::new(bin)
        .args([&common[..], &["--name", "x"]].concat())
        .env("FKPNET_PROGRAM", bin)
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = d.join("my runs/x/metrics.csv");
    let t0 = Instant::now();
    while read_metrics(&metrics).map_or(0, |r| r.len()) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{e}");
    let cmd =
        e.lines().skip_while(|l| !l.starts_with("Resume with:")).nth(1).unwrap_or_else(|| panic!("{e}"));
    assert!(cmd.contains("--snapshot") && cmd.contains("--threads 2") && cmd.contains("'my runs'"), "{cmd}");
    let snaps: Vec<_> = std::fs::read_dir(d.join("my runs/x"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(snaps.iter().any(|n| n.ends_with(".solverstate")), "{snaps:?}");
    assert!(!snaps.iter().any(|n| n.starts_with(".tmp")), "temp files left behind: {snaps:?}");
    // Run verbatim, as a user pastes it into the shell.
    let resumed = Command::new("sh").args(["-c", cmd.trim()]).current_dir(d).output().unwrap();
    assert!(resumed.status.success(), "{cmd}:\n{}", String::from_utf8_lossy(&resumed.stderr));
    let (a, b) = (rows(&d.join("my runs/full/metrics.csv")), rows(&d.join("my runs/x_resumed/metrics.csv")));
    assert_eq!(a, b, "the printed command must continue the same run");
    for ((na, ta), (_, tb)) in tensors(&d.join("my runs/full/weights.safetensors"))
        .iter()
        .zip(&tensors(&d.join("my runs/x_resumed/weights.safetensors")))
    {
        assert!(ta.equal(tb), "{na} differs after the printed resume");
    }
}

#[test]
fn atomic_write_keeps_the_old_file_when_a_write_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    fkpnet::run::write_text(&p, "complete").unwrap();
    let r = fkpnet::run::atomic_write(&p, |tmp| {
        std::fs::write(tmp, "half").unwrap();
        anyhow::bail!("disk full")
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "complete");
}

#[test]
fn train_log_has_caffes_line_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = setup(d);
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "--name",
            "l",
            "-q",
            "--set",
            "max_iter=12",
        ],
        d,
    );
    let log = std::fs::read_to_string(d.join("runs/l/train.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // glog prefix: I<mmdd> <hh:mm:ss.uuuuuu> <pid> <file>:<line>]
    for l in &lines {
        let parts: Vec<&str> = l.splitn(5, ' ').collect();
        assert!(parts[0].len() == 5 && parts[0].starts_with('I'), "{l}");
        assert!(parts[1].len() == 15 && parts[1].as_bytes()[8] == b'.', "{l}");
        assert!(parts[3].ends_with(']') && parts[3].contains(".cpp:"), "{l}");
    }
    let msg = |l: &&str| l.splitn(5, ' ').nth(4).unwrap_or("").to_string();
    let msgs: Vec<String> = lines.iter().map(msg).collect();
    assert_eq!(msgs[0], "Solving small");
    assert!(msgs.contains(&"Iteration 0, Testing net (#0)".to_string()));
    assert!(msgs.iter().any(|m| m.starts_with("    Test net output #0: loss = ") && m.contains(" (* 1 = ")));
    assert!(msgs.iter().any(|m| m.starts_with("    Test net output #1: rmse_px = ")));
    assert!(msgs.iter().any(|m| m.starts_with("Iteration 4 (")
        && m.contains(" iter/s, ")
        && m.contains("s/4 iters), loss = ")));
    assert!(msgs.iter().any(|m| m.starts_with("    Train net output #0: euclidean = ")));
    assert!(msgs.contains(&"Iteration 8, lr = 0.005".to_string()), "step policy: lr halves at 7\n{log}");
    assert!(msgs.contains(&"Iteration 12, Testing net (#0)".to_string()));
    assert_eq!(msgs.last().unwrap(), "Optimization Done.");
}

#[test]
fn tensorboard_events_hold_scalars_and_histograms() {
    use fkpnet::proto::tensorboard::{event::What, summary::value::Value};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = setup(d);
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "--name",
            "tb",
            "-q",
            "--set",
            "max_iter=12",
        ],
        d,
    );
    let file = std::fs::read_dir(d.join("runs/tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .expect("an events file");
    let events = fkpnet::run::tensorboard::read_events(&file).unwrap();
    assert!(matches!(&events[0].what, Some(What::FileVersion(v)) if v == "brain.Event:2"));
    let mut scalars = Vec::new();
    let mut histos = Vec::new();
    for e in &events[1..] {
        let Some(What::Summary(s)) = &e.what else { panic!("summary expected") };
        for v in &s.value {
            match &v.value {
                Some(Value::SimpleValue(x)) => scalars.push((v.tag.clone(), e.step, *x)),
                Some(Value::Histo(h)) => {
                    histos.push((v.tag.clone(), e.step, h.num, h.bucket.iter().sum::<f64>()))
                }
                _ => panic!("unexpected value"),
            }
        }
    }
    let steps = |tag: &str| scalars.iter().filter(|s| s.0 == tag).map(|s| s.1).collect::<Vec<_>>();
    assert_eq!(steps("val/rmse_px"), vec![0, 6, 12]);
    // The final iteration has a train loss too (Caffe's last `Iteration N, loss = L`).
    assert_eq!(steps("train/loss"), vec![0, 4, 8, 12]);
    assert_eq!(steps("lr"), vec![0, 4, 8]);
    let rows = rows(&d.join("runs/tb/metrics.csv"));
    let first_val = scalars.iter().find(|s| s.0 == "val/rmse_px").unwrap().2 as f64;
    assert!((first_val - rows[0].val_rmse_px.unwrap()).abs() < 1e-3);
    for tag in ["fc1.weight", "fc1.bias", "out.weight", "activations/fc1", "activations/out"] {
        let h: Vec<_> = histos.iter().filter(|h| h.0 == tag).collect();
        assert_eq!(h.iter().map(|h| h.1).collect::<Vec<_>>(), vec![0, 6, 12], "{tag}");
        assert!(h.iter().all(|h| (h.2 - h.3).abs() < 0.5), "{tag}: bucket counts add up to num");
    }
    // Switched off: scalars only.
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "--name",
            "nohist",
            "-q",
            "--set",
            "max_iter=6",
            "--set",
            "histograms=false",
        ],
        d,
    );
    let f = std::fs::read_dir(d.join("runs/nohist"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("tfevents"))
        .unwrap();
    let n_histo = fkpnet::run::tensorboard::read_events(&f)
        .unwrap()
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => {
                Some(s.value.iter().filter(|v| matches!(v.value, Some(Value::Histo(_)))).count())
            }
            _ => None,
        })
        .sum::<usize>();
    assert_eq!(n_histo, 0);
}
