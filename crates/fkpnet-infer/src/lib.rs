//! An fkpnet ONNX export (`fkpnet export RUN --format onnx`) run by tract: faces found
//! in photos (or boxed, or whole), cut out as the net was trained (fkpnet_face, with
//! the framing in the export's metadata), keypoints mapped back into the photo's pixels. No libtorch anywhere in this crate's dependency tree.

use anyhow::{anyhow, bail, Context, Result};
use fkpnet_face::CropBox;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::prelude::*;

/// The export's `fkpnet` metadata entry (src/report/onnx.rs `client_meta`).
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub input: InputMeta,
    pub output: OutputMeta,
    pub crop: CropMeta,
    pub keypoints: Vec<String>,
    pub csv: CsvMeta,
    /// How the training faces sit in the face detector's boxes (absent in an export of
    /// a model whose training data fkpnet could not read: faces need boxes then).
    #[serde(default)]
    pub framing: Option<FramingMeta>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FramingMeta {
    pub detector: String,
    pub dx: f64,
    pub dy: f64,
    pub scale: f64,
}

/// The detector fkpnet's framings are fitted for (src/data/framing.rs `DETECTOR`).
pub const DETECTOR: &str = "seetaface-frontal-1.0";

pub use fkpnet_face::{no_face_hint, MIN_SCORE};

/// How the faces of an image are found, as fkpnet predict finds them.
pub enum Find<'a> {
    /// The user's face boxes `[x, y, w, h]`, grown by the model's margin.
    Boxes(&'a [[f32; 4]]),
    /// The image is one face, already cut out as the training faces are.
    Whole,
    /// The face detector, its boxes framed as the training faces are; faces scoring
    /// below `min_score` are left out.
    Detect { min_score: f64 },
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputMeta {
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub scale: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputMeta {
    pub name: String,
    pub half: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CropMeta {
    pub from: String,
    pub margin: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CsvMeta {
    pub first: String,
    pub columns: Vec<String>,
}

type Plan = std::sync::Arc<TypedRunnableModel>;

pub struct Model {
    pub meta: Meta,
    graph: InferenceModel,
    /// One optimised plan per batch size (tract optimises for concrete shapes).
    plans: RefCell<HashMap<usize, Plan>>,
    detector: RefCell<Option<fkpnet_face::FaceDetector>>,
}

/// One face found in an image: the box it was cut out of, the detector's score if it
/// found it, and its keypoints `[x0, y0, ...]` in the image's pixels.
pub struct Face {
    pub crop: CropBox,
    pub score: Option<f64>,
    pub keypoints: Vec<f32>,
}

impl Model {
    /// Read an export, refusing a file that is not ONNX or not fkpnet's.
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| anyhow!("{}: not a readable ONNX model ({e})", path.display()))?;
        let meta = proto.metadata_props.iter().find(|p| p.key == "fkpnet").ok_or_else(|| {
            anyhow!(
                "{}: an ONNX model without fkpnet's metadata; fkpnet-infer runs what `fkpnet export RUN \
                     --format onnx` writes",
                path.display()
            )
        })?;
        let meta: Meta = serde_json::from_str(&meta.value)
            .with_context(|| format!("{}: its fkpnet metadata is not readable", path.display()))?;
        if meta.version != 1 {
            bail!(
                "{}: fkpnet metadata version {}; this fkpnet-infer reads version 1",
                path.display(),
                meta.version
            );
        }
        let graph = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| anyhow!("{}: tract cannot read this model ({e})", path.display()))?;
        if let Some(f) = &meta.framing {
            if f.detector != DETECTOR {
                bail!(
                    "{}: framed for the face detector {}, but this fkpnet-infer finds faces with {DETECTOR}: \
                     export the model again with this version of fkpnet",
                    path.display(),
                    f.detector
                );
            }
        }
        Ok(Model { meta, graph, plans: RefCell::new(HashMap::new()), detector: RefCell::new(None) })
    }

    fn plan(&self, n: usize) -> Result<Plan> {
        if let Some(p) = self.plans.borrow().get(&n) {
            return Ok(p.clone());
        }
        let i = &self.meta.input;
        let plan = self
            .graph
            .clone()
            .with_input_fact(0, f32::fact([n, i.channels, i.height, i.width]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("tract cannot plan this model for a batch of {n}: {e}"))?;
        self.plans.borrow_mut().insert(n, plan.clone());
        Ok(plan)
    }

    /// Faces already at the input size (`n` x C x H x W bytes, as fkpnet_face::cut
    /// gives them) -> keypoints in the faces' pixels, `n` x 2K.
    pub fn run(&self, pixels: &[u8], n: usize) -> Result<Vec<f32>> {
        let i = &self.meta.input;
        let data: Vec<f32> = pixels.iter().map(|&p| p as f32 * i.scale).collect();
        let x = tract_ndarray::Array4::from_shape_vec((n, i.channels, i.height, i.width), data)
            .map_err(|e| anyhow!("{e}"))?;
        let out = self.plan(n)?.run(tvec!(Tensor::from(x).into())).map_err(|e| anyhow!("tract: {e}"))?;
        let y = out[0].to_plain_array_view::<f32>().map_err(|e| anyhow!("{e}"))?;
        let h = self.meta.output.half;
        Ok(y.iter().map(|v| v * h + h).collect())
    }

    /// The boxes an image's faces are cut out of, and the detector's scores (none: the
    /// detector found no face).
    pub fn boxes(
        &self,
        name: &str,
        img: &image::DynamicImage,
        find: &Find,
    ) -> Result<Vec<(CropBox, Option<f64>)>> {
        let (width, height) = (img.width(), img.height());
        let crop = &self.meta.crop;
        match find {
            Find::Boxes(user) => user
                .iter()
                .map(|&b| {
                    let face = fkpnet_face::user_box(width, height, b, crop.margin);
                    Ok((face.map_err(|e| anyhow!("{name}: {e}"))?, None))
                })
                .collect(),
            Find::Whole => {
                // A model of whole images cuts it as it cut them (its margin).
                let margin = if crop.from == "whole" { crop.margin } else { 0.0 };
                Ok(vec![(fkpnet_face::whole(width, height, margin), None)])
            }
            Find::Detect { min_score } => {
                let Some(f) = &self.meta.framing else {
                    bail!(
                        "{name}: this export carries no framing for the faces a detector finds (fkpnet could \
                         not read the model's training data when it exported it): give the face's box with \
                         --box x,y,w,h, or --whole for an image that is already a cut-out face"
                    );
                };
                let framing = fkpnet_face::Framing { dx: f.dx, dy: f.dy, scale: f.scale };
                let mut det = self.detector.borrow_mut();
                let found: Vec<(CropBox, Option<f64>)> = det
                    .get_or_insert_with(fkpnet_face::FaceDetector::new)
                    .detect(img)
                    .into_iter()
                    .filter(|d| d.score >= *min_score)
                    .map(|d| (framing.crop(&d), Some(d.score)))
                    .collect();
                Ok(found)
            }
        }
    }

    /// Every face of an image (one per box), its keypoints in the image's pixels.
    pub fn predict(&self, name: &str, img: &image::DynamicImage, find: &Find) -> Result<Vec<Face>> {
        let i = &self.meta.input;
        let boxes = self.boxes(name, img, find)?;
        let mut pixels = Vec::new();
        for (b, _) in &boxes {
            pixels.extend(fkpnet_face::cut(img, b, i.width, i.channels));
        }
        let kp = self.run(&pixels, boxes.len())?;
        let t = 2 * self.meta.keypoints.len();
        Ok(boxes
            .iter()
            .enumerate()
            .map(|(k, (b, score))| Face {
                crop: *b,
                score: *score,
                keypoints: b.points_to_image(&kp[k * t..(k + 1) * t], i.width),
            })
            .collect())
    }

    /// fkpnet predict's CSV header.
    pub fn csv_header(&self) -> String {
        format!("{},{}", self.meta.csv.first, self.meta.csv.columns.join(","))
    }
}

/// `x,y,w,h` -> a box.
pub fn parse_box(s: &str) -> Result<[f32; 4]> {
    let v: Vec<f32> =
        s.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| {
            anyhow!("--box {s}: expected x,y,w,h in the image's pixels (e.g. --box 120,80,200,200)")
        })?;
    match v.as_slice() {
        [x, y, w, h] if *w > 0.0 && *h > 0.0 => Ok([*x, *y, *w, *h]),
        [_, _, _, _] => bail!("--box {s}: the width and height must be positive"),
        _ => bail!("--box {s}: expected four numbers x,y,w,h"),
    }
}
