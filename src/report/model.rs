//! A trained model from a run dir (config.yaml + weights), an export dir
//! (net.yaml + model.safetensors), or a solver or net file with `--weights` (Caffe's
//! `caffe test -model -weights`: an imported net with its .caffemodel), ready to predict.

use crate::config::solver::TestConfig;
use crate::config::{self, Override, Resolved};
use crate::data::framing::Fitted;
use crate::data::{Faces, Spec};
use crate::graph::{Graph, Net};
use crate::solver::state::load_weights;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// Which weights of a run: `best` (lowest val loss), `final`, or a file.
#[derive(Debug, Clone)]
pub enum Weights {
    Best,
    Final,
    File(PathBuf),
}

impl std::str::FromStr for Weights {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "best" => Weights::Best,
            "final" => Weights::Final,
            f => Weights::File(f.into()),
        })
    }
}

pub struct Model {
    pub graph: Graph,
    pub net: Net,
    /// The loaded tensors, by name (what an export writes).
    pub params: Vec<crate::graph::Param>,
    /// The run's resolved config (None for an export or a net file).
    pub run: Option<Resolved>,
    /// The run dir or export it was loaded from.
    pub dir: PathBuf,
    pub weights: PathBuf,
    /// Test-time augmentation: the run's `test:` (off for an export), or as `--set` says.
    pub test: TestConfig,
    /// The faces it takes and the keypoints it predicts.
    pub spec: Spec,
    _vs: nn::VarStore,
}

impl Model {
    pub fn load(dir: &Path, weights: &Weights) -> Result<Model> {
        let d = dir.display();
        let (run, net, src) = if dir.is_file() && !matches!(weights, Weights::File(_)) {
            bail!(
                "{d} is a config file, which holds no trained weights: give them with --weights \
                 (a .safetensors or Caffe's .caffemodel), or name a run dir or an export"
            );
        } else if dir.is_file() && is_net_file(dir)? {
            let (n, s) = config::load_net(dir, &[])?;
            (None, n, s)
        } else if dir.is_file() {
            let r = config::load_solver(dir, &[])?;
            (Some(r.clone()), r.net, r.net_source)
        } else if dir.join("config.yaml").is_file() {
            let r = config::load_solver(&dir.join("config.yaml"), &[])?;
            (Some(r.clone()), r.net, r.net_source)
        } else if dir.join("net.yaml").is_file() {
            let (n, s) = config::load_net(&dir.join("net.yaml"), &[])?;
            (None, n, s)
        } else if !dir.exists() {
            bail!("{d} does not exist (expected a run dir under runs/ or an export)");
        } else {
            bail!("{d} is neither a run dir (config.yaml) nor an export (net.yaml + model.safetensors)");
        };
        let file = match (weights, run.is_some()) {
            (Weights::File(f), _) => f.clone(),
            (_, false) => dir.join("model.safetensors"),
            (Weights::Best, true) => dir.join("best.safetensors"),
            (Weights::Final, true) => dir.join("weights.safetensors"),
        };
        if !file.is_file() {
            let hint = match weights {
                Weights::Best => " (the run had no val split or no test yet; try --weights final)",
                _ => "",
            };
            bail!("{}: no such weights file{hint}", file.display());
        }
        let spec = match &run {
            Some(r) => crate::data::spec(&r.solver.data, &net)?,
            None => export_spec(dir, &net)?,
        };
        let graph = Graph::compile(&net, &src, spec.targets() as i64)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let (net, params) = graph.build(&vs.root(), Default::default());
        load_weights(&file, &params, true)?;
        let test = run.as_ref().map(|r| r.solver.test.clone()).unwrap_or_default();
        Ok(Model { graph, net, params, run, dir: dir.to_path_buf(), weights: file, test, spec, _vs: vs })
    }

    /// Keypoints in pixels of the net's input frame, 2K per face in the set's order.
    pub fn predict_px(&self, faces: &Faces) -> Vec<f32> {
        let _guard = tch::no_grad_guard();
        let (x, _) = faces.to_tensors(Device::Cpu);
        let n = faces.len() as i64;
        let half = self.spec.half();
        let mut out = Vec::with_capacity(faces.len() * self.spec.targets());
        for start in (0..n).step_by(256) {
            let len = 256.min(n - start);
            let y = crate::infer::predict(&self.net, &x.narrow(0, start, len), &self.test, &self.spec) * half
                + half;
            out.extend(Vec::<f32>::try_from(y.flatten(0, -1)).expect("float predictions"));
        }
        out
    }
}

impl Model {
    /// How this model's training faces sit in the face detector's boxes: its run dir's
    /// or export's `framing.yaml`, or fitted now on the run's training data and kept in
    /// the run dir (a second or two, once).
    pub fn framing(&self) -> Result<Fitted> {
        if let Some(f) = Fitted::load(&self.dir)? {
            return Ok(f);
        }
        let Some(run) = &self.run else {
            bail!(
                "{} has no {} (an export of a run whose training data fkpnet could not read, or made \
                 before fkpnet found faces in photos), so faces the detector finds cannot be cut out as \
                 the model was trained: give the faces' boxes (--box x,y,w,h or --boxes CSV), or --whole \
                 for images that are already cut-out faces",
                self.dir.display(),
                Fitted::FILE
            );
        };
        let data = &run.solver.data;
        eprintln!(
            "fitting how this model's faces sit in the face detector's boxes, on up to {} faces of {} ...",
            crate::data::framing::SAMPLE,
            data.train
        );
        let fitted = crate::data::framing::fit(data, &self.spec)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", self.dir.display()))?;
        if self.dir.join("config.yaml").is_file() {
            let f = self.dir.join(Fitted::FILE);
            match crate::run::write_text(&f, &fitted.to_yaml()) {
                Ok(()) => eprintln!("framing: {}; kept in {}", fitted.describe(), f.display()),
                Err(e) => eprintln!("framing: {} (not kept: {e:#})", fitted.describe()),
            }
        } else {
            eprintln!("framing: {}", fitted.describe());
        }
        Ok(fitted)
    }
}

/// Whether a config file is a net (`layers:`) rather than a solver.
fn is_net_file(path: &Path) -> Result<bool> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
    Ok(v.get("layers").is_some())
}

/// An export's faces: its `data.yaml` (the training run's data section without its
/// files: format, keypoints, crop), or Kaggle's for exports made before it existed.
fn export_spec(dir: &Path, net: &crate::config::NetConfig) -> Result<Spec> {
    let f = dir.join("data.yaml");
    if !f.is_file() {
        return crate::data::spec(&crate::config::DataConfig::of("export".into()), net);
    }
    let text = std::fs::read_to_string(&f)?;
    let data: crate::config::DataConfig =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
    crate::data::spec(&data, net).map_err(|e| anyhow::anyhow!("{}: {e:#}", f.display()))
}

/// One model or several whose predictions are averaged (an ensemble: `fkpnet test A
/// --ensemble B`). Each member applies its own test-time augmentation first.
pub struct Ensemble {
    pub models: Vec<Model>,
}

impl Ensemble {
    pub fn load(first: &Path, more: &[PathBuf], weights: &Weights) -> Result<Ensemble> {
        if !more.is_empty() {
            if let Weights::File(f) = weights {
                bail!(
                    "--weights {} names one file, but an ensemble loads each run's own weights: \
                     use --weights best or --weights final",
                    f.display()
                );
            }
        }
        let models = std::iter::once(first)
            .chain(more.iter().map(PathBuf::as_path))
            .map(|d| Model::load(d, weights))
            .collect::<Result<Vec<_>>>()?;
        // Their predictions are averaged face by face: they must take the same faces.
        for m in &models[1..] {
            let (a, b) = (&models[0].spec, &m.spec);
            if a.keypoints != b.keypoints || a.input() != b.input() || a.crop != b.crop {
                bail!(
                    "{} and {} take different faces or keypoints ({} keypoints {:?} / {} keypoints {:?}, crop {:?} / {:?}): an ensemble averages models of one keypoint set and input",
                    models[0].dir.display(),
                    m.dir.display(),
                    a.keypoints.len(),
                    a.input(),
                    b.keypoints.len(),
                    b.input(),
                    a.crop,
                    b.crop
                );
            }
        }
        Ok(Ensemble { models })
    }

    /// The faces all members take and the keypoints they predict.
    pub fn spec(&self) -> &Spec {
        &self.models[0].spec
    }

    /// Apply `--set test.KEY=VALUE` to every member's test-time augmentation.
    pub fn set_test(&mut self, sets: &[Override]) -> Result<()> {
        for m in &mut self.models {
            m.test = config::set_test(&m.test, sets)?;
        }
        Ok(())
    }

    /// The run whose val split `fkpnet test` scores. With several members, every one must
    /// have been validated on the same faces (same data file, split and seed): otherwise a
    /// member would be scored on faces it trained on.
    pub fn val_run(&self) -> Result<&Resolved> {
        let mut runs = self.models.iter().map(|m| match &m.run {
            Some(r) => Ok((r, &m.dir)),
            None => bail!("{} has no val split (an export or a net file): give --data CSV", m.dir.display()),
        });
        let (first, first_dir) = runs.next().expect("at least one model")?;
        fn key(r: &Resolved) -> (&String, u64, u64, &crate::config::solver::SyntheticConfig) {
            let d = &r.solver.data;
            (&d.train, d.split.to_bits(), d.seed, &d.synthetic)
        }
        for run in runs {
            let (r, d) = run?;
            if key(r) != key(first) {
                let (a, b) = (&first.solver.data, &r.solver.data);
                bail!(
                    "{} and {} were validated on different faces (data.train {} / {}, split {} / {}, \
                     seed {} / {}): an ensemble's val RMSE would count faces a member trained on. \
                     Give --data CSV with faces none of them trained on",
                    first_dir.display(),
                    d.display(),
                    a.train,
                    b.train,
                    a.split,
                    b.split,
                    a.seed,
                    b.seed
                );
            }
        }
        Ok(first)
    }

    /// Keypoints in pixels, 30 per face: the mean of the members' predictions.
    pub fn predict_px(&self, faces: &Faces) -> Vec<f32> {
        let mut sum = self.models[0].predict_px(faces);
        for m in &self.models[1..] {
            for (s, p) in sum.iter_mut().zip(m.predict_px(faces)) {
                *s += p;
            }
        }
        let n = self.models.len() as f32;
        sum.iter_mut().for_each(|s| *s /= n);
        sum
    }
}
