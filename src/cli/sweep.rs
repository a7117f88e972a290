//! `fkpnet sweep`: plan a sweep directory, run its trials (here, or through Slurm,
//! GNU parallel or Kubernetes), collect the comparison. `fkpnet sweep S --set ...`
//! does all three here.

use super::sweep_executors as executors_cli;
use super::{check_out, program, Context, CurvesOut};
use anyhow::{bail, Result};
use fkpnet::sweep::{self, executors, manifest::Manifest, PlanArgs, StopRule, TrialOutcome};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Sweep {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    space: SpaceArgs,
    /// Where run directories go (the sweep's own files: RUNS_DIR/NAME.sweep).
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    #[command(flatten)]
    local: LocalArgs,
    #[command(flatten)]
    report: CurvesOut,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Write a sweep directory: the manifest of trials (each with its resolved config
    /// and a stable id) that any executor runs; nothing trains.
    Plan(Plan),
    /// Run trials of a sweep dir: one (`--trial I`, or the index in SLURM_ARRAY_TASK_ID
    /// or JOB_COMPLETION_INDEX), or every trial without a result, then collect.
    Run(RunTrials),
    /// Compare the trials with results (config diff, curves, best, ensemble) and write
    /// the best trial's config to DIR/best.yaml.
    Collect(Collect),
    /// Write DIR/slurm.sbatch, a Slurm job array over the trials without a result, and
    /// with --submit hand it to sbatch.
    Slurm(executors_cli::Slurm),
    /// Print one command per trial without a result, for GNU parallel:
    /// `fkpnet sweep parallel DIR | parallel -j 4` (`--sshloginfile` for hosts).
    Parallel(executors_cli::Parallel),
    /// Write DIR/k8s-job.yaml, a Kubernetes indexed Job (index i runs trial i).
    K8s(executors_cli::K8s),
}

#[derive(clap::Args)]
struct SpaceArgs {
    /// One or more solver files, each trained with every combination of the values.
    #[arg(required = true)]
    solvers: Vec<PathBuf>,
    /// KEY=V1,V2,...: a swept key (values split at commas outside [], {} and ()); a
    /// single value is a fixed override for every trial; a distribution
    /// (uniform(a,b), loguniform(a,b), int(a,b), choice(v1,v2,...)) is sampled with
    /// --trials.
    #[arg(long = "set", value_name = "KEY=V1,V2")]
    sets: Vec<String>,
    /// Run names are PREFIX-key=value-...; default: the solver file's name (with
    /// several solvers, PREFIX-SOLVER-key=value-...).
    #[arg(long)]
    name: Option<String>,
    /// Random search: this many samples of the distributions (per grid point).
    #[arg(long, value_name = "N")]
    trials: Option<usize>,
    /// The random search's seed: the same seed draws the same trials.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop losing trials at their val tests: asha (successive halving) or median.
    #[arg(long, value_enum)]
    stop: Option<StopKind>,
    /// The first iteration a trial may be stopped at (ASHA's first rung); default: the
    /// trials' test_interval.
    #[arg(long, value_name = "ITER")]
    grace: Option<i64>,
    /// ASHA's reduction factor: at each rung the best 1/R go on.
    #[arg(long, default_value_t = 3.0, value_name = "R")]
    reduction: f64,
    /// The median rule compares with at least this many other trials.
    #[arg(long, default_value_t = 3)]
    min_trials: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StopKind {
    Asha,
    Median,
}

#[derive(clap::Args)]
struct LocalArgs {
    /// Trials at once, each a process with its share of the cores (--threads each:
    /// the global --threads, or cores / jobs).
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    /// Only print errors and each trial's final line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct Plan {
    #[command(flatten)]
    space: SpaceArgs,
    /// The sweep directory to write (default: sweeps/NAME); its runs go to DIR/runs.
    #[arg(long = "dir", short = 'd')]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunTrials {
    /// A sweep directory (`fkpnet sweep plan` writes one).
    dir: PathBuf,
    /// Run only this trial (0-based).
    #[arg(long, value_name = "I")]
    trial: Option<usize>,
    #[command(flatten)]
    local: LocalArgs,
    #[command(flatten)]
    report: CurvesOut,
}

#[derive(clap::Args)]
struct Collect {
    /// A sweep directory.
    dir: PathBuf,
    #[command(flatten)]
    report: CurvesOut,
}

impl Sweep {
    pub fn run(self, ctx: &Context) -> Result<()> {
        match self.action {
            Some(Action::Plan(a)) => a.run(),
            Some(Action::Run(a)) => a.run(ctx),
            Some(Action::Collect(a)) => a.run(),
            Some(Action::Slurm(a)) => a.run(),
            Some(Action::Parallel(a)) => a.run(),
            Some(Action::K8s(a)) => a.run(),
            // plan + run here + collect, the runs beside the others in --runs-dir.
            None => {
                check_out(self.report.out.as_deref(), self.report.force)?;
                let p = self.space.plan("..")?;
                let dir = self.runs_dir.join(format!("{}.sweep", self.space.prefix()));
                let again = sweep::open(&dir, &p)?;
                let m = Manifest::read(&dir)?;
                let pending = m.pending(&dir)?;
                let how = if self.local.jobs > 1 {
                    format!("{} at once", self.local.jobs)
                } else {
                    "one after another".into()
                };
                if again {
                    eprintln!(
                        "sweep: {} trials, {} done, {} to run, {how} (sweep dir {}):",
                        m.trials.len(),
                        m.trials.len() - pending.len(),
                        pending.len(),
                        dir.display()
                    );
                } else {
                    eprintln!("sweep: {} runs, {how} (sweep dir {}):", m.trials.len(), dir.display());
                }
                for i in &pending {
                    eprintln!("  {}", self.runs_dir.join(&m.trials[*i].name).display());
                }
                run_all(&dir, &m, &pending, &self.local, &self.report, ctx)
            }
        }
    }
}

impl SpaceArgs {
    fn prefix(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self
                .solvers
                .iter()
                .map(|s| s.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep").to_string())
                .collect::<Vec<_>>()
                .join("+"),
        }
    }

    fn plan(&self, runs_dir: &str) -> Result<sweep::Planned> {
        let stop = self.stop.map(|k| match k {
            StopKind::Asha => {
                StopRule::Asha { grace: self.grace.unwrap_or(0), reduction: self.reduction, max_iter: 0 }
            }
            StopKind::Median => {
                StopRule::Median { grace: self.grace.unwrap_or(0), min_trials: self.min_trials }
            }
        });
        if self.stop.is_none() && self.grace.is_some() {
            bail!("--grace is the first iteration a stopping rule may stop a trial at: give --stop asha or --stop median");
        }
        let args = PlanArgs {
            solvers: &self.solvers,
            sets: &self.sets,
            name: self.name.as_deref(),
            samples: self.trials,
            seed: self.seed,
            stop,
            grace_given: self.grace.is_some(),
        };
        sweep::plan(&args, runs_dir)
    }
}

impl Plan {
    fn run(self) -> Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("sweeps").join(self.space.prefix()));
        let p = self.space.plan("runs")?;
        let again = sweep::open(&dir, &p)?;
        let m = Manifest::read(&dir)?;
        let pending = m.pending(&dir)?;
        if again {
            eprintln!(
                "{} holds this sweep already: {} of {} trials have results",
                dir.display(),
                m.trials.len() - pending.len(),
                m.trials.len()
            );
        }
        println!("planned {} trials in {}", m.trials.len(), dir.display());
        for t in &m.trials {
            println!(
                "  {:>3}  {}  {}  {}",
                t.index,
                t.id,
                t.name,
                if t.sets.is_empty() { String::new() } else { t.sets.join(" ") }
            );
        }
        if let Some(s) = &m.space.stop {
            println!("stopping rule: {}", s.describe());
        }
        let d = executors::quote(&dir.display().to_string());
        let prog = program();
        println!("run them here:       {prog} sweep run {d} [--jobs N]");
        println!("or on Slurm:         {prog} sweep slurm {d} --submit");
        println!("or with GNU parallel: {prog} sweep parallel {d} | parallel -j N");
        println!("then compare:        {prog} sweep collect {d}");
        Ok(())
    }
}

/// The trial index an executor gives through the environment.
fn index_from_env() -> Result<Option<(usize, &'static str)>> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            let i =
                v.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("{var}={v:?}: not a trial index"))?;
            return Ok(Some((i, var)));
        }
    }
    Ok(None)
}

impl RunTrials {
    fn run(self, ctx: &Context) -> Result<()> {
        let m = Manifest::read(&self.dir)?;
        let one = match self.trial {
            Some(i) => Some(i),
            None => index_from_env()?.map(|(i, var)| {
                eprintln!("trial {i} from {var}");
                i
            }),
        };
        let Some(i) = one else {
            check_out(self.report.out.as_deref(), self.report.force)?;
            let pending = m.pending(&self.dir)?;
            eprintln!("sweep {}: {} of {} trials to run", self.dir.display(), pending.len(), m.trials.len());
            return run_all(&self.dir, &m, &pending, &self.local, &self.report, ctx);
        };
        match sweep::run_trial(&self.dir, &m, i, self.local.quiet)? {
            TrialOutcome::Done(r) => println!("trial {i} ({}): {}", r.name, sweep::describe(&r)),
            TrialOutcome::Skipped(r) => {
                println!("trial {i} ({}): has a result already, {}", r.name, sweep::describe(&r))
            }
            TrialOutcome::Busy => {
                bail!(
                    "trial {i} is running in another process (its lock {} is held)",
                    m.trial(i)?.lock_path(&self.dir).display()
                )
            }
            TrialOutcome::Interrupted { snapshot, .. } => {
                eprintln!(
                    "trial {i} interrupted; snapshot {}. Running the trial again resumes it.",
                    snapshot.display()
                );
                std::process::exit(130);
            }
        }
        Ok(())
    }
}

/// Every pending trial here (in this process, or `--jobs` processes), then collect.
fn run_all(
    dir: &Path,
    m: &Manifest,
    pending: &[usize],
    local: &LocalArgs,
    report: &CurvesOut,
    ctx: &Context,
) -> Result<()> {
    let started = std::time::Instant::now();
    let resume = format!(
        "{} sweep run {}{}",
        program(),
        executors::quote(&dir.display().to_string()),
        if local.jobs > 1 { format!(" --jobs {}", local.jobs) } else { String::new() }
    );
    let mut trained = 0;
    if local.jobs > 1 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = ctx.threads.map_or((cores / local.jobs).max(1) as u32, |t| t as u32);
        let exe = std::env::current_exe()?.display().to_string();
        let ex = executors::Local { program: exe, jobs: local.jobs, threads };
        let out = ex.run(dir, m, pending, &|s| eprintln!("{s}"))?;
        if out.interrupted {
            eprintln!("sweep interrupted; the trials in progress snapshotted. Resume with:\n  {resume}");
            std::process::exit(130);
        }
        if !out.failed.is_empty() {
            let list: Vec<String> =
                out.failed.iter().map(|(i, log)| format!("trial {i} ({})", log.display())).collect();
            bail!("{} trials failed: {}", out.failed.len(), list.join(", "));
        }
        trained = pending.len();
    } else {
        for (k, &i) in pending.iter().enumerate() {
            eprintln!("sweep: run {}/{}: {}", k + 1, pending.len(), m.trials[i].name);
            match sweep::run_trial(dir, m, i, local.quiet)? {
                TrialOutcome::Done(r) => {
                    trained += 1;
                    if r.status == sweep::manifest::Status::Stopped {
                        eprintln!("sweep: {} {}", r.name, sweep::describe(&r));
                    }
                }
                TrialOutcome::Skipped(_) => {}
                TrialOutcome::Busy => {
                    eprintln!("sweep: trial {i} is running in another process; skipped here")
                }
                TrialOutcome::Interrupted { .. } => {
                    eprintln!(
                        "sweep interrupted after {} of {} runs; the run in progress snapshotted. Resume with:\n  {resume}",
                        k,
                        pending.len()
                    );
                    std::process::exit(130);
                }
            }
        }
    }
    println!("trained {trained} runs in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    let c = sweep::collect(dir, m, report.metric, report.out.as_deref())?;
    print!("{}", c.text);
    Ok(())
}

impl Collect {
    fn run(self) -> Result<()> {
        check_out(self.report.out.as_deref(), self.report.force)?;
        let m = Manifest::read(&self.dir)?;
        let c = sweep::collect(&self.dir, &m, self.report.metric, self.report.out.as_deref())?;
        print!("{}", c.text);
        let left = m.pending(&self.dir)?;
        if !left.is_empty() {
            eprintln!(
                "{} of {} trials have no result yet: {}",
                left.len(),
                m.trials.len(),
                executors::ranges(&left)
            );
        }
        Ok(())
    }
}
