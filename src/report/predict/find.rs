//! Which images `predict` reads (files, folders of them, found by their content) and
//! where their faces are: the user's boxes, the whole image, or the face detector with
//! the model's framing; and what is said about images without a face.

use super::super::model::Ensemble;
use crate::config::solver::CropFrom;
use crate::data::crop::CropBox;
use crate::data::Spec;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How the faces of an image file are found: the user's boxes for the images they
/// name, else the whole image (`--whole`), else the face detector, its boxes framed as
/// the model's training faces (`data::framing`).
pub struct Finder {
    pub boxes: Boxes,
    pub whole: bool,
    /// The detector's least score for a face (`--min-score`).
    pub min_score: f64,
}

pub use fkpnet_face::MIN_SCORE;

/// A face to cut out: its box, the detector's score if it found it, and whether a
/// drawing shows the box.
pub(super) struct Found {
    pub(super) crop: CropBox,
    pub(super) score: Option<f64>,
    pub(super) show_box: bool,
}

/// The detector and the model's framing, made on the first image that needs them.
pub(super) struct Detect {
    detector: fkpnet_face::FaceDetector,
    framing: fkpnet_face::Framing,
}

/// Face boxes the user gives: one for every image (`--box x,y,w,h`), or per image
/// (`--boxes CSV` with `image,x,y,w,h` rows; several rows are several faces).
#[derive(Default)]
pub struct Boxes {
    pub all: Option<[f32; 4]>,
    pub per_image: HashMap<String, Vec<[f32; 4]>>,
}

impl Boxes {
    /// `x,y,w,h` in pixels.
    pub fn parse_one(s: &str) -> Result<[f32; 4]> {
        let v: Vec<f32> =
            s.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| {
                anyhow!("--box {s}: expected x,y,w,h in pixels (the face's top-left corner, width, height)")
            })?;
        match v[..] {
            [x, y, w, h] if w > 0.0 && h > 0.0 && x.is_finite() && y.is_finite() => Ok([x, y, w, h]),
            [_, _, _, _] => bail!("--box {s}: width and height must be positive"),
            _ => bail!("--box {s}: expected 4 numbers x,y,w,h, got {}", v.len()),
        }
    }

    /// A CSV of `image,x,y,w,h`.
    pub fn read(path: &Path) -> Result<HashMap<String, Vec<[f32; 4]>>> {
        let f = path.display();
        let mut rdr = csv::Reader::from_path(path).with_context(|| format!("cannot open {f}"))?;
        let mut out: HashMap<String, Vec<[f32; 4]>> = HashMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| anyhow!("{f}: {e}"))?;
            let line = rec.position().map_or(0, |p| p.line());
            if rec.len() != 5 {
                bail!("{f}:{line}: expected image,x,y,w,h, got {} values", rec.len());
            }
            let b = Boxes::parse_one(&rec.iter().skip(1).collect::<Vec<_>>().join(","))
                .map_err(|e| anyhow!("{f}:{line}: {}", e.to_string().replace("--box ", "box ")))?;
            out.entry(rec[0].trim().to_string()).or_default().push(b);
        }
        Ok(out)
    }

    fn of(&self, name: &str, path: &Path) -> Option<Vec<[f32; 4]>> {
        self.all.map(|b| vec![b]).or_else(|| {
            self.per_image.get(name).or_else(|| self.per_image.get(&path.display().to_string())).cloned()
        })
    }
}

pub(super) fn is_csv(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Whether a file's content is an image fkpnet reads (whatever its extension).
fn is_image(p: &Path) -> bool {
    image::ImageReader::open(p)
        .ok()
        .and_then(|r| r.with_guessed_format().ok())
        .is_some_and(|r| r.format().is_some())
}

/// The image files under `dir`, recursively, sorted, with their names relative to it.
pub(super) fn images_in(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    crate::data::annotations::walk(dir, &mut files)?;
    files.sort();
    Ok(files
        .into_iter()
        .filter(|p| is_image(p))
        .map(|p| {
            let name = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            (p, name)
        })
        .collect())
}

impl Finder {
    /// The faces of one image (none: the detector found none).
    pub(super) fn faces(
        &self,
        model: &Ensemble,
        detect: &mut Option<Detect>,
        img: &image::DynamicImage,
        name: &str,
        path: &Path,
    ) -> Result<Vec<Found>> {
        let spec = model.spec();
        let (w, h) = (img.width(), img.height());
        if let Some(user) = self.boxes.of(name, path) {
            return user.into_iter().map(|b| user_box(spec, name, w, h, b)).collect();
        }
        if self.whole {
            // The image is a face as the training faces are: a model of whole images cuts
            // it as it cut them (its margin); else the image is the crop itself.
            let margin = if spec.crop.from == CropFrom::Whole { spec.crop.margin } else { 0.0 };
            let crop = fkpnet_face::whole(w, h, margin);
            return Ok(vec![Found { crop, score: None, show_box: spec.crop.from != CropFrom::Whole }]);
        }
        if detect.is_none() {
            let fitted = model.models[0].framing()?;
            *detect = Some(Detect { detector: Default::default(), framing: fitted.framing() });
        }
        let d = detect.as_mut().expect("made above");
        let found: Vec<Found> = d
            .detector
            .detect(img)
            .into_iter()
            .filter(|f| f.score >= self.min_score)
            .map(|f| Found { crop: d.framing.crop(&f), score: Some(f.score), show_box: true })
            .collect();
        Ok(found)
    }
}

/// Images without a face found: an error where no image had one, else a warning
/// (a folder of photos keeps the faces it has).
pub(super) fn report_missed(missed: &[String], images: usize, any_face: bool, min_score: f64) -> Result<()> {
    if missed.is_empty() {
        return Ok(());
    }
    let hint = fkpnet_face::no_face_hint(min_score);
    let names = match missed.len() {
        n if n <= 5 => missed.join(", "),
        n => format!("{}, ... ({} more)", missed[..5].join(", "), n - 5),
    };
    if !any_face {
        if missed.len() == 1 {
            bail!("{names}: no face found ({hint})");
        }
        bail!("no face found in any of the {} images: {names} ({hint})", missed.len());
    }
    eprintln!("warning: no face found in {} of {images} images: {names} ({hint})", missed.len());
    Ok(())
}

/// The user's box, treated as the face's box and grown by the model's margin.
fn user_box(spec: &Spec, name: &str, w: u32, h: u32, b: [f32; 4]) -> Result<Found> {
    let crop = fkpnet_face::user_box(w, h, b, spec.crop.margin).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Found { crop, score: None, show_box: true })
}
