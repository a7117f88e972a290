//! Caffe interop: prototxt (protobuf text format) import into fkpnet YAML, and
//! Caffe's training logs read as runs (`report::caffe_run`). `net` walks a net's graph,
//! `layers` converts its compute layers (one function per Caffe type), `solver` the
//! solver. The result keeps Caffe's semantics (ceil pooling, Caffe's fillers,
//! constant 0 where Caffe omits a filler) and is compiled before it is returned.

mod layers;
pub mod model;
mod net;
mod solver;

use crate::config::{NetConfig, NetSource};
use crate::graph::Graph;
use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};

/// Caffe's messages (and the others generated beside them) live in `crate::proto`.
pub use crate::proto;

pub use layers::supported;

pub struct Options {
    /// Input shape for data layers that carry none (HDF5Data, Data).
    pub input: [i64; 3],
    /// `data.train` of the converted solver; None: the net's HDF5 sources where it has
    /// them, else the built-in faces.
    pub data: Option<String>,
    /// Batch size when no data layer gives one.
    pub batch: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options { input: [1, 96, 96], data: None, batch: 64 }
    }
}

pub struct Imported {
    pub net_name: String,
    pub net_yaml: String,
    pub solver_yaml: Option<String>,
    /// Things the user should know (Caffe defaults made explicit, skipped layers).
    pub notes: Vec<String>,
}

/// Convert a Caffe net (and solver) prototxt. The net is compiled before returning,
/// so what comes out is a valid fkpnet net.
pub fn import(net: &Path, solver: Option<&Path>, opts: &Options) -> Result<Imported> {
    let mut notes = Vec::new();
    let out = net::convert_net(net, opts, &mut notes)?;
    let cfg: NetConfig = serde_yaml::from_str(&out.yaml)?;
    let src = NetSource { path: net.with_extension("yaml"), text: out.yaml.clone(), sets: vec![] };
    let graph = Graph::compile(&cfg, &src, None).map_err(|e| anyhow!("the converted net: {e:#}"))?;
    let net_file = format!("{}.yaml", out.name);
    let keypoints = graph.nodes.last().map_or(15, |n| n.output[0] / 2);
    let data = data_section(&out, opts, keypoints, &mut notes);
    let solver_yaml = match solver {
        Some(s) => {
            let batch = out.batch.unwrap_or(opts.batch);
            Some(solver::convert_solver(s, &net_file, data, batch, out.test_batch, &mut notes)?)
        }
        None => {
            notes.push(format!(
                "no solver given: only the net is converted; give the solver prototxt too \
                 (fkpnet import-caffe {} SOLVER.prototxt -o DIR) for a solver file to train with",
                net.display()
            ));
            None
        }
    };
    Ok(Imported { net_name: out.name, net_yaml: out.yaml, solver_yaml, notes })
}

/// The converted solver's data: `--data` if given; else Caffe's HDF5 sources (its
/// TRAIN list as data.train, TEST list as data.val, its shuffle); else the built-in
/// faces, with a note saying how to train on real ones.
fn data_section(
    out: &net::NetOut,
    opts: &Options,
    keypoints: i64,
    notes: &mut Vec<String>,
) -> crate::config::DataConfig {
    use crate::config::solver::{DataConfig, DataFormat, Labels};
    use crate::data::keypoints::KeypointsConfig;
    let train = opts.data.clone().unwrap_or_else(|| crate::data::SYNTHETIC.into());
    let base = DataConfig { split: 0.9, labels: Labels::Complete, ..DataConfig::of(train) };
    match (&out.source, out.hdf5, opts.data.is_none()) {
        (Some(train), true, true) => {
            let set = match keypoints {
                15 => KeypointsConfig::Preset("kaggle15".into()),
                k => serde_yaml::from_str(&format!("{{count: {k}}}")).expect("a count"),
            };
            notes.push(format!(
                "data: Caffe's HDF5 input, train `{train}`{}; labels read as (xy - half) / half of the input, as make_h5.py writes them",
                out.test_source.as_ref().map(|v| format!(", val `{v}`")).unwrap_or_default()
            ));
            DataConfig {
                train: train.clone(),
                format: DataFormat::Hdf5,
                val: out.test_source.clone(),
                shuffle: out.shuffle,
                keypoints: Some(set),
                ..base
            }
        }
        (source, _, true) => {
            let from = source.as_ref().map(|s| format!(" (Caffe read `{s}`)")).unwrap_or_default();
            notes.push(format!(
                "data.train is `synthetic`, the built-in faces{from}: train on your data with --set \
                 data.train=PATH (a Kaggle CSV), or import with --data PATH"
            ));
            base
        }
        _ => base,
    }
}

/// Write an import into `out` (created): `<net name>.yaml`, and the solver as
/// `<solver file's stem>.yaml`. Nothing is overwritten: an existing file is refused
/// before any is written. Returns the files written.
pub fn write(imported: &Imported, solver: Option<&Path>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![(format!("{}.yaml", imported.net_name), imported.net_yaml.clone())];
    if let (Some(y), Some(s)) = (&imported.solver_yaml, solver) {
        let stem = s.file_stem().and_then(|s| s.to_str()).unwrap_or("solver");
        files.push((format!("{stem}.yaml"), y.clone()));
    }
    for (name, _) in &files {
        if out.join(name).exists() {
            anyhow::bail!("{} exists; choose another -o (nothing is overwritten)", out.join(name).display());
        }
    }
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for (name, text) in files {
        crate::run::write_text(&out.join(&name), &text)?;
        written.push(out.join(name));
    }
    Ok(written)
}
