//! A trained model from a run dir (config.yaml + weights) or an export dir
//! (net.yaml + model.safetensors), ready to predict.

use crate::config::{self, Resolved};
use crate::data::{Faces, TARGETS};
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
    /// The run's resolved config (None for an export).
    pub run: Option<Resolved>,
    pub weights: PathBuf,
    _vs: nn::VarStore,
}

impl Model {
    pub fn load(dir: &Path, weights: &Weights) -> Result<Model> {
        let d = dir.display();
        let (run, net, src) = if dir.join("config.yaml").is_file() {
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
        let graph = Graph::compile(&net, &src, TARGETS as i64)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let (net, params) = graph.build(&vs.root(), Default::default());
        load_weights(&file, &params, true)?;
        Ok(Model { graph, net, run, weights: file, _vs: vs })
    }

    /// Keypoints in pixels (96x96 frame), 30 per face, Kaggle's column order.
    pub fn predict_px(&self, faces: &Faces) -> Vec<f32> {
        let _guard = tch::no_grad_guard();
        let (x, _) = faces.to_tensors(Device::Cpu);
        let n = faces.len() as i64;
        let mut out = Vec::with_capacity(faces.len() * TARGETS);
        for start in (0..n).step_by(256) {
            let len = 256.min(n - start);
            let flip = self.run.as_ref().is_some_and(|r| r.solver.test.flip);
            let y = crate::train::predict(&self.net, &x.narrow(0, start, len), flip) * 48.0 + 48.0;
            out.extend(Vec::<f32>::try_from(y.flatten(0, -1)).expect("float predictions"));
        }
        out
    }
}
