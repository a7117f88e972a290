//! Faces: Kaggle's CSV or the built-in generator -> in-memory dataset -> seeded
//! train/val split -> tensors on the training device.

pub mod augment;
pub mod cache;
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

pub use keypoints::{KeypointSet, KAGGLE15 as KEYPOINTS};

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
}

impl Spec {
    /// Kaggle's faces: 1x96x96 grey with the 15 keypoints.
    pub fn kaggle() -> Spec {
        Spec { keypoints: KeypointSet::kaggle15(), channels: 1, height: SIDE, width: SIDE }
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
}

impl Faces {
    /// No faces yet, of this shape.
    pub fn empty(shape: [usize; 3], targets: usize) -> Faces {
        Faces { pixels: Vec::new(), keypoints: Vec::new(), shape, targets }
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
    let spec = Spec::kaggle();
    if net.input != spec.input() {
        bail!("net {}: input is {:?}, but the faces are [1, 96, 96] (grey 96x96)", net.name, net.input);
    }
    let _ = cfg;
    Ok(spec)
}

/// The train and val faces of a data section.
pub struct Split {
    pub train: Faces,
    pub val: Faces,
    /// Where the faces came from, for logs.
    pub source: String,
}

/// Load the faces a data section names, keep the rows its `labels` asks for, and
/// split them with its seed.
pub fn load(cfg: &DataConfig) -> Result<Split> {
    let faces = if cfg.train == "synthetic" {
        synthetic::generate(cfg.synthetic.size, cfg.synthetic.seed)
    } else {
        let path = Path::new(&cfg.train);
        if !path.exists() {
            bail!(
                "data file {} does not exist. Put Kaggle's training.csv there (see data/README.md: \
                 kaggle.com/c/facial-keypoints-detection/data), point data.train at it \
                 (--set data.train=PATH), or train on the built-in faces with --set data.train=synthetic",
                path.display()
            );
        }
        kaggle::read_training(path)?
    };
    // Val is always the same seeded share of the complete faces, so a `complete` and a
    // `masked` run are scored on the same faces; `masked` adds the partly annotated
    // faces to training only.
    let complete: Vec<usize> = (0..faces.len()).filter(|&i| faces.is_complete(i)).collect();
    if complete.is_empty() && cfg.labels == Labels::Complete {
        bail!("{}: no fully annotated faces (labels: complete); use labels: masked", cfg.train);
    }
    let (mut train, val) = if complete.is_empty() {
        split_indices(&(0..faces.len()).collect::<Vec<_>>(), cfg.split, cfg.seed)
    } else {
        split_indices(&complete, cfg.split, cfg.seed)
    };
    if cfg.labels == Labels::Masked && !complete.is_empty() {
        train.extend((0..faces.len()).filter(|&i| !faces.is_complete(i)));
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

/// Seeded shuffle, then the first `ratio` for training (at least one face), the rest val.
pub fn split_indices(idx: &[usize], ratio: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx = idx.to_vec();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((idx.len() as f64 * ratio).round() as usize).clamp(1, idx.len());
    let val = idx.split_off(n_train);
    (idx, val)
}
