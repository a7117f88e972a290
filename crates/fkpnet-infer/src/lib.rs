//! An fkpnet ONNX export (`fkpnet export RUN --format onnx`) run by tract: faces cut
//! out of photos as the net was trained (fkpnet_face), keypoints mapped back into the
//! photo's pixels. No libtorch anywhere in this crate's dependency tree.

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
}

/// One face found in an image: the box it was cut out of and its keypoints
/// `[x0, y0, ...]` in the image's pixels.
pub struct Face {
    pub crop: CropBox,
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
        Ok(Model { meta, graph, plans: RefCell::new(HashMap::new()) })
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

    /// The boxes faces are cut out of: the whole photo for a model trained on whole
    /// images, else the user's boxes (a model trained on cut-out faces needs them).
    pub fn boxes(
        &self,
        name: &str,
        width: u32,
        height: u32,
        user: Option<&[[f32; 4]]>,
    ) -> Result<Vec<CropBox>> {
        let margin = self.meta.crop.margin;
        let Some(user) = user else {
            if self.meta.crop.from != "whole" {
                bail!(
                    "{name}: this model was trained on faces cut out of their images (crop from: {}), so a \
                     whole photo would not look like its faces: give --box x,y,w,h",
                    self.meta.crop.from
                );
            }
            return Ok(vec![fkpnet_face::whole(width, height, margin)]);
        };
        user.iter()
            .map(|&b @ [x, y, bw, bh]| {
                if x >= width as f32 || y >= height as f32 || x + bw <= 0.0 || y + bh <= 0.0 {
                    bail!("{name}: the box {x},{y},{bw},{bh} lies outside the {width}x{height} image");
                }
                fkpnet_face::of_box(b, margin).map_err(|e| anyhow!("{name}: {e}"))
            })
            .collect()
    }

    /// Every face of an image (one per box), its keypoints in the image's pixels.
    pub fn predict(
        &self,
        name: &str,
        img: &image::DynamicImage,
        user: Option<&[[f32; 4]]>,
    ) -> Result<Vec<Face>> {
        let i = &self.meta.input;
        let boxes = self.boxes(name, img.width(), img.height(), user)?;
        let mut pixels = Vec::new();
        for b in &boxes {
            pixels.extend(fkpnet_face::cut(img, b, i.width, i.channels));
        }
        let kp = self.run(&pixels, boxes.len())?;
        let t = 2 * self.meta.keypoints.len();
        Ok(boxes
            .iter()
            .enumerate()
            .map(|(k, b)| Face { crop: *b, keypoints: b.points_to_image(&kp[k * t..(k + 1) * t], i.width) })
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
