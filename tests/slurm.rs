//! A sweep through a real Slurm: tests/slurm/cluster.sh starts a one-node cluster
//! (Debian's slurm-wlm, auth/none, as root, in the test's temp dir); `fkpnet sweep
//! slurm --submit` runs the trials as an array job; one task is cancelled mid-way
//! (Slurm's SIGTERM: the trial snapshots) and the resubmission runs only that trial,
//! resuming it. Skipped, saying why, where the cluster cannot start.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tests/slurm/cluster.sh")).arg("stop").arg(&self.dir).status();
    }
}

fn slurm(cmd: &str, args: &[&str], conf: &Path) -> String {
    let o = Command::new(cmd).args(args).env("SLURM_CONF", conf).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fkpnet_slurm(args: &[&str], cwd: &Path, conf: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_fkpnet"))
        .args(args)
        .env("SLURM_CONF", conf)
        .current_dir(cwd)
        .output()
        .unwrap();
    let (so, se) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "fkpnet {args:?}:\n{so}{se}");
    so.into_owned()
}

fn wait_done(job: &str, conf: &Path) {
    let t0 = Instant::now();
    while !slurm("squeue", &["-h", "-j", job, "-o", "%i"], conf).trim().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(300), "job {job} did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sweep_runs_as_a_slurm_array_and_a_cancelled_task_resumes_when_resubmitted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cluster_dir = d.join("cluster");
    let start =
        Command::new(root().join("tests/slurm/cluster.sh")).arg("start").arg(&cluster_dir).output().unwrap();
    let said = String::from_utf8_lossy(&start.stdout).into_owned() + &String::from_utf8_lossy(&start.stderr);
    if start.status.code() == Some(2) {
        eprintln!("skipped: {said}");
        return;
    }
    assert!(start.status.success(), "{said}");
    let _cluster = Cluster { dir: cluster_dir.clone() };
    let conf = cluster_dir.join("slurm.conf");

    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    fkpnet_slurm(
        &[
            "sweep",
            "plan",
            solver.to_str().unwrap(),
            "--set",
            &data,
            "--set",
            "batch_size=8",
            "--set",
            "display=10",
            "--set",
            "snapshot=50",
            "--set",
            "test_interval=50",
            "--set",
            "max_iter=400",
            "--set",
            "base_lr=1e-3,3e-4,1e-4",
            "--name",
            "sl",
            "--dir",
            "sw",
        ],
        d,
        &conf,
    );
    let out = fkpnet_slurm(
        &["sweep", "slurm", "sw", "--cpus-per-task", "1", "--max-running", "2", "--submit"],
        d,
        &conf,
    );
    let job = out.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_string();
    assert!(out.starts_with("submitted job ") && out.contains("3 trials (0-2)"), "{out}");
    // Cancel trial 0's task once it is training (Slurm sends SIGTERM; it snapshots).
    let metrics = d.join("sw/runs/sl-base_lr=1e-3/metrics.csv");
    let t0 = Instant::now();
    while fkpnet::run::read_metrics(&metrics).map_or(0, |r| r.len()) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "trial 0 did not start: {:?}",
            std::fs::read_dir(d.join("sw/logs")).map(|r| r.count())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    slurm("scancel", &[&format!("{job}_0")], &conf);
    wait_done(&job, &conf);
    let results = |i: usize| {
        let m: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(d.join("sw/sweep.yaml")).unwrap()).unwrap();
        let id = m["trials"][i]["id"].as_str().unwrap().to_string();
        d.join("sw/results").join(format!("{id}.yaml")).is_file()
    };
    assert!(!results(0) && results(1) && results(2), "trial 0 cancelled, 1 and 2 finished");
    let log = std::fs::read_to_string(d.join(format!("sw/logs/slurm-{job}_0.out"))).unwrap();
    assert!(log.contains("interrupted at iteration") || log.contains("snapshot"), "{log}");
    // Resubmitted: an array of trial 0 alone, which resumes from its snapshot.
    let out = fkpnet_slurm(&["sweep", "slurm", "sw", "--cpus-per-task", "1", "--submit"], d, &conf);
    assert!(out.contains("1 trials (0)"), "{out}");
    let job2 = out.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_string();
    wait_done(&job2, &conf);
    assert!(
        results(0),
        "{}",
        std::fs::read_to_string(d.join(format!("sw/logs/slurm-{job2}_0.out"))).unwrap_or_default()
    );
    let train_log = std::fs::read_to_string(d.join("sw/runs/sl-base_lr=1e-3_resumed/train.log")).unwrap();
    assert!(train_log.contains("Resuming from"), "{train_log}");
    let rows = fkpnet::run::read_metrics(&d.join("sw/runs/sl-base_lr=1e-3_resumed/metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().iter, 400);
    let collected = fkpnet_slurm(&["sweep", "collect", "sw"], d, &conf);
    assert!(
        collected.contains("3 trials, 3 with results") && collected.contains("ensemble of all 3 runs"),
        "{collected}"
    );
    // Nothing is left to submit.
    let o = Command::new(env!("CARGO_BIN_EXE_fkpnet"))
        .args(["sweep", "slurm", "sw"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to submit"));
}
