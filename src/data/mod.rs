//! Faces: Kaggle's CSV or the built-in generator -> in-memory dataset -> seeded
//! train/val split -> tensors on the training device.

pub mod augment;
pub mod cache;
pub mod kaggle;
pub mod synthetic;

use crate::config::{DataConfig, Labels};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const SIDE: usize = 96;
pub const PIXELS: usize = SIDE * SIDE;
pub const TARGETS: usize = 30;

/// Kaggle's 15 keypoints in its column order; each has an `_x` and a `_y` column.
/// "left" is the person's left (the image's right).
pub const KEYPOINTS: [&str; 15] = [
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
];

/// The 30 target column names, `left_eye_center_x, left_eye_center_y, ...`.
pub fn target_columns() -> Vec<String> {
    KEYPOINTS.iter().flat_map(|k| [format!("{k}_x"), format!("{k}_y")]).collect()
}

/// Faces in memory: grey pixels row-major 96x96 per face, keypoints in pixels
/// (NaN = not annotated).
#[derive(Debug, Clone, Default)]
pub struct Faces {
    pub pixels: Vec<u8>,
    pub keypoints: Vec<f32>,
}

impl Faces {
    pub fn len(&self) -> usize {
        self.pixels.len() / PIXELS
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    pub fn is_complete(&self, i: usize) -> bool {
        self.keypoints[i * TARGETS..(i + 1) * TARGETS].iter().all(|v| !v.is_nan())
    }

    pub fn select(&self, idx: &[usize]) -> Faces {
        let mut out = Faces::default();
        for &i in idx {
            out.pixels.extend_from_slice(&self.pixels[i * PIXELS..(i + 1) * PIXELS]);
            out.keypoints.extend_from_slice(&self.keypoints[i * TARGETS..(i + 1) * TARGETS]);
        }
        out
    }

    /// Inputs `[N, 1, 96, 96]` scaled to [0, 1] and targets `[N, 30]` as (xy - 48) / 48
    /// (NaN stays NaN: the loss masks it).
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor) {
        let n = self.len() as i64;
        let x = Tensor::from_slice(&self.pixels).to_device(device).to_kind(Kind::Float).view([
            n,
            1,
            SIDE as i64,
            SIDE as i64,
        ]) / 255.0;
        let y =
            (Tensor::from_slice(&self.keypoints).to_device(device).view([n, TARGETS as i64]) - 48.0) / 48.0;
        (x, y)
    }
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
