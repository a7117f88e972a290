//! How a model's training faces sit in the face detector's boxes, so that a face the
//! detector finds in a photo is cut out as the model was trained (see
//! `fkpnet_face::Framing`). Fitted on an even sample of the training data: each face's
//! image goes through the detector, the training crop (Kaggle's whole 96x96 face, or
//! `data.crop` of an image dataset) is expressed in the matching detection's box, and
//! the medians are the framing. The result is kept in the run dir (`framing.yaml`).

use super::annotations;
use super::crop;
use super::{DataFormat, Faces, Spec};
use crate::config::DataConfig;
use anyhow::{anyhow, bail, Context, Result};
use fkpnet_face::{CropBox, FaceDetector, Framing};
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Training faces the framing is fitted on: enough for medians steady to about 0.01
/// box sides, few enough to take a second or two.
pub const SAMPLE: usize = 200;
/// The fewest detected faces a framing is fitted from.
pub const MIN_FOUND: usize = 10;
/// Which detector a framing belongs to (another detector frames faces otherwise).
pub const DETECTOR: &str = "seetaface-frontal-1.0";

/// A fitted framing and what it was fitted on: the contents of `framing.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fitted {
    pub detector: String,
    /// The crop's centre right of and below the box's, in box sides (`Framing`).
    pub dx: f64,
    pub dy: f64,
    /// The crop's side in box sides.
    pub scale: f64,
    /// Training faces the detector found, of those sampled.
    pub found: usize,
    pub sampled: usize,
    /// The training data it was fitted on.
    pub data: String,
}

impl Fitted {
    pub const FILE: &'static str = "framing.yaml";

    pub fn framing(&self) -> Framing {
        Framing { dx: self.dx, dy: self.dy, scale: self.scale }
    }

    /// `framing.yaml` in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Fitted>> {
        let f = dir.join(Self::FILE);
        if !f.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let fitted: Fitted = serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        if fitted.detector != DETECTOR {
            bail!(
                "{}: a framing for the detector {}, but this fkpnet finds faces with {DETECTOR}: delete the \
                 file and it is fitted again",
                f.display(),
                fitted.detector
            );
        }
        Ok(Some(fitted))
    }

    pub fn to_yaml(&self) -> String {
        format!(
            "# How this model's training faces sit in the face detector's boxes (fitted by fkpnet on\n\
             # {} of {} training faces the detector found): a detected face is cut out centred\n\
             # dx, dy box sides from the box's centre, scale box sides wide.\n{}",
            self.found,
            self.sampled,
            serde_yaml::to_string(self).expect("plain data")
        )
    }

    /// One line for the terminal.
    pub fn describe(&self) -> String {
        format!(
            "the crop centred {:+.3}, {:+.3} box sides from the detector's box, {:.3} sides wide (fitted on {} of {} training faces)",
            self.dx, self.dy, self.scale, self.found, self.sampled
        )
    }
}

/// Fit the framing on the training data of `cfg`.
pub fn fit(cfg: &DataConfig, spec: &Spec) -> Result<Fitted> {
    let faces = sample(cfg, spec)?;
    let sampled = faces.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = sampled.div_ceil(threads).max(1);
    let per_face: Vec<Result<Option<Framing>>> = std::thread::scope(|s| {
        let handles: Vec<_> = faces
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut det = FaceDetector::new();
                    part.iter().map(|f| f.framing(&mut det)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("detection does not panic")).collect()
    });
    let found: Vec<Framing> =
        per_face.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten().collect();
    if found.len() < MIN_FOUND {
        bail!(
            "the face detector found {} of {sampled} faces sampled from the training data {} (at least \
             {MIN_FOUND} are needed to learn how this model's faces are framed in its boxes): give the \
             faces' boxes (--box x,y,w,h or --boxes CSV), or --whole for images that are already faces cut \
             out as the training faces are",
            found.len(),
            cfg.train
        );
    }
    let m = Framing::median(&found).expect("some faces");
    // To 4 decimals (0.1 px on a 1000 px face): the file stays readable.
    let r = |v: f64| (v * 1e4).round() / 1e4;
    Ok(Fitted {
        detector: DETECTOR.into(),
        dx: r(m.dx),
        dy: r(m.dy),
        scale: r(m.scale),
        found: found.len(),
        sampled,
        data: cfg.train.clone(),
    })
}

/// A training face to detect: its image and the crop the model was trained on.
enum Sampled {
    /// Faces that come cut out (Kaggle, HDF5): the image is the crop.
    Cut(DynamicImage),
    /// An image file and the crop `data.crop` takes of it.
    File { path: std::path::PathBuf, crop: CropBox, origin: String },
}

impl Sampled {
    fn framing(&self, det: &mut FaceDetector) -> Result<Option<Framing>> {
        let (img, crop) = match self {
            Sampled::Cut(img) => (img.clone(), fkpnet_face::whole(img.width(), img.height(), 0.0)),
            Sampled::File { path, crop, origin } => {
                (crop::open(path).map_err(|e| anyhow!("{origin}: {e:#}"))?, *crop)
            }
        };
        Ok(fkpnet_face::matching(&det.detect(&img), &crop).map(|d| Framing::of(&d, &crop)))
    }
}

/// `SAMPLE` faces spread evenly over the set (or every face of a smaller set).
fn evenly<T>(items: Vec<T>) -> Vec<T> {
    let n = items.len();
    let keep: std::collections::BTreeSet<usize> = (0..SAMPLE.min(n)).map(|i| i * n / SAMPLE.min(n)).collect();
    items.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, x)| x).collect()
}

fn sample(cfg: &DataConfig, spec: &Spec) -> Result<Vec<Sampled>> {
    if matches!(cfg.format, DataFormat::Kaggle | DataFormat::Hdf5) {
        let faces = super::read_faces(cfg, &cfg.train, spec)?;
        let idx: Vec<usize> = evenly((0..faces.len()).collect());
        return Ok(idx.into_iter().map(|i| Sampled::Cut(image_of(&faces, i))).collect());
    }
    let images = cfg.images.as_deref().map(Path::new);
    let mut anns =
        annotations::read(cfg.format, Path::new(&cfg.train), images, &cfg.columns, spec.keypoints.len())?;
    anns.sort_by(|a, b| a.name.cmp(&b.name));
    evenly(anns)
        .into_iter()
        .map(|a| {
            let (w, h) = image::image_dimensions(&a.path)
                .map_err(|e| anyhow!("{}: cannot read image {} ({e})", a.origin, a.path.display()))?;
            let crop = crop::crop_box(&cfg.crop, w, h, &a.points, a.bbox)
                .map_err(|e| anyhow!("{}: {e}", a.origin))?;
            Ok(Sampled::File { path: a.path, crop, origin: a.origin })
        })
        .collect()
}

/// Face `i` (C x H x W planes) as an image.
fn image_of(faces: &Faces, i: usize) -> DynamicImage {
    let [c, h, w] = faces.shape;
    let px = faces.image(i);
    let (w32, h32) = (w as u32, h as u32);
    if c == 1 {
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(w32, h32, px.to_vec()).expect("a whole face"))
    } else {
        let plane = h * w;
        let rgb: Vec<u8> = (0..plane).flat_map(|p| [px[p], px[plane + p], px[2 * plane + p]]).collect();
        DynamicImage::ImageRgb8(image::RgbImage::from_raw(w32, h32, rgb).expect("a whole face"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::keypoints::{KeypointSet, KeypointsConfig};

    fn shared(p: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(p).display().to_string()
    }

    fn data(yaml: &str) -> DataConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn kaggle_faces_are_their_detector_box_grown_by_about_a_seventh() {
        let cfg = data(&format!("train: {}", shared("faces-mini/training.csv")));
        let f = fit(&cfg, &Spec::kaggle()).unwrap();
        // Measured on the 3,689 faces of faces/: 196 of 200 found, scale 1.14, centred
        // (dx 0.00, dy 0.01), the middle 80% of faces within 0.1 box sides.
        assert_eq!(f.sampled, SAMPLE);
        assert!(f.found >= 190, "{f:?}");
        assert!((1.08..1.20).contains(&f.scale) && f.dx.abs() < 0.03 && f.dy.abs() < 0.04, "{f:?}");
        // What it writes reads back.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(Fitted::FILE), f.to_yaml()).unwrap();
        assert_eq!(Fitted::load(dir.path()).unwrap(), Some(f));
    }

    #[test]
    fn a_landmark_crop_sits_lower_than_the_detector_box_and_grows_with_its_margin() {
        let spec = |crop: &str| {
            let cfg = data(&format!(
                "train: {}\nformat: csv\nkeypoints: ibug68\ncrop: {crop}",
                shared("landmarks68-mini/train/keypoints.csv")
            ));
            let keypoints = KeypointSet::from_config(&KeypointsConfig::Preset("ibug68".into())).unwrap();
            let spec = Spec {
                keypoints,
                channels: 3,
                height: 96,
                width: 96,
                crop: cfg.crop.clone(),
                format: cfg.format,
            };
            (cfg, spec)
        };
        let (cfg, s) = spec("{from: landmarks, margin: 0}");
        let tight = fit(&cfg, &s).unwrap();
        // The 68 points run from the brows to the chin: below SeetaFace's box centre.
        assert_eq!(tight.sampled, 120);
        assert!(tight.found >= 110, "{tight:?}");
        assert!((0.12..0.22).contains(&tight.dy) && (0.88..1.06).contains(&tight.scale), "{tight:?}");
        let (cfg, s) = spec("{from: landmarks, margin: 0.25}");
        let grown = fit(&cfg, &s).unwrap();
        assert!((grown.scale / tight.scale - 1.25).abs() < 0.02, "{tight:?} {grown:?}");
    }

    #[test]
    fn a_stale_or_foreign_framing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(Fitted::FILE);
        std::fs::write(&f, "detector: haar\ndx: 0\ndy: 0\nscale: 1\nfound: 10\nsampled: 10\ndata: x\n")
            .unwrap();
        let e = Fitted::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("framing.yaml") && e.contains("haar") && e.contains("delete the file"), "{e}");
        std::fs::write(&f, "detector: x\nsize: 3\n").unwrap();
        let e = Fitted::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("framing.yaml") && e.contains("unknown field"), "{e}");
    }

    #[test]
    fn faces_the_detector_cannot_see_say_what_to_give_instead() {
        // Kaggle's layout, 30 faces of flat grey: nothing to detect.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flat.csv");
        let cols = crate::data::target_columns().join(",");
        let row = format!("{},{}\n", vec!["48.0"; 30].join(","), vec!["128"; 96 * 96].join(" "));
        std::fs::write(&file, format!("{cols},Image\n{}", row.repeat(30))).unwrap();
        let cfg = data(&format!("train: {}", file.display()));
        let e = fit(&cfg, &Spec::kaggle()).unwrap_err().to_string();
        assert!(e.contains("found 0 of 30") && e.contains("flat.csv"), "{e}");
        assert!(e.contains("--box") && e.contains("--whole"), "{e}");
    }
}
