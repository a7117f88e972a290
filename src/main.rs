//! The `fkpnet` command line: parse arguments, call the library, print errors.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fkpnet::report::{self, diff::Metric, diff::Run, model::Ensemble, model::Model, model::Weights};
use fkpnet::{config, graph::Graph, train};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fkpnet", version, about = "Declarative, Caffe-style facial keypoint nets on libtorch")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// CPU threads libtorch uses (default: all cores). Give each of several trainings
    /// on one machine its share: oversubscribed cores run them several times slower.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    threads: Option<i32>,
}

/// Which trained model `test`, `predict` and `submit` use, and how.
#[derive(clap::Args)]
struct ModelArgs {
    /// Also load these runs (or exports) and average all the predictions: an ensemble.
    #[arg(long, value_name = "RUN")]
    ensemble: Vec<PathBuf>,
    /// best, final, or a .safetensors file.
    #[arg(long, default_value = "best")]
    weights: Weights,
    /// Change test-time augmentation, e.g. --set test.flip=true --set test.shift=2
    #[arg(long = "set", value_name = "test.KEY=VALUE")]
    sets: Vec<String>,
}

impl ModelArgs {
    fn load(&self, run: &std::path::Path) -> Result<Ensemble> {
        let mut model = Ensemble::load(run, &self.ensemble, &self.weights)?;
        model.set_test(&config::parse_sets(&self.sets)?)?;
        Ok(model)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a net's layers: output shapes, parameters, forward FLOPs, fillers.
    Summary {
        /// A net file (nets/*.yaml) or a solver file (its net is shown).
        config: PathBuf,
        /// Override a key, e.g. --set layers.fc1.num_output=256
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Train a net as a solver file says; results go to a new run directory.
    Train {
        /// A solver file (solvers/*.yaml) or a run's config.yaml.
        solver: PathBuf,
        /// Override any solver, data or net key, e.g. --set base_lr=3e-4 --set data.train=synthetic
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run name (default: from the solver and net); an existing run is never overwritten.
        #[arg(long)]
        name: Option<String>,
        /// Where run directories go.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Only print errors and the final line.
        #[arg(long, short)]
        quiet: bool,
        /// Resume from a snapshot's .solverstate (as `caffe train --snapshot`).
        #[arg(long, value_name = "FILE.solverstate", conflicts_with = "weights")]
        snapshot: Option<PathBuf>,
        /// Initialise from trained weights, matched by tensor name (as `caffe train --weights`).
        #[arg(long, value_name = "FILE.safetensors")]
        weights: Option<PathBuf>,
        /// On a non-finite loss: stop (default) or skip the batch (same as --set on_nan=...).
        #[arg(long, value_parser = ["stop", "skip"])]
        on_nan: Option<String>,
        /// With --snapshot: resume even though this solver's resolved config differs from
        /// the snapshot's run (by default that is refused, with what differs).
        #[arg(long, requires = "snapshot")]
        allow_config_change: bool,
    },
    /// Train every solver with every combination of the swept values, one after
    /// another, then compare them as `diff` does and score their ensemble:
    /// `fkpnet sweep S --set base_lr=1e-3,3e-4 --set layers.fc1.num_output=256,500`,
    /// `fkpnet sweep A.yaml B.yaml`.
    Sweep {
        /// One or more solver files, each trained with every combination of the values.
        #[arg(required = true)]
        solvers: Vec<PathBuf>,
        /// KEY=V1,V2,...: a swept key (values split at commas outside [] and {}); a single
        /// value is a fixed override for every run.
        #[arg(long = "set", value_name = "KEY=V1,V2")]
        sets: Vec<String>,
        /// Run names are PREFIX-key=value-...; default: the solver file's name (with
        /// several solvers, PREFIX-SOLVER-key=value-...).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        #[arg(long, short)]
        quiet: bool,
        /// Write the overlaid curves here (.png, or .svg).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        #[arg(long, default_value = "val_rmse_px")]
        metric: Metric,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
    },
    /// Print the fully resolved solver config (overrides applied, net inline).
    Config {
        solver: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List the layer types a net may use.
    Layers,
    /// RMSE in pixels per keypoint and overall, and the loss in both conventions.
    Test {
        /// A run dir (or an export).
        run: PathBuf,
        /// A labelled Kaggle CSV (default: the run's val split).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Keypoints in each image's own pixels, for image files, folders of them
    /// (recursively) or the rows of Kaggle CSVs; one row per face.
    Predict {
        /// A run dir or an export.
        run: PathBuf,
        /// Image files (any size or colour), folders of images, or Kaggle CSVs.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Also write each image with its keypoints drawn into this directory.
        #[arg(long)]
        draw: Option<PathBuf>,
        /// csv (the dataset's layout: image,x0,y0,... or Kaggle's columns) or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Write the predictions to this file instead of standard output.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// The face's box in every image, x,y,w,h in pixels (cut out as the model's crop).
        #[arg(long = "box", value_name = "X,Y,W,H", conflicts_with = "boxes")]
        face_box: Option<String>,
        /// A CSV of face boxes, image,x,y,w,h per face (several rows: several faces).
        #[arg(long, value_name = "CSV")]
        boxes: Option<PathBuf>,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Kaggle's submission file (RowId,Location) for test.csv and IdLookupTable.csv.
    Submit {
        run: PathBuf,
        test_csv: PathBuf,
        lookup_csv: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Write the faces of a Kaggle CSV as PNG files (optionally with labels drawn).
    Extract {
        /// A Kaggle CSV, or `synthetic` for the built-in generator's faces.
        csv: PathBuf,
        dir: PathBuf,
        #[arg(long)]
        draw: bool,
        #[arg(long)]
        limit: Option<usize>,
        /// Augment the faces as this solver's `data.augment` does (to see what the net sees).
        #[arg(long, value_name = "SOLVER")]
        augment: Option<PathBuf>,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
    },
    /// A frozen model: model.safetensors, net.yaml and a README with PyTorch code.
    Export {
        run: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[arg(long, default_value = "best")]
        weights: Weights,
    },
    /// Compare runs: config differences, a side-by-side table and an overlay plot.
    Diff {
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Write the curves here (.png, or .svg).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// val_rmse_px, val_loss, train_loss, train_rmse_px, or the field's val_nme, val_fr, val_auc.
        #[arg(long, default_value = "val_rmse_px")]
        metric: Metric,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
    },
    /// Plot the curves of runs (.png, or .svg).
    Plot {
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[arg(long, default_value = "val_rmse_px")]
        metric: Metric,
        /// Overwrite output files that exist (by default an existing file is refused).
        #[arg(long)]
        force: bool,
    },
    /// Convert Caffe prototxt (a net, optionally its solver) into fkpnet YAML.
    ImportCaffe {
        net: PathBuf,
        solver: Option<PathBuf>,
        /// Directory for the YAML files (created; existing files are never overwritten).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Input shape CxHxW for data layers that carry none (HDF5Data, Data).
        #[arg(long, default_value = "1x96x96")]
        input: String,
        /// data.train of the converted solver: Kaggle's training.csv or `synthetic`.
        #[arg(long, default_value = "synthetic")]
        data: String,
        /// Batch size when no data layer gives one.
        #[arg(long, default_value_t = 64)]
        batch: i64,
    },
    /// Training and inference throughput (images/s), GFLOP/s and peak memory.
    Bench {
        /// A net file or a solver file.
        config: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch: i64,
        #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16"])]
        precision: String,
        /// auto (the default for the device), nchw or channels_last.
        #[arg(long, default_value = "auto", value_parser = ["auto", "nchw", "channels_last"])]
        layout: String,
        /// Timed training steps after warm-up (inference runs twice as many).
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Seconds to load a Kaggle CSV (parsing it, and from fkpnet's binary cache), or a
    /// solver file's image dataset (decoding and cutting out every face, and from the cache).
    BenchData {
        csv: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Time forward and backward per layer, like `caffe time`.
    Time {
        /// A net file or a solver file.
        config: PathBuf,
        /// Timed passes after warm-up.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Images per pass.
        #[arg(long, default_value_t = 64)]
        batch: i64,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16"])]
        precision: String,
        #[arg(long, default_value = "auto", value_parser = ["auto", "nchw", "channels_last"])]
        layout: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

fn is_solver(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).ok().and_then(|v| v.get("net").cloned()).is_some()
}

/// A net file, or a solver file's net, compiled.
fn load_graph(path: &std::path::Path, sets: &[String]) -> Result<Graph> {
    let sets = config::parse_sets(sets)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if is_solver(&text) {
        let r = config::load_solver(path, &sets)?;
        let spec = fkpnet::data::spec(&r.solver.data, &r.net)?;
        return Graph::compile(&r.net, &r.net_source, spec.targets() as i64);
    }
    let (net, src) = config::load_net(path, &sets)?;
    Graph::compile(&net, &src, None)
}

/// How the user started fkpnet, for commands it prints to be run as they are: the
/// `./fkpnet` wrapper names itself in FKPNET_PROGRAM (it execs the release binary).
fn program() -> String {
    std::env::var("FKPNET_PROGRAM")
        .ok()
        .or_else(|| std::env::args().next())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "fkpnet".into())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    match cli.cmd {
        Cmd::Summary { config: path, sets } => {
            print!("{}", load_graph(&path, &sets)?.summary());
        }
        Cmd::Time { config: path, iterations, batch, device, precision, layout, sets } => {
            if batch < 1 || iterations < 1 {
                anyhow::bail!("--batch and --iterations must be >= 1");
            }
            let g = load_graph(&path, &sets)?;
            let device = train::parse_device(&device)?;
            let opts = train::build_options(
                &g,
                device,
                serde_yaml::from_str(&precision)?,
                serde_yaml::from_str(&layout)?,
            );
            print!("{}", fkpnet::timing::time_net(&g, batch, iterations, device, opts).table());
        }
        Cmd::Bench { config: path, batch, precision, layout, iterations, device, json } => {
            if batch < 1 || iterations < 1 {
                anyhow::bail!("--batch and --iterations must be >= 1");
            }
            let g = load_graph(&path, &[])?;
            let device = train::parse_device(&device)?;
            let precision = serde_yaml::from_str(&precision)?;
            let layout = serde_yaml::from_str(&layout)?;
            let build = train::build_options(&g, device, precision, layout);
            let r = fkpnet::bench::run(&g, &fkpnet::bench::Options { batch, iterations, device, build });
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.text());
            }
        }
        Cmd::Train {
            solver,
            mut sets,
            name,
            runs_dir,
            quiet,
            snapshot,
            weights,
            on_nan,
            allow_config_change,
        } => {
            if let Some(v) = on_nan {
                sets.push(format!("on_nan={v}"));
            }
            let sets = config::parse_sets(&sets)?;
            let r = config::load_solver(&solver, &sets)?;
            let opts = train::Options {
                runs_dir: runs_dir.clone(),
                name,
                quiet,
                resume: snapshot,
                weights,
                allow_config_change,
            };
            let out = train::train(&r, &opts)?;
            println!("{}", out.run_dir.display());
            if let Some(st) = &out.interrupted {
                eprintln!(
                    "Resume with:\n  {}",
                    train::resume_command(&program(), &out.run_dir, st, &runs_dir, cli.threads)
                );
                std::process::exit(130);
            }
        }
        Cmd::Config { solver, sets } => {
            let sets = config::parse_sets(&sets)?;
            let r = config::load_solver(&solver, &sets)?;
            let spec = fkpnet::data::spec(&r.solver.data, &r.net)?;
            let g = Graph::compile(&r.net, &r.net_source, spec.targets() as i64)?;
            let mut s = r.solver.clone();
            s.net = g.resolved();
            print!("{}", serde_yaml::to_string(&s)?);
        }
        Cmd::ImportCaffe { net, solver, out, input, data, batch } => {
            let dims: Vec<i64> = input.split('x').filter_map(|d| d.parse().ok()).collect();
            let input: [i64; 3] = dims
                .try_into()
                .ok()
                .filter(|d: &[i64; 3]| d.iter().all(|v| *v > 0))
                .ok_or_else(|| anyhow::anyhow!("--input {input}: expected CxHxW, e.g. 1x96x96"))?;
            let opts = fkpnet::caffe::Options { input, data, batch };
            let imported = fkpnet::caffe::import(&net, solver.as_deref(), &opts)?;
            std::fs::create_dir_all(&out)?;
            let mut files = vec![(format!("{}.yaml", imported.net_name), imported.net_yaml.clone())];
            if let (Some(y), Some(s)) = (&imported.solver_yaml, &solver) {
                let stem = s.file_stem().and_then(|s| s.to_str()).unwrap_or("solver");
                files.push((format!("{stem}.yaml"), y.clone()));
            }
            for (name, _) in &files {
                if out.join(name).exists() {
                    anyhow::bail!(
                        "{} exists; choose another -o (nothing is overwritten)",
                        out.join(name).display()
                    );
                }
            }
            for n in &imported.notes {
                eprintln!("note: {n}");
            }
            for (name, text) in files {
                fkpnet::run::write_text(&out.join(&name), &text)?;
                println!("{}", out.join(name).display());
            }
        }
        Cmd::Test { run, data, model } => {
            let model = model.load(&run)?;
            print!("{}", report::test::run(&model, data.as_deref())?.table());
        }
        Cmd::Predict { run, inputs, draw, format, out, face_box, boxes, force, model } => {
            if let Some(o) = &out {
                fkpnet::run::check_new_output(o, force)?;
            }
            let boxes = report::predict::Boxes {
                all: face_box.as_deref().map(report::predict::Boxes::parse_one).transpose()?,
                per_image: boxes
                    .as_deref()
                    .map(report::predict::Boxes::read)
                    .transpose()?
                    .unwrap_or_default(),
            };
            let model = model.load(&run)?;
            let preds = report::predict::predict(&model, &inputs, &boxes)?;
            let text = match format.as_str() {
                "json" => report::predict::to_json(&preds, &model.spec().keypoints),
                _ => report::predict::to_csv(&preds, model.spec()),
            };
            match &out {
                Some(o) => {
                    fkpnet::run::write_text(o, &text)?;
                    eprintln!("wrote {} face(s) to {}", preds.len(), o.display());
                }
                None => print!("{text}"),
            }
            if let Some(dir) = draw {
                let files = report::predict::draw_all(&preds, &model.spec().keypoints, &dir, force)?;
                eprintln!("drew {} image(s) into {}", files.len(), dir.display());
            }
        }
        Cmd::Submit { run, test_csv, lookup_csv, out, force, model } => {
            fkpnet::run::check_new_output(&out, force)?;
            let model = model.load(&run)?;
            let text = report::submit::submit(&model, &test_csv, &lookup_csv)?;
            fkpnet::run::write_text(&out, &text)?;
            eprintln!("wrote {} rows to {}", text.lines().count() - 1, out.display());
        }
        Cmd::Extract { csv, dir, draw, limit, augment, force } => {
            let aug = match augment {
                Some(s) => Some(config::load_solver(&s, &[])?.solver.data.augment),
                None => None,
            };
            let n = report::extract::extract(&csv, &dir, draw, limit, aug.as_ref(), force)?;
            eprintln!("wrote {n} image(s) into {}", dir.display());
        }
        Cmd::Export { run, out, weights } => {
            let model = Model::load(&run, &weights)?;
            report::export::export(&model, &out)?;
            println!("{}", out.display());
        }
        Cmd::Diff { runs, out, metric, force } => {
            if let Some(o) = &out {
                fkpnet::run::check_new_output(o, force)?;
            }
            let runs = runs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
            compare(&runs, metric, out.as_deref())?;
        }
        Cmd::Sweep { solvers, sets, name, runs_dir, quiet, out, metric, force } => {
            if let Some(o) = &out {
                fkpnet::run::check_new_output(o, force)?;
            }
            let plan = fkpnet::sweep::plan(&solvers, &sets, name.as_deref(), &runs_dir)?;
            eprintln!("sweep: {} runs, one after another:", plan.runs.len());
            for (n, _) in &plan.runs {
                eprintln!("  {}", runs_dir.join(n).display());
            }
            let started = std::time::Instant::now();
            let (dirs, interrupted) = fkpnet::sweep::run(&plan, &runs_dir, quiet)?;
            println!("trained {} runs in {:.1} min", dirs.len(), started.elapsed().as_secs_f64() / 60.0);
            let runs = dirs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
            if runs.len() > 1 {
                compare(&runs, metric, out.as_deref())?;
                ensemble_score(&dirs);
            }
            if let (Some(snap), Some(last)) = (interrupted, dirs.last()) {
                eprintln!(
                    "sweep interrupted after {} of {} runs; resume the last with:\n  {}",
                    dirs.len(),
                    plan.runs.len(),
                    train::resume_command(&program(), last, &snap, &runs_dir, cli.threads)
                );
                std::process::exit(130);
            }
        }
        Cmd::Plot { runs, out, metric, force } => {
            fkpnet::run::check_new_output(&out, force)?;
            let runs = runs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
            let (metric, note) = report::diff::effective_metric(&runs, metric);
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            report::plot::plot(&runs, metric, &out)?;
            println!("{}", out.display());
        }
        Cmd::BenchData { csv, json } => {
            let r = fkpnet::bench::data(&csv)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{} faces: parse {:.3} s, from cache {:.3} s", r.faces, r.parse_s, r.cache_s);
            }
        }
        Cmd::Layers => {
            let width = fkpnet::layers::KINDS.iter().map(|k| k.name.len()).max().unwrap_or(0);
            for k in fkpnet::layers::KINDS {
                println!("{:<width$}  {}  keys: {}", k.name, k.about, (k.fields)().join(", "));
            }
        }
    }
    Ok(())
}

/// jemalloc as the whole process's malloc (libtorch's too: the executable's unprefixed
/// malloc/free come first in symbol lookup). libtorch allocates every activation and
/// gradient afresh each step; glibc serves blocks over 32 MiB (one 16x96x96 map of a
/// batch of 64 is 38 MB) with mmap and unmaps them on free, so every step faulted in
/// fresh zeroed pages: 1.3-1.8x slower training on this 2-core CPU, and glibc with mmap
/// off fragments to a higher peak than PyTorch's. jemalloc, told to keep freed pages
/// (`.cargo/config.toml`), reuses them and stays below PyTorch's peak (README "Speed").
#[cfg(target_os = "linux")]
extern crate tikv_jemalloc_sys;

fn main() {
    // Rust ignores SIGPIPE, which turns `fkpnet predict ... | head` into a panic; a
    // command-line tool should just stop, as cat does.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The val RMSE of all the runs' best weights averaged (`fkpnet test A --ensemble B
/// ...`), when they share a val split; a note saying why not otherwise.
fn ensemble_score(dirs: &[PathBuf]) {
    let score =
        Ensemble::load(&dirs[0], &dirs[1..], &Weights::Best).and_then(|m| report::test::run(&m, None));
    match score {
        Ok(r) => println!(
            "ensemble of all {} runs: val RMSE {:.3} px (fkpnet test {} --ensemble ... averages their predictions)",
            dirs.len(),
            r.rmse_px,
            dirs[0].display()
        ),
        Err(e) => println!("no ensemble score: {e:#}"),
    }
}

/// `fkpnet diff`'s output: each run's config against the first, the table, the plot.
fn compare(runs: &[Run], metric: Metric, out: Option<&std::path::Path>) -> Result<()> {
    let (metric, note) = report::diff::effective_metric(runs, metric);
    for other in &runs[1..] {
        let lines = report::diff::config_diff(&runs[0].config, &other.config);
        println!("config {} -> {}:{}", runs[0].name, other.name, if lines.is_empty() { " same" } else { "" });
        for l in lines {
            println!("  {l}");
        }
    }
    if let Some(n) = note {
        println!("note: {n}");
    }
    print!("{}", report::diff::table(runs, metric));
    if let Some(out) = out {
        report::plot::plot(runs, metric, out)?;
        println!("plot: {}", out.display());
    }
    Ok(())
}
