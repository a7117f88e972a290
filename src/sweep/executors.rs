//! Executors of a planned sweep, each generated from its manifest and each running
//! `fkpnet sweep run DIR --trial i`: local processes with the cores shared out, a
//! Slurm array script, command lines for GNU parallel, a Kubernetes indexed Job.
//! The sweep dir on shared storage is the only coupling between them.

use super::manifest::Manifest;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `0-3,5,7-9`: indices as Slurm's --array ranges.
pub fn ranges(indices: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        out.push(if i == j { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    out.join(",")
}

/// Shell-quoted, for commands printed or written into scripts.
pub fn quote(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_string())
}

/// The command that runs one trial (`--trial` omitted: the executor's index variable).
pub fn trial_command(program: &str, dir: &Path, trial: Option<usize>, threads: &str) -> String {
    let mut s = format!("{} sweep run {}", quote(program), quote(&dir.display().to_string()));
    if let Some(i) = trial {
        s += &format!(" --trial {i}");
    }
    format!("{s} --threads {threads} -q")
}

#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub cpus_per_task: u32,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub partition: Option<String>,
    /// At most this many array tasks at once (`%k`).
    pub max_running: Option<usize>,
    /// More `#SBATCH` lines, verbatim (`--account=lab`, `--qos=short`).
    pub extra: Vec<String>,
}

/// A Slurm array job over the trials without a result (all of them at first; after
/// a partial run, the rest): one array task per trial, its log in DIR/logs.
pub fn slurm_script(
    program: &str,
    dir: &Path,
    m: &Manifest,
    pending: &[usize],
    o: &SlurmOptions,
) -> Result<String> {
    if pending.is_empty() {
        bail!(
            "every trial of {} has a result: nothing to submit (`fkpnet sweep collect` compares them)",
            dir.display()
        );
    }
    let d = dir.display().to_string();
    let name = job_name(m);
    let mut array = ranges(pending);
    if let Some(k) = o.max_running {
        array += &format!("%{k}");
    }
    let mut s = format!(
        "#!/bin/bash\n\
         # fkpnet sweep {d}: one array task per trial ({} of {} trials to run).\n\
         # Submit: sbatch {}\n\
         #SBATCH --job-name={name}\n\
         #SBATCH --array={array}\n\
         #SBATCH --cpus-per-task={}\n\
         #SBATCH --output={}/logs/slurm-%A_%a.out\n",
        pending.len(),
        m.trials.len(),
        quote(&format!("{d}/slurm.sbatch")),
        o.cpus_per_task,
        d
    );
    for (key, v) in [("mem", &o.mem), ("time", &o.time), ("partition", &o.partition)] {
        if let Some(v) = v {
            s += &format!("#SBATCH --{key}={v}\n");
        }
    }
    for e in &o.extra {
        s += &format!("#SBATCH {e}\n");
    }
    s += "# Before a time limit or on scancel Slurm sends SIGTERM: fkpnet snapshots the trial, and\n\
          # submitting again resumes it from there (finished trials are skipped).\n\
          #SBATCH --signal=B:TERM@60\n";
    s += &format!(
        "exec {} sweep run {} --trial \"$SLURM_ARRAY_TASK_ID\" --threads \"${{SLURM_CPUS_PER_TASK:-1}}\" -q\n",
        quote(program),
        quote(&d)
    );
    Ok(s)
}

/// `fkpnet-NAME`, as job names go.
fn job_name(m: &Manifest) -> String {
    let base = if m.space.name.is_empty() {
        m.trials.first().map(|t| t.name.split('-').next().unwrap_or("sweep").to_string()).unwrap_or_default()
    } else {
        m.space.name.clone()
    };
    format!("fkpnet-{base}")
}

/// `sbatch --parsable FILE`: the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch").arg("--parsable").arg(script).output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run sbatch ({e}): is this a Slurm login node? The script is written: {}",
            script.display()
        )
    })?;
    if !out.status.success() {
        bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or("").to_string())
}

/// One command per trial without a result, for `parallel` (or any runner of lines).
pub fn parallel_lines(program: &str, dir: &Path, pending: &[usize], threads: u32) -> String {
    pending.iter().map(|&i| trial_command(program, dir, Some(i), &threads.to_string()) + "\n").collect()
}

#[derive(Debug, Clone)]
pub struct K8sOptions {
    pub image: String,
    pub claim: String,
    /// Where the claim is mounted in the container: the sweep dir must lie under it,
    /// at the same path as here.
    pub mount: String,
    pub parallelism: usize,
    pub cpus: u32,
    pub memory: String,
    pub program: String,
}

/// A Kubernetes indexed Job: completion index i runs trial i (`JOB_COMPLETION_INDEX`,
/// which `sweep run` reads), the sweep dir on a persistent volume claim.
pub fn k8s_job(dir: &Path, m: &Manifest, o: &K8sOptions) -> Result<String> {
    let d = dir.display().to_string();
    if !Path::new(&d).starts_with(&o.mount) {
        bail!("--mount {}: the sweep dir {d} must lie under the claim's mount path (the Job runs it at the same path)", o.mount);
    }
    let name: String = job_name(m)
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(52)
        .collect();
    let command = [o.program.as_str(), "sweep", "run", &d, "--threads", &o.cpus.to_string(), "-q"];
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": m.trials.len(),
            "parallelism": o.parallelism,
            "backoffLimit": m.trials.len() * 2,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "trial",
                    "image": o.image,
                    "command": command,
                    "resources": {
                        "requests": {"cpu": o.cpus.to_string(), "memory": o.memory},
                        "limits": {"cpu": o.cpus.to_string(), "memory": o.memory}
                    },
                    "volumeMounts": [{"name": "sweep", "mountPath": o.mount}]
                }],
                "volumes": [{"name": "sweep", "persistentVolumeClaim": {"claimName": o.claim}}]
            }}
        }
    });
    Ok(format!(
        "# fkpnet sweep {d}: completion index i runs trial i. kubectl apply -f {d}/k8s-job.yaml\n{}",
        serde_yaml::to_string(&job)?
    ))
}

/// Local processes: up to `jobs` trials at once, each `sweep run DIR --trial i
/// --threads T` in its own process group with its log in DIR/logs (so a Ctrl-C
/// reaches each trial once, forwarded from here, and each snapshots).
pub struct Local {
    pub program: String,
    pub jobs: usize,
    pub threads: u32,
}

/// A local trial's log: what it printed, every attempt appended.
fn log_of(dir: &Path, i: usize) -> std::path::PathBuf {
    dir.join("logs").join(format!("trial-{i}.log"))
}

pub struct LocalOutcome {
    pub interrupted: bool,
    /// Trials that failed: (index, the log to read).
    pub failed: Vec<(usize, std::path::PathBuf)>,
}

impl Local {
    pub fn run(
        &self,
        dir: &Path,
        m: &Manifest,
        pending: &[usize],
        say: &dyn Fn(&str),
    ) -> Result<LocalOutcome> {
        use std::os::unix::process::CommandExt;
        crate::train::progress::install_signal_handler();
        let mut queue: std::collections::VecDeque<usize> = pending.iter().copied().collect();
        let mut running: Vec<(usize, Child)> = Vec::new();
        let (mut forwarded, mut out) = (false, LocalOutcome { interrupted: false, failed: Vec::new() });
        loop {
            let stopping = crate::train::progress::interrupted();
            if stopping && !forwarded {
                for (_, c) in &running {
                    // SAFETY: kill(2) on our own child's pid, no memory involved.
                    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
                }
                forwarded = true;
                out.interrupted = true;
            }
            while !stopping && running.len() < self.jobs {
                let Some(i) = queue.pop_front() else { break };
                let log = log_of(dir, i);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .with_context(|| format!("cannot write {}", log.display()))?;
                let child = Command::new(&self.program)
                    .args(["sweep", "run"])
                    .arg(dir)
                    .args(["--trial", &i.to_string(), "--threads", &self.threads.to_string(), "-q"])
                    .stdin(Stdio::null())
                    .stdout(f.try_clone()?)
                    .stderr(f)
                    .process_group(0)
                    .spawn()
                    .with_context(|| format!("cannot start {}", self.program))?;
                say(&format!(
                    "trial {i}/{}: {} started (log: {})",
                    m.trials.len(),
                    m.trials[i].name,
                    log.display()
                ));
                running.push((i, child));
            }
            if running.is_empty() {
                break;
            }
            let mut k = 0;
            while k < running.len() {
                let Some(status) = running[k].1.try_wait()? else {
                    k += 1;
                    continue;
                };
                let (i, _) = running.remove(k);
                let t = &m.trials[i];
                match m.result(dir, t)? {
                    Some(r) => {
                        say(&format!("trial {i}/{}: {} {}", m.trials.len(), t.name, super::describe(&r)))
                    }
                    None if status.code() == Some(130) => {
                        say(&format!("trial {i}: {} interrupted, snapshotted", t.name))
                    }
                    None => {
                        say(&format!(
                            "trial {i}: {} failed ({status}); see {}",
                            t.name,
                            log_of(dir, i).display()
                        ));
                        out.failed.push((i, log_of(dir, i)));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(out)
    }
}
