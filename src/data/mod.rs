//! Faces: Kaggle's CSV or the built-in generator -> in-memory dataset -> seeded
//! train/val split -> tensors on the training device.

pub mod annotations;
pub mod augment;
pub mod cache;
pub mod crop;
pub mod framing;
pub mod hdf5;
pub mod images;
pub mod kaggle;
pub mod keypoints;
pub mod synthetic;

use crate::config::{DataConfig, Labels};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub use crate::config::solver::DataFormat;
pub use keypoints::{KeypointSet, KAGGLE15 as KEYPOINTS};

/// `data.train: synthetic`: the built-in face generator instead of a file.
pub const SYNTHETIC: &str = "synthetic";

/// Kaggle's faces: 96x96 grey, 15 keypoints (30 targets).
pub const SIDE: usize = 96;
pub const PIXELS: usize = SIDE * SIDE;
pub const TARGETS: usize = 30;

/// What a face tensor is: the keypoint set and the input the net sees (channels,
/// height, width). Everything downstream (targets, flips, losses, metrics, reports)
/// takes its shape from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub keypoints: KeypointSet,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// How a face is cut out of an image file (Kaggle's faces come cut out).
    pub crop: crate::config::solver::CropConfig,
    /// The format the faces came in (Kaggle's CSV, or an image dataset's).
    pub format: DataFormat,
}

impl Spec {
    /// Kaggle's faces: 1x96x96 grey with the 15 keypoints.
    pub fn kaggle() -> Spec {
        Spec {
            keypoints: KeypointSet::kaggle15(),
            channels: 1,
            height: SIDE,
            width: SIDE,
            crop: Default::default(),
            format: DataFormat::Kaggle,
        }
    }

    /// Values of one face's image.
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// x and y of each keypoint.
    pub fn targets(&self) -> usize {
        self.keypoints.targets()
    }

    /// Half the side of the (square) input: targets are (xy - half) / half, so `half`
    /// maps normalised units back to pixels (48 for Kaggle's 96x96 faces).
    pub fn half(&self) -> f64 {
        self.width as f64 / 2.0
    }

    /// The net's `input:` this data needs.
    pub fn input(&self) -> [i64; 3] {
        [self.channels as i64, self.height as i64, self.width as i64]
    }

    /// The target column names, `NAME_x, NAME_y` per keypoint.
    pub fn target_columns(&self) -> Vec<String> {
        self.keypoints.names.iter().flat_map(|k| [format!("{k}_x"), format!("{k}_y")]).collect()
    }
}

/// The 30 Kaggle target column names, `left_eye_center_x, left_eye_center_y, ...`.
pub fn target_columns() -> Vec<String> {
    Spec::kaggle().target_columns()
}

/// Where a face cut from an image file came from: the image's name as the
/// annotations give it and the box it was cut out of.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub name: String,
    pub crop: crop::CropBox,
}

/// Faces in memory: pixels row-major, channel planes one after another (CxHxW) per
/// face, keypoints in pixels of that image (NaN = not annotated).
#[derive(Debug, Clone)]
pub struct Faces {
    pub pixels: Vec<u8>,
    pub keypoints: Vec<f32>,
    /// The image of one face: [channels, height, width].
    pub shape: [usize; 3],
    /// Values per face in `keypoints`: 2 x the number of keypoints.
    pub targets: usize,
    /// Per face, for faces cut from image files (empty for Kaggle's and generated ones).
    pub sources: Vec<Source>,
}

impl Faces {
    /// No faces yet, of this shape.
    pub fn empty(shape: [usize; 3], targets: usize) -> Faces {
        Faces { pixels: Vec::new(), keypoints: Vec::new(), shape, targets, sources: Vec::new() }
    }

    /// No Kaggle faces yet (1x96x96, 30 targets).
    pub fn kaggle() -> Faces {
        Faces::empty([1, SIDE, SIDE], TARGETS)
    }

    /// Values of one face's image.
    pub fn frame(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.frame()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Face i's pixels and keypoints.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.frame()..(i + 1) * self.frame()]
    }

    pub fn points(&self, i: usize) -> &[f32] {
        &self.keypoints[i * self.targets..(i + 1) * self.targets]
    }

    pub fn is_complete(&self, i: usize) -> bool {
        self.points(i).iter().all(|v| !v.is_nan())
    }

    pub fn select(&self, idx: &[usize]) -> Faces {
        let mut out = Faces::empty(self.shape, self.targets);
        for &i in idx {
            out.pixels.extend_from_slice(self.image(i));
            out.keypoints.extend_from_slice(self.points(i));
            if !self.sources.is_empty() {
                out.sources.push(self.sources[i].clone());
            }
        }
        out
    }

    /// Inputs `[N, C, H, W]` scaled to [0, 1] and targets `[N, 2K]` as (xy - half) /
    /// half, half = the input's half-side (NaN stays NaN: the loss masks it).
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor) {
        let n = self.len() as i64;
        let [c, h, w] = self.shape.map(|d| d as i64);
        let x = Tensor::from_slice(&self.pixels).to_device(device).to_kind(Kind::Float).view([n, c, h, w])
            / 255.0;
        let half = w as f64 / 2.0;
        let y = (Tensor::from_slice(&self.keypoints).to_device(device).view([n, self.targets as i64]) - half)
            / half;
        (x, y)
    }
}

/// The faces a data section describes, as the net must take them: its `input:` must
/// be what the data gives, and its output is then checked against the keypoint count.
pub fn spec(cfg: &DataConfig, net: &crate::config::NetConfig) -> Result<Spec> {
    let format = crate::config::name_of(&cfg.format);
    let keypoints = match &cfg.keypoints {
        Some(k) => KeypointSet::from_config(k).map_err(|e| anyhow::anyhow!("{e}"))?,
        None if cfg.format == DataFormat::Kaggle => KeypointSet::kaggle15(),
        None => bail!(
            "data.keypoints: a {format} dataset needs its keypoint set: a preset ({}) or \
             {{count: K, mirror: [[a, b], ...], normaliser: [a, b]}}",
            keypoints::PRESETS.join(", ")
        ),
    };
    if cfg.format == DataFormat::Kaggle {
        if keypoints.len() != 15 {
            bail!("data.keypoints: Kaggle's CSV has 15 keypoints, the set has {}", keypoints.len());
        }
        if !cfg.crop.is_default() || !cfg.columns.is_default() || cfg.images.is_some() {
            bail!("data.crop, data.columns and data.images belong to image datasets (format csv, pts or coco); Kaggle's faces are already cut out at 96x96");
        }
        let spec = Spec { keypoints, ..Spec::kaggle() };
        if net.input != spec.input() {
            bail!("net {}: input is {:?}, but the faces are [1, 96, 96] (grey 96x96)", net.name, net.input);
        }
        return Ok(spec);
    }
    if cfg.train == SYNTHETIC {
        bail!("data.train: synthetic faces are Kaggle-shaped; use format: kaggle (the default)");
    }
    let [c, h, w] = net.input[..] else { bail!("net {}: input must be [C, H, W]", net.name) };
    if !(c == 1 || c == 3) {
        bail!(
            "net {}: input {:?}: a {format} dataset gives grey (1 channel) or RGB (3) faces",
            net.name,
            net.input
        );
    }
    if h != w {
        bail!(
            "net {}: input {:?}: faces are cut out as squares; give a square input such as [{c}, {h}, {h}]",
            net.name,
            net.input
        );
    }
    if cfg.augment.saturation > 0.0 && c != 3 {
        bail!("data.augment.saturation jitters colour; the net's input {:?} is grey (1 channel)", net.input);
    }
    if cfg.format == DataFormat::Hdf5 && !cfg.crop.is_default() {
        bail!("data.crop: an hdf5 dataset's faces are already cut out (`data` is N x C x H x W)");
    }
    if !(cfg.crop.margin > -0.9 && cfg.crop.margin <= 4.0) {
        bail!(
            "data.crop.margin grows the box's side by a fraction; it must be in (-0.9, 4], got {}",
            cfg.crop.margin
        );
    }
    Ok(Spec {
        keypoints,
        channels: c as usize,
        height: h as usize,
        width: w as usize,
        crop: cfg.crop,
        format: cfg.format,
    })
}

/// The train and val faces of a data section.
pub struct Split {
    pub train: Faces,
    pub val: Faces,
    /// Where the faces came from, for logs.
    pub source: String,
}

/// Load the faces a data section names, keep the rows its `labels` asks for, and
/// split them with its seed (keeping `split_group`'s groups together).
pub fn load(cfg: &DataConfig, spec: &Spec) -> Result<Split> {
    let faces = read_faces(cfg, &cfg.train, spec)?;
    let Some(val_file) = &cfg.val else {
        return split(cfg, faces);
    };
    // A val file of its own: every training face trains (labels as `labels` says),
    // every complete val face is tested.
    let val = read_faces(cfg, val_file, spec)?;
    let train: Vec<usize> =
        (0..faces.len()).filter(|&i| cfg.labels == Labels::Masked || faces.is_complete(i)).collect();
    if train.is_empty() {
        bail!("{}: no fully annotated faces (labels: complete); use labels: masked", cfg.train);
    }
    let tested: Vec<usize> = (0..val.len()).filter(|&i| val.is_complete(i)).collect();
    Ok(Split {
        source: format!(
            "{} ({} of {} faces; val: {}, {} faces)",
            cfg.train,
            train.len(),
            faces.len(),
            val_file,
            tested.len()
        ),
        train: faces.select(&train),
        val: val.select(&tested),
    })
}

/// The faces of one file (or folder) of the data section's format.
pub(crate) fn read_faces(cfg: &DataConfig, file: &str, spec: &Spec) -> Result<Faces> {
    match cfg.format {
        DataFormat::Hdf5 => hdf5::read(Path::new(file), spec),
        DataFormat::Kaggle => read_kaggle(cfg, file),
        _ => images::load(&DataConfig { train: file.to_string(), ..cfg.clone() }, spec),
    }
}

fn read_kaggle(cfg: &DataConfig, file: &str) -> Result<Faces> {
    Ok(if file == SYNTHETIC {
        synthetic::generate(cfg.synthetic.size, cfg.synthetic.seed)
    } else {
        let path = Path::new(file);
        if !path.exists() {
            bail!(
                "data file {} does not exist. Put Kaggle's training.csv there (see data/README.md: \
                 kaggle.com/c/facial-keypoints-detection/data), point data.train at it \
                 (--set data.train=PATH), or train on the built-in faces with --set data.train=synthetic",
                path.display()
            );
        }
        kaggle::read_training(path)?
    })
}

/// Keep the rows `labels` asks for and split them with the seed (keeping
/// `split_group`'s groups together).
fn split(cfg: &DataConfig, faces: Faces) -> Result<Split> {
    // Val is always the same seeded share of the complete faces, so a `complete` and a
    // `masked` run are scored on the same faces; `masked` adds the partly annotated
    // faces to training only.
    let complete: Vec<usize> = (0..faces.len()).filter(|&i| faces.is_complete(i)).collect();
    if complete.is_empty() && cfg.labels == Labels::Complete {
        bail!("{}: no fully annotated faces (labels: complete); use labels: masked", cfg.train);
    }
    let groups = match &cfg.split_group {
        Some(pattern) => Some(group_keys(&faces, pattern)?),
        None => None,
    };
    let candidates =
        if complete.is_empty() { (0..faces.len()).collect::<Vec<_>>() } else { complete.clone() };
    let (mut train, val) = match &groups {
        Some(g) => split_groups(&candidates, g, cfg.split, cfg.seed),
        None => split_indices(&candidates, cfg.split, cfg.seed),
    };
    if cfg.labels == Labels::Masked && !complete.is_empty() {
        // A partly annotated face of a val group would let the net see that person.
        let val_groups: std::collections::HashSet<&str> =
            groups.iter().flat_map(|g| val.iter().map(|&i| g[i].as_str())).collect();
        train.extend(
            (0..faces.len())
                .filter(|&i| !faces.is_complete(i))
                .filter(|&i| groups.as_ref().is_none_or(|g| !val_groups.contains(g[i].as_str()))),
        );
    }
    let keep = if cfg.labels == Labels::Masked { faces.len() } else { complete.len() };
    Ok(Split {
        train: faces.select(&train),
        val: faces.select(&val),
        source: format!("{} ({} of {} faces, labels {:?})", cfg.train, keep, faces.len(), cfg.labels)
            .replace("Complete", "complete")
            .replace("Masked", "masked"),
    })
}

/// Each face's group: the first capture group of `pattern` on its image name (the
/// whole match where the pattern has no group).
fn group_keys(faces: &Faces, pattern: &str) -> Result<Vec<String>> {
    if faces.sources.is_empty() {
        bail!("data.split_group groups faces by their image paths; Kaggle's CSV has none");
    }
    let re = regex::Regex::new(pattern)
        .map_err(|e| anyhow::anyhow!("data.split_group `{pattern}` is not a regular expression: {e}"))?;
    faces
        .sources
        .iter()
        .map(|s| {
            let c = re.captures(&s.name).ok_or_else(|| {
                anyhow::anyhow!(
                    "data.split_group `{pattern}` does not match image `{}`; every image path must match",
                    s.name
                )
            })?;
            Ok(c.get(1).or(c.get(0)).map_or("", |m| m.as_str()).to_string())
        })
        .collect()
}

/// As `split_indices`, but whole groups go to one side: the groups in a seeded order
/// fill training up to `ratio` of the faces, the rest are val.
pub fn split_groups(idx: &[usize], groups: &[String], ratio: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut names: Vec<&str> = idx.iter().map(|&i| groups[i].as_str()).collect();
    names.sort();
    names.dedup();
    names.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((idx.len() as f64 * ratio).round() as usize).clamp(1, idx.len());
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for g in names {
        let members = idx.iter().copied().filter(|&i| groups[i] == g);
        if train.len() < n_train {
            train.extend(members);
        } else {
            val.extend(members);
        }
    }
    (train, val)
}

/// Seeded shuffle, then the first `ratio` for training (at least one face), the rest val.
pub fn split_indices(idx: &[usize], ratio: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx = idx.to_vec();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((idx.len() as f64 * ratio).round() as usize).clamp(1, idx.len());
    let val = idx.split_off(n_train);
    (idx, val)
}
