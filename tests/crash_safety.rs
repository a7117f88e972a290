//! `kill -9` at random moments, resumed each time from what is on disk: every
//! snapshot left behind loads, metrics.csv reads, and after all the kills the run ends
//! with exactly the rows of an uninterrupted one.
//!
//! The suite runs a few kills; the long run is documented in README:
//! `FKPNET_KILL_CYCLES=100 cargo test --release --test crash_safety -- --nocapture`.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAX_ITER: i64 = 100;

/// The default LeNet as shipped (solvers/adam.yaml, channels-last conv layers with
/// several input channels), on the small data with flips and shifts, a row every 2
/// iterations and a snapshot every 10.
fn solver(dir: &Path) -> PathBuf {
    write(
        dir,
        "solver.yaml",
        &format!(
            "base: {}\ndata: {{train: {}, labels: masked, augment: {{flip: true, shift: 2}}}}\n\
             batch_size: 16\nmax_iter: {MAX_ITER}\ntest_interval: 20\ndisplay: 2\nsnapshot: 10\nrandom_seed: 5\n",
            root().join("solvers/adam.yaml").display(),
            mini_csv()
        ),
    )
}

/// The newest snapshot whose weights and solverstate both exist.
fn latest_snapshot(run: &Path) -> Option<(i64, PathBuf)> {
    std::fs::read_dir(run)
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let iter: i64 =
                name.strip_prefix("snapshot_iter_")?.strip_suffix(".solverstate")?.parse().ok()?;
            p.with_extension("safetensors").is_file().then_some((iter, p))
        })
        .max_by_key(|(i, _)| *i)
}

fn rows(run: &Path) -> Vec<fkpnet::run::MetricsRow> {
    fkpnet::run::read_metrics(&run.join("metrics.csv"))
        .unwrap_or_else(|e| panic!("{}: metrics unreadable after a kill: {e:#}", run.display()))
        .into_iter()
        .map(|r| fkpnet::run::MetricsRow { seconds: 0.0, ..r })
        .collect()
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_the_uninterrupted_run() {
    let cycles: usize = std::env::var("FKPNET_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = solver(d);
    let s = s.to_str().unwrap();
    ok(&["train", s, "--runs-dir", "runs", "--name", "whole", "-q"], d);
    let whole = rows(&d.join("runs/whole"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let (mut from, mut kills, mut landed) = (None::<PathBuf>, 0, 0);
    for cycle in 0..cycles + 1 {
        let name = format!("k{cycle}");
        // Where this cycle starts; a chain that got too close to the end starts over, so
        // every kill but the last lands while there is training left to interrupt.
        let iter_of = |p: &PathBuf| latest_snapshot(p.parent().unwrap()).map_or(0, |(i, _)| i);
        if cycle < cycles && from.as_ref().is_some_and(|p| iter_of(p) + 10 >= MAX_ITER) {
            from = None;
        }
        let start = from.as_ref().map_or(0, iter_of);
        let mut args: Vec<String> =
            ["train", s, "--runs-dir", "runs", "--name", &name, "-q"].iter().map(|a| a.to_string()).collect();
        if let Some(snap) = &from {
            args.extend(["--snapshot".to_string(), snap.display().to_string()]);
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fkpnet"))
            .args(&args)
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let run = d.join("runs").join(&name);
        if cycle < cycles {
            // Kill somewhere in what is left to do: once the metrics reach a random
            // iteration, after a random few milliseconds more (mid-step, mid-test or
            // mid-snapshot-write alike).
            let target = rng.random_range(start..MAX_ITER - 5);
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
                let reached = std::fs::read_to_string(run.join("metrics.csv"))
                    .ok()
                    .and_then(|t| t.lines().last().and_then(|l| l.split(',').next()?.parse::<i64>().ok()))
                    .unwrap_or(-1);
                if reached >= target {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..60)));
            child.kill().unwrap(); // SIGKILL: no handler runs
            kills += 1;
        }
        let status = child.wait().unwrap();
        if cycle == cycles {
            assert!(status.success(), "the last resume should finish");
        } else if status.success() {
            landed += 1; // finished before the kill: resume from its last snapshot anyway
        }
        // Whatever the moment, the metrics read (a cut-off last line is left out) ...
        if run.join("metrics.csv").exists() {
            let got = rows(&run);
            assert!(whole.starts_with(&got), "{name}: rows differ from the uninterrupted run's");
        }
        // ... and the newest snapshot is whole: the next cycle resumes from it (or from
        // the previous one's, when this one died before its first snapshot).
        if let Some((_, snap)) = latest_snapshot(&run) {
            from = Some(snap);
        }
    }
    let last = d.join("runs").join(format!("k{cycles}"));
    assert_eq!(rows(&last), whole, "after {kills} kills ({landed} runs had already finished)");
    let w = |p: &Path| {
        let mut t = tch::Tensor::read_safetensors(p).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (a, b) = (w(&d.join("runs/whole/weights.safetensors")), w(&last.join("weights.safetensors")));
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(na == nb && ta.equal(tb), "final weights differ at {na}: max abs diff {diff:e}");
    }
    eprintln!("{kills} kills at random moments ({landed} runs had finished first); every snapshot loaded, every metrics.csv read");
}

#[test]
fn a_full_disk_is_reported_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let e = fkpnet::run::check_space(dir.path(), 50_000_000, Some(1_000_000)).unwrap_err().to_string();
    assert!(e.contains("1.0 MB free") && e.contains("about 50.0 MB") && e.contains("--runs-dir"), "{e}");
    assert!(fkpnet::run::check_space(dir.path(), 1000, Some(1_000_000)).is_ok());
    // The real filesystem answers.
    assert!(fkpnet::run::free_bytes(dir.path()).is_some_and(|b| b > 0));
    // A failed atomic write leaves the old file and no temp file behind.
    let f = dir.path().join("w.bin");
    std::fs::write(&f, b"old").unwrap();
    let r = fkpnet::run::atomic_write(&f, |tmp| {
        std::fs::write(tmp, b"partial")?;
        anyhow::bail!("No space left on device (os error 28)")
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(&f).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temp file removed");
}

#[test]
fn a_cut_off_metrics_line_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("metrics.csv");
    // The header of runs made before NME joined (2026-12-01) still reads.
    let old_header = "iter,epoch,lr,train_loss,train_rmse_px,val_loss,val_rmse_px,seconds";
    std::fs::write(&p, format!("{old_header}\n0,0.000,1e-3,1.0,2.0,,,0.50\n10,0.5")).unwrap();
    let r = fkpnet::run::read_metrics(&p).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].train_rmse_px, Some(2.0));
    assert_eq!((r[0].val_loss, r[0].val_nme, r[0].seconds), (None, None, 0.5));
    // Today's header, with a cut-off row.
    let h = fkpnet::run::metrics_header();
    assert!(h.ends_with("val_rmse_px,val_nme,val_fr,val_auc,seconds"), "{h}");
    std::fs::write(&p, format!("{h}\n0,0.000,,,,1.0,2.0,5.0,1.0,60.0,0.50\n10,0.5")).unwrap();
    let r = fkpnet::run::read_metrics(&p).unwrap();
    assert_eq!((r.len(), r[0].val_nme, r[0].val_auc), (1, Some(5.0), Some(60.0)));
}
