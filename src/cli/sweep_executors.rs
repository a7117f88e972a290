//! The executor subcommands of `fkpnet sweep`: a Slurm array script, command lines
//! for GNU parallel, a Kubernetes indexed Job, all written from the sweep dir's
//! manifest with absolute paths (the nodes share storage).

use super::program;
use anyhow::Result;
use fkpnet::sweep::{executors, manifest::Manifest};
use std::path::{Path, PathBuf};

/// The sweep dir as an absolute path (what the scripts run), and its manifest.
fn open(dir: &Path) -> Result<(PathBuf, Manifest)> {
    let m = Manifest::read(dir)?;
    Ok((std::path::absolute(dir)?, m))
}

#[derive(clap::Args)]
pub struct Slurm {
    /// A sweep directory on storage the cluster's nodes share.
    dir: PathBuf,
    /// CPUs per array task (each trial runs with this many threads).
    #[arg(long, default_value_t = 2)]
    cpus_per_task: u32,
    /// Memory per task, as sbatch takes it (4G).
    #[arg(long)]
    mem: Option<String>,
    /// Time limit per task, as sbatch takes it (2:00:00).
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    partition: Option<String>,
    /// At most this many trials at once (the array's %K).
    #[arg(long, value_name = "K")]
    max_running: Option<usize>,
    /// More #SBATCH options, verbatim (--sbatch=--account=lab).
    #[arg(long = "sbatch", value_name = "OPTION")]
    extra: Vec<String>,
    /// Submit it with sbatch and print the job id.
    #[arg(long)]
    submit: bool,
}

#[derive(clap::Args)]
pub struct Parallel {
    dir: PathBuf,
    /// Threads per trial.
    #[arg(long = "trial-threads", default_value_t = 1)]
    trial_threads: u32,
}

#[derive(clap::Args)]
pub struct K8s {
    /// A sweep directory on the volume the claim holds.
    dir: PathBuf,
    /// A container image with fkpnet in it.
    #[arg(long)]
    image: String,
    /// The persistent volume claim that holds the sweep dir (and its data).
    #[arg(long)]
    claim: String,
    /// Where the claim is mounted; the sweep dir must lie under it at the same path.
    #[arg(long)]
    mount: String,
    /// Trials at once.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// CPUs per trial (each runs with this many threads).
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    #[arg(long, default_value = "4Gi")]
    memory: String,
    /// fkpnet's path in the image.
    #[arg(long, default_value = "fkpnet")]
    program: String,
    /// Overwrite DIR/k8s-job.yaml if it exists.
    #[arg(long)]
    force: bool,
}

impl Slurm {
    pub fn run(self) -> Result<()> {
        let (dir, m) = open(&self.dir)?;
        let pending = m.pending(&dir)?;
        let o = executors::SlurmOptions {
            cpus_per_task: self.cpus_per_task,
            mem: self.mem,
            time: self.time,
            partition: self.partition,
            max_running: self.max_running,
            extra: self.extra,
        };
        let exe = std::env::current_exe()?.display().to_string();
        let script = executors::slurm_script(&exe, &dir, &m, &pending, &o)?;
        let path = dir.join("slurm.sbatch");
        fkpnet::run::write_text(&path, &script)?;
        if self.submit {
            let job = executors::submit(&path)?;
            println!(
                "submitted job {job}: {} trials ({}); logs in {}",
                pending.len(),
                executors::ranges(&pending),
                dir.join("logs").display()
            );
            println!("then: {} sweep collect {}", program(), self.dir.display());
        } else {
            println!(
                "wrote {} ({} trials); submit with: sbatch {}",
                path.display(),
                pending.len(),
                path.display()
            );
        }
        Ok(())
    }
}

impl Parallel {
    pub fn run(self) -> Result<()> {
        let (dir, m) = open(&self.dir)?;
        let pending = m.pending(&dir)?;
        let exe = std::env::current_exe()?.display().to_string();
        print!("{}", executors::parallel_lines(&exe, &dir, &pending, self.trial_threads));
        eprintln!(
            "{} commands; for example: ... | parallel -j N   (hosts: --sshloginfile FILE)",
            pending.len()
        );
        Ok(())
    }
}

impl K8s {
    pub fn run(self) -> Result<()> {
        let (dir, m) = open(&self.dir)?;
        let o = executors::K8sOptions {
            image: self.image,
            claim: self.claim,
            mount: self.mount,
            parallelism: self.parallelism,
            cpus: self.cpus,
            memory: self.memory,
            program: self.program,
        };
        let path = dir.join("k8s-job.yaml");
        let job = executors::k8s_job(&dir, &m, &o)?;
        fkpnet::run::check_new_output(&path, self.force)?;
        fkpnet::run::write_text(&path, &job)?;
        println!("wrote {}; start it with: kubectl apply -f {}", path.display(), path.display());
        Ok(())
    }
}
