//! The sweep directory as executors use it: `sweep plan`, `sweep run --trial` (by
//! flag or by the scheduler's index variable), `sweep collect`; the generated Slurm,
//! GNU parallel and Kubernetes files; random search; a stopping rule; local `--jobs`
//! killed and resumed; and the bad inputs.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn small(data: &str) -> Vec<String> {
    ["max_iter=4", "test_interval=2", "batch_size=16"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.to_string()])
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
}

fn args<'a>(v: &'a [String]) -> Vec<&'a str> {
    v.iter().map(String::as_str).collect()
}

/// The `val_rmse_px at common iterations` table, without the timing row.
fn val_table(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("val_rmse_px at common iterations"))
        .take_while(|l| !l.starts_with("best val_rmse_px"))
        .filter(|l| !l.trim_start().starts_with("s/iter"))
        .map(String::from)
        .collect()
}

#[test]
fn plan_run_trials_and_collect_reproduce_the_one_command_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    let mut plan = vec!["sweep".to_string(), "plan".into(), solver.display().to_string()];
    plan.extend(small(&data));
    plan.extend(["--set", "layers.fc1.num_output=32,64", "--name", "sw", "--dir", "sw"].map(String::from));
    let out = ok(&args(&plan), d);
    assert!(out.contains("planned 2 trials in sw") && out.contains("sweep slurm sw"), "{out}");
    let m = std::fs::read_to_string(d.join("sw/sweep.yaml")).unwrap();
    assert!(m.contains("fkpnet_sweep: 1") && m.contains("name: sw-num_output=64"), "{m}");
    // Planning the same again finds it; nothing is rewritten.
    assert!(ok(&args(&plan), d).contains("planned 2 trials"));
    // Trial 1 by its flag, trial 0 by the index a Slurm array gives.
    let one = ok(&["sweep", "run", "sw", "--trial", "1", "-q"], d);
    assert!(one.contains("trial 1 (sw-num_output=64): finished 4 iterations"), "{one}");
    let partial = fkpnet(&["sweep", "collect", "sw"], d);
    let (so, se) = (String::from_utf8_lossy(&partial.stdout), String::from_utf8_lossy(&partial.stderr));
    assert!(
        so.contains("0  sw-num_output=32  no result yet")
            && se.contains("1 of 2 trials have no result yet: 0"),
        "{so}{se}"
    );
    let bin = env!("CARGO_BIN_EXE_fkpnet");
    let o = Command::new(bin)
        .args(["sweep", "run", "sw", "-q"])
        .env("SLURM_ARRAY_TASK_ID", "0")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stderr).contains("trial 0 from SLURM_ARRAY_TASK_ID")
    );
    // A second run of a finished trial does nothing.
    assert!(ok(&["sweep", "run", "sw", "--trial", "1"], d).contains("has a result already"));
    let collected = ok(&["sweep", "collect", "sw", "-o", "sw.png"], d);
    assert!(d.join("sw.png").is_file());
    assert!(
        collected.contains("layers.fc1.num_output: 32 -> 64") && collected.contains("ensemble of all 2 runs"),
        "{collected}"
    );
    // best.yaml trains again as the best trial did.
    let best = std::fs::read_to_string(d.join("sw/best.yaml")).unwrap();
    assert!(best.starts_with("# The best trial of the sweep sw"), "{best}");
    // The one-command sweep of the same space: the same trials, the same numbers.
    let mut legacy = vec!["sweep".to_string(), solver.display().to_string()];
    legacy.extend(small(&data));
    legacy.extend(
        ["--set", "layers.fc1.num_output=32,64", "--name", "sw", "--runs-dir", "runs", "-q"]
            .map(String::from),
    );
    let whole = ok(&args(&legacy), d);
    assert_eq!(val_table(&whole), val_table(&collected), "{whole}\n---\n{collected}");
    assert!(!val_table(&whole).is_empty());
    let ids = |p: &Path| {
        let m: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        m["trials"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&d.join("sw/sweep.yaml")),
        ids(&d.join("runs/sw.sweep/sweep.yaml")),
        "ids come from the configs"
    );
}

#[test]
fn executors_are_generated_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    let mut plan = vec!["sweep".to_string(), "plan".into(), solver.display().to_string()];
    plan.extend(small(&data));
    plan.extend(["--set", "base_lr=1e-3,3e-4,1e-4", "--dir", "sw"].map(String::from));
    ok(&args(&plan), d);
    let out = ok(
        &[
            "sweep",
            "slurm",
            "sw",
            "--cpus-per-task",
            "1",
            "--mem",
            "2G",
            "--time",
            "0:10:00",
            "--max-running",
            "2",
            "--sbatch=--account=lab",
        ],
        d,
    );
    assert!(out.contains("submit with: sbatch"), "{out}");
    let s = std::fs::read_to_string(d.join("sw/slurm.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-2%2",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH --time=0:10:00",
        "#SBATCH --account=lab",
        "/logs/slurm-%A_%a.out",
    ] {
        assert!(s.contains(line), "{line}:\n{s}");
    }
    assert!(s.contains("sweep run") && s.contains("--trial \"$SLURM_ARRAY_TASK_ID\""), "{s}");
    let status =
        Command::new("bash").args(["-n", d.join("sw/slurm.sbatch").to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "the script is valid bash");
    let lines = ok(&["sweep", "parallel", "sw"], d);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(lines.lines().nth(2).unwrap().contains("--trial 2 --threads 1 -q"), "{lines}");
    // After trial 1 has its result, the executors cover only the rest.
    ok(&["sweep", "run", "sw", "--trial", "1", "-q"], d);
    ok(&["sweep", "slurm", "sw"], d);
    let s = std::fs::read_to_string(d.join("sw/slurm.sbatch")).unwrap();
    assert!(s.contains("#SBATCH --array=0,2\n"), "{s}");
    assert_eq!(ok(&["sweep", "parallel", "sw"], d).lines().count(), 2);
    // Kubernetes: an indexed Job on the claim that holds the sweep dir.
    let abs = d.canonicalize().unwrap();
    let mount = abs.display().to_string();
    ok(&["sweep", "k8s", "sw", "--image", "lab/fkpnet:1", "--claim", "sweeps", "--mount", &mount], d);
    let text = std::fs::read_to_string(d.join("sw/k8s-job.yaml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"].as_u64(), Some(3));
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "lab/fkpnet:1");
    assert_eq!(c["command"][1], "sweep");
    assert_eq!(job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "sweeps");
    let e = err(&["sweep", "k8s", "sw", "--image", "i", "--claim", "c", "--mount", "/elsewhere"], d);
    assert!(e.contains("must lie under the claim's mount path"), "{e}");
    // Not overwritten without --force.
    let e = err(&["sweep", "k8s", "sw", "--image", "i", "--claim", "c", "--mount", &mount], d);
    assert!(e.contains("exists"), "{e}");
}

#[test]
fn bad_sweep_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let s = solver.to_str().unwrap();
    let e = err(&["sweep", "plan", s, "--set", "base_lr=logunifrom(1e-4,1e-2)", "--trials", "4"], d);
    assert!(e.contains("unknown distribution `logunifrom` (did you mean `loguniform`?)"), "{e}");
    let e = err(&["sweep", "plan", s, "--set", "base_lr=uniform(1e-2,1e-4)", "--trials", "4"], d);
    assert!(e.contains("low < high"), "{e}");
    let e = err(&["sweep", "plan", s, "--set", "base_lr=loguniform(1e-4,1e-2)"], d);
    assert!(e.contains("give --trials N"), "{e}");
    let e = err(&["sweep", "plan", s, "--set", "base_lr=1e-3,1e-4", "--trials", "3"], d);
    assert!(e.contains("needs a distribution"), "{e}");
    let e = err(&["sweep", "plan", s, "--set", "base_lr=1e-3,1e-4", "--grace", "10"], d);
    assert!(e.contains("--stop asha"), "{e}");
    let e = err(&["sweep", "run", "nowhere", "--trial", "0"], d);
    assert!(e.contains("not a sweep directory"), "{e}");
    let data = format!("data.train={}", mini_csv());
    ok(&["sweep", "plan", s, "--set", &data, "--set", "base_lr=1e-3,1e-4", "--dir", "sw"], d);
    let e = err(&["sweep", "run", "sw", "--trial", "2"], d);
    assert!(e.contains("trial 2 is out of range: this sweep has 2 trials, 0 to 1"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_fkpnet"))
        .args(["sweep", "run", "sw"])
        .env("JOB_COMPLETION_INDEX", "x")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("JOB_COMPLETION_INDEX=\"x\": not a trial index"));
    // Planning another space into the same dir is refused; the dir is untouched.
    let before = std::fs::read_to_string(d.join("sw/sweep.yaml")).unwrap();
    let e = err(&["sweep", "plan", s, "--set", &data, "--set", "base_lr=1e-2,1e-4", "--dir", "sw"], d);
    assert!(
        e.contains("holds another sweep (its trial 0 is adam-base_lr=1e-3, this one's adam-base_lr=1e-2)"),
        "{e}"
    );
    assert_eq!(before, std::fs::read_to_string(d.join("sw/sweep.yaml")).unwrap());
    // The same space after a file it reads changed: said so, not trained over.
    let changed = write(d, "changed.yaml", &format!("base: {s}\nmomentum2: 0.99\n"));
    let c = changed.to_str().unwrap();
    ok(
        &["sweep", "plan", c, "--set", &data, "--set", "base_lr=1e-3,1e-4", "--name", "sw", "--dir", "sw2"],
        d,
    );
    std::fs::write(
        &changed,
        std::fs::read_to_string(&changed).unwrap().replace("momentum2: 0.99", "momentum2: 0.98"),
    )
    .unwrap();
    let e = err(
        &["sweep", "plan", c, "--set", &data, "--set", "base_lr=1e-3,1e-4", "--name", "sw", "--dir", "sw2"],
        d,
    );
    assert!(
        e.contains("would train another config than it did") && e.contains("changed since it was planned"),
        "{e}"
    );
    // A sweep dir of another format says which and what to do.
    std::fs::write(d.join("sw/sweep.yaml"), before.replace("fkpnet_sweep: 1", "fkpnet_sweep: 7")).unwrap();
    let e = err(&["sweep", "collect", "sw"], d);
    assert!(
        e.contains("a sweep of format 7")
            && e.contains("reads format 1")
            && e.contains("Plan the sweep again"),
        "{e}"
    );
    // A folder that is not a sweep dir is never planned into.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep").unwrap();
    let e = err(&["sweep", "plan", s, "--set", &data, "--set", "base_lr=1e-3,1e-4", "--dir", "mine"], d);
    assert!(e.contains("is not a sweep directory"), "{e}");
}

#[test]
fn random_search_samples_the_same_trials_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let s = solver.to_str().unwrap();
    let data = format!("data.train={}", mini_csv());
    let plan = |dir: &str, seed: &str| {
        ok(
            &[
                "sweep",
                "plan",
                s,
                "--set",
                &data,
                "--set",
                "base_lr=loguniform(1e-4,1e-2)",
                "--set",
                "layers.fc1.num_output=int(16,64)",
                "--set",
                "random_seed=0,1",
                "--trials",
                "3",
                "--seed",
                seed,
                "--dir",
                dir,
            ],
            d,
        )
    };
    let a = plan("a", "5");
    assert!(a.contains("planned 6 trials"), "3 samples x 2 grid points: {a}");
    let trials = |dir: &str| -> Vec<serde_yaml::Value> {
        let m: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(d.join(dir).join("sweep.yaml")).unwrap()).unwrap();
        m["trials"].as_sequence().unwrap().clone()
    };
    plan("b", "5");
    plan("c", "6");
    assert_eq!(trials("a"), trials("b"), "the same seed plans the same trials");
    assert_ne!(trials("a"), trials("c"));
    for t in trials("a") {
        let sets: Vec<&str> = t["sets"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let lr: f64 = sets.iter().find_map(|s| s.strip_prefix("base_lr=")).unwrap().parse().unwrap();
        let n: i64 =
            sets.iter().find_map(|s| s.strip_prefix("layers.fc1.num_output=")).unwrap().parse().unwrap();
        assert!((1e-4..=1e-2).contains(&lr) && (16..=64).contains(&n), "{sets:?}");
        // The trial's config trains exactly the sampled values.
        let cfg =
            std::fs::read_to_string(d.join("a/trials").join(format!("{}.yaml", t["id"].as_str().unwrap())))
                .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&cfg).unwrap();
        assert_eq!(v["base_lr"].as_f64(), Some(lr));
        assert!(t["name"].as_str().unwrap().contains("-s0"), "{t:?}");
    }
}

#[test]
fn asha_stops_losing_trials_and_collect_marks_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    // Four learning rates, two of them hopeless; rungs at 4 and 8 of 16 iterations.
    let out = ok(
        &[
            "sweep",
            solver.to_str().unwrap(),
            "--set",
            &data,
            "--set",
            "max_iter=16",
            "--set",
            "test_interval=4",
            "--set",
            "batch_size=16",
            "--set",
            "base_lr=1e-3,1e-9,3e-4,1e-10",
            "--stop",
            "asha",
            "--reduction",
            "2",
            "--name",
            "h",
            "-q",
        ],
        d,
    );
    let m: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(d.join("runs/h.sweep/sweep.yaml")).unwrap()).unwrap();
    assert_eq!(m["space"]["stop"]["rule"], "asha");
    assert_eq!(m["space"]["stop"]["grace"].as_i64(), Some(4), "grace defaults to test_interval");
    let stopped: Vec<&str> =
        out.lines().filter(|l| l.contains("stopped at iteration") && l.contains("(asha rung")).collect();
    assert!(!stopped.is_empty(), "{out}");
    assert!(
        out.lines().any(|l| l.contains("h-base_lr=1e-3") && l.contains("finished 16 iterations")),
        "the first trial runs to the end: {out}"
    );
    for l in &stopped {
        assert!(!l.contains("base_lr=1e-3 "), "{l}");
    }
    let ledger = std::fs::read_to_string(d.join("runs/h.sweep/ledger.tsv")).unwrap();
    assert!(ledger.lines().count() >= 4, "{ledger}");
    let r = ok(&["sweep", "collect", "runs/h.sweep"], d);
    assert!(r.contains("stopped at iteration 4 (asha rung 4: val"), "{r}");
}

/// `--jobs 2`: two trials at once as processes; Ctrl-C (SIGINT to the sweep) makes
/// each snapshot, and the same command again finishes only what is missing.
#[test]
fn local_jobs_killed_and_started_again_finish_only_the_missing_trials() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    let bin = env!("CARGO_BIN_EXE_fkpnet");
    let sweep_args = |max: &str| {
        vec![
            "sweep".to_string(),
            solver.display().to_string(),
            "--set".into(),
            data.clone(),
            "--set".into(),
            "batch_size=8".into(),
            "--set".into(),
            "display=2".into(),
            "--set".into(),
            "snapshot=20".into(),
            "--set".into(),
            format!("max_iter={max}"),
            "--set".into(),
            "test_interval=20".into(),
            "--set".into(),
            "base_lr=1e-3,3e-4,1e-4".into(),
            "--name".into(),
            "j".into(),
            "--jobs".into(),
            "2".into(),
        ]
    };
    let child = Command::new(bin)
        .args(sweep_args("400"))
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both first trials train at once: wait for rows in both, then interrupt.
    let rows = |n: &str| {
        fkpnet::run::read_metrics(&d.join("runs").join(n).join("metrics.csv")).map_or(0, |r| r.len())
    };
    let t0 = Instant::now();
    while rows("j-base_lr=1e-3") < 3 || rows("j-base_lr=3e-4") < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the two trials did not start together");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!d.join("runs/j-base_lr=1e-4").exists(), "the third waits for a free slot");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{e}");
    assert!(e.contains("Resume with"), "{e}");
    for n in ["j-base_lr=1e-3", "j-base_lr=3e-4"] {
        let snaps = std::fs::read_dir(d.join("runs").join(n))
            .unwrap()
            .filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|x| x == "solverstate"));
        assert!(snaps.count() >= 1, "{n} snapshotted when interrupted");
    }
    assert_eq!(std::fs::read_dir(d.join("runs/j.sweep/results")).unwrap().count(), 0);
    // The same command again: the two resume, the third trains, each once.
    let again = Command::new(bin).args(sweep_args("400")).current_dir(d).output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&again.stderr));
    assert!(again.status.success(), "{se}");
    assert!(so.contains("trained 3 runs") && so.contains("3 with results"), "{so}");
    for n in ["j-base_lr=1e-3_resumed", "j-base_lr=3e-4_resumed", "j-base_lr=1e-4"] {
        let r = fkpnet::run::read_metrics(&d.join("runs").join(n).join("metrics.csv")).unwrap();
        assert_eq!(r.last().unwrap().iter, 400, "{n}");
    }
    assert!(!d.join("runs/j-base_lr=1e-4_resumed").exists());
    // And once more: nothing left to train.
    let third = ok(&args(&sweep_args("400")), d);
    assert!(third.contains("trained 0 runs"), "{third}");
}
