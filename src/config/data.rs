//! The data section of a solver file: where the faces come from (format, files,
//! columns, keypoint set), how each is cut out of its image (`crop`), how they split
//! into train and val, and the built-in generator's faces.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The annotations (relative to this file): Kaggle's training.csv, a csv of image
    /// paths and coordinates, a folder of images with .pts files, a COCO keypoints
    /// JSON; or `synthetic` for the built-in face generator.
    pub train: String,
    /// How `train` is written: kaggle (Kaggle's CSV with pixels), csv, pts, coco, or
    /// hdf5 (Caffe's HDF5Data input: a list of .h5 files with `data` and `label`).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub format: DataFormat,
    /// The val faces from a file of their own (same format), instead of a share of
    /// `train` (`split` then does not apply): as Caffe's TEST-phase data layer.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub val: Option<String>,
    /// Shuffle the training faces each epoch (seeded); false: batches in file order,
    /// wrapping at the end, as Caffe's data layers without `shuffle`.
    #[serde(default = "d_true", skip_serializing_if = "crate::config::schema::skip_true")]
    pub shuffle: bool,
    /// Where relative image paths start (relative to this file; default: the
    /// annotation file's folder, or for pts the folder itself).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub images: Option<String>,
    /// The columns of a csv file.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub columns: Columns,
    /// The keypoint set: a preset (kaggle15, ibug68, wflw98, cofw29) or inline
    /// {count, names, mirror, normaliser, failure}; default kaggle15 for Kaggle's CSV.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub keypoints: Option<crate::data::keypoints::KeypointsConfig>,
    /// How a face is cut out of its image for the net's input.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub crop: CropConfig,
    /// A regular expression on the image path: faces whose paths give the same match
    /// (its first group, where it has one) stay on the same side of the train/val split,
    /// e.g. the person's name, `([^/]+)_\d+\.jpg$`.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub split_group: Option<String>,
    /// Fraction of the faces used for training; the rest is the val split.
    #[serde(default = "d_split")]
    pub split: f64,
    /// complete: only fully annotated faces (the study's protocol); masked: every face,
    /// the loss counts present keypoints only.
    #[serde(default)]
    pub labels: Labels,
    /// Seed of the train/val split.
    #[serde(default)]
    pub seed: u64,
    /// The built-in generator, used when `train: synthetic`.
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Training-time augmentation (off by default).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub augment: crate::data::augment::Augment,
}

impl DataConfig {
    /// `train` with every other key at its default (a Kaggle CSV, or `synthetic`).
    pub fn of(train: String) -> DataConfig {
        serde_yaml::from_value(serde_yaml::Value::Mapping(
            [("train".into(), train.into())].into_iter().collect(),
        ))
        .expect("every other data key has a default")
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    #[default]
    Kaggle,
    Csv,
    Pts,
    Coco,
    Hdf5,
}

impl DataFormat {
    pub fn is_kaggle(&self) -> bool {
        *self == DataFormat::Kaggle
    }
}

/// The columns of a `format: csv` file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// The image path column.
    #[serde(default = "d_image_column")]
    pub image: String,
    /// The first of the 2K coordinate columns (x0, y0, x1, y1, ...); default: the
    /// column after `image`.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub first: Option<String>,
    /// HRNet's face box: its centre's columns [x, y] ...
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub center: Option<[String; 2]>,
    /// ... and its scale column (side = 200 x scale pixels).
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub scale: Option<String>,
}

fn d_image_column() -> String {
    "image".into()
}

impl Default for Columns {
    fn default() -> Self {
        Columns { image: d_image_column(), first: None, center: None, scale: None }
    }
}

impl Columns {
    pub fn is_default(&self) -> bool {
        *self == Columns::default()
    }
}

/// Where the square box a face is cut out of comes from.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CropFrom {
    /// The whole image, its longer side fitting the input (the rest padded black).
    #[default]
    Whole,
    /// The annotation's face box (COCO's bbox, the csv's center and scale).
    Box,
    /// The extent of the annotated keypoints.
    Landmarks,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    #[serde(default)]
    pub from: CropFrom,
    /// Grow the box's side by this fraction about its centre (0.25 = 1.25 times; a
    /// negative value zooms in).
    #[serde(default)]
    pub margin: f64,
}

impl CropConfig {
    pub fn is_default(&self) -> bool {
        *self == CropConfig::default()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of faces generated.
    #[serde(default = "d_synth_size")]
    pub size: usize,
    /// Seed of the generator.
    #[serde(default)]
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { size: d_synth_size(), seed: 0 }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    #[default]
    Complete,
    Masked,
}

fn d_split() -> f64 {
    0.9
}
fn d_synth_size() -> usize {
    2048
}
fn d_true() -> bool {
    true
}
