//! `fkpnet predict` (keypoints for image files or Kaggle CSV rows), `fkpnet submit`
//! (Kaggle's submission format) and `fkpnet extract` (a CSV's faces as PNG files).

use super::draw;
use super::model::Ensemble;
use crate::data::{kaggle, target_columns, Faces, KeypointSet, SIDE, TARGETS};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One predicted face: where it came from and its 30 coordinates in its own pixels.
pub struct Prediction {
    pub input: String,
    pub keypoints: Vec<f32>,
    /// The image the coordinates refer to, for drawing.
    image: image::RgbImage,
    stem: String,
}

fn is_csv(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Grey, resized to 96x96 for the net; coordinates map back by the size ratio.
fn load_image(p: &Path) -> Result<(Vec<u8>, image::RgbImage)> {
    let img = image::ImageReader::open(p)
        .with_context(|| format!("cannot open {}", p.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", p.display()))?
        .decode()
        .map_err(|e| anyhow!("{}: not a readable image ({e})", p.display()))?;
    if img.width() == 0 || img.height() == 0 {
        bail!("{}: empty image", p.display());
    }
    let grey = img.to_luma8();
    let small =
        image::imageops::resize(&grey, SIDE as u32, SIDE as u32, image::imageops::FilterType::Triangle);
    Ok((small.into_raw(), image::DynamicImage::ImageLuma8(grey).to_rgb8()))
}

pub fn predict(model: &Ensemble, inputs: &[PathBuf]) -> Result<Vec<Prediction>> {
    let mut out = Vec::new();
    for p in inputs {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("input").to_string();
        if is_csv(p) {
            let t = kaggle::read(p)?;
            let kp = model.predict_px(&t.faces);
            for (i, id) in t.ids.iter().enumerate() {
                out.push(Prediction {
                    input: format!("{}#{id}", p.display()),
                    keypoints: kp[i * TARGETS..(i + 1) * TARGETS].to_vec(),
                    image: draw::face_image(t.faces.image(i), t.faces.shape),
                    stem: format!("{stem}_{id}"),
                });
            }
        } else {
            let (pixels, image) = load_image(p)?;
            let faces = Faces { pixels, keypoints: vec![f32::NAN; TARGETS], ..Faces::kaggle() };
            let (sx, sy) = (image.width() as f32 / SIDE as f32, image.height() as f32 / SIDE as f32);
            let kp: Vec<f32> = model
                .predict_px(&faces)
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 2 == 0 { v * sx } else { v * sy })
                .collect();
            out.push(Prediction { input: p.display().to_string(), keypoints: kp, image, stem });
        }
    }
    Ok(out)
}

pub fn to_csv(preds: &[Prediction]) -> String {
    let mut s = format!("input,{}\n", target_columns().join(","));
    for p in preds {
        let vals: Vec<String> = p.keypoints.iter().map(|v| format!("{v:.2}")).collect();
        s += &format!("{},{}\n", csv_field(&p.input), vals.join(","));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn to_json(preds: &[Prediction], set: &KeypointSet) -> String {
    let items: Vec<serde_json::Value> = preds
        .iter()
        .map(|p| {
            let kps: serde_json::Map<String, serde_json::Value> = set
                .names
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    (n.to_string(), serde_json::json!([p.keypoints[2 * k], p.keypoints[2 * k + 1]]))
                })
                .collect();
            serde_json::json!({"input": p.input, "keypoints": kps})
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("plain data") + "\n"
}

/// One output file name per prediction, all distinct: the input's stem (`face.png` ->
/// `face`), or where two inputs share a stem (`a/1.png`, `b/1.png`) their paths with
/// `/` as `_` (`a_1`, `b_1`), numbered if even those are equal (the same file twice).
fn distinct_stems(preds: &[Prediction]) -> Vec<String> {
    let count = |names: &[String], n: &str| names.iter().filter(|m| *m == n).count();
    let stems: Vec<String> = preds.iter().map(|p| p.stem.clone()).collect();
    let named: Vec<String> = preds
        .iter()
        .zip(&stems)
        .map(|(p, s)| if count(&stems, s) > 1 { path_stem(&p.input) } else { s.clone() })
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    named
        .iter()
        .map(|n| {
            let k = seen.entry(n).or_insert(0);
            *k += 1;
            if count(&named, n) > 1 {
                format!("{n}_{k}")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// `./a/b/1.png` -> `a_b_1`, `x/test.csv#7` -> `x_test_7`: a file name from a whole input.
fn path_stem(input: &str) -> String {
    let (file, row) = input.split_once('#').map_or((input, None), |(f, r)| (f, Some(r)));
    let p = Path::new(file).with_extension("");
    let mut parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts.extend(row.map(str::to_string));
    parts.join("_")
}

/// Write each prediction's image with its keypoints drawn into `dir`, one file per
/// prediction; files already there are refused unless `force`, before any is written.
pub fn draw_all(preds: &[Prediction], set: &KeypointSet, dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = distinct_stems(preds).iter().map(|s| dir.join(format!("{s}.png"))).collect();
    for p in &paths {
        crate::run::check_new_output(p, force)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (p, path) in preds.iter().zip(&paths) {
        let mut img = p.image.clone();
        draw::keypoints(&mut img, &p.keypoints, set);
        img.save(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(paths)
}

/// Kaggle's submission: `RowId,Location` for every IdLookupTable row, clipped to [0, 96].
pub fn submit(model: &Ensemble, test_csv: &Path, lookup: &Path) -> Result<String> {
    let t = kaggle::read(test_csv)?;
    let kp = model.predict_px(&t.faces);
    let row_of: HashMap<&str, usize> = t.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let cols = target_columns();
    let col_of: HashMap<&str, usize> = cols.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let file = lookup.display();
    let mut rdr = csv::Reader::from_path(lookup).with_context(|| format!("cannot open {file}"))?;
    let header = rdr.headers().with_context(|| format!("{file}: cannot read the header"))?.clone();
    let idx = |n: &str| {
        header.iter().position(|h| h == n).ok_or_else(|| {
            anyhow!(
                "{file}: no `{n}` column; Kaggle's IdLookupTable.csv has RowId,ImageId,FeatureName,Location"
            )
        })
    };
    let (ri, ii, fi) = (idx("RowId")?, idx("ImageId")?, idx("FeatureName")?);
    let mut out = String::from("RowId,Location\n");
    for rec in rdr.records() {
        let rec = rec.map_err(|e| anyhow!("{file}: {e}"))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let image = rec.get(ii).unwrap_or("");
        let feature = rec.get(fi).unwrap_or("");
        let r = *row_of.get(image).ok_or_else(|| {
            anyhow!("{file}:{line}: ImageId {image} is not in {} ({} faces)", test_csv.display(), t.ids.len())
        })?;
        let c = *col_of.get(feature).ok_or_else(|| {
            anyhow!("{file}:{line}: unknown FeatureName `{feature}` (expected e.g. left_eye_center_x)")
        })?;
        out += &format!("{},{:.4}\n", rec.get(ri).unwrap_or(""), kp[r * TARGETS + c].clamp(0.0, 96.0));
    }
    Ok(out)
}

/// `fkpnet extract`: faces as PNG files as the net sees them, optionally with their
/// labels drawn: a Kaggle CSV's, `synthetic` (the built-in generator's), or a solver
/// file's data (cut out and resized as its `data.crop` says; train faces, then val).
/// With `augment`, the faces are first augmented as a training batch would be.
pub fn extract(
    input: &Path,
    dir: &Path,
    draw_labels: bool,
    limit: Option<usize>,
    augment: Option<&crate::data::augment::Augment>,
    force: bool,
) -> Result<usize> {
    let is_yaml = input.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let (mut faces, ids, labelled, spec) = if is_yaml {
        let r = crate::config::load_solver(input, &[])?;
        let spec = crate::data::spec(&r.solver.data, &r.net)?;
        let split = crate::data::load(&r.solver.data, &spec)?;
        let mut all = split.train.clone();
        all.pixels.extend(&split.val.pixels);
        all.keypoints.extend(&split.val.keypoints);
        all.sources.extend(split.val.sources.iter().cloned());
        let ids = match all.sources.is_empty() {
            true => (1..=all.len()).map(|i| i.to_string()).collect(),
            false => all.sources.iter().map(|s| path_stem(&s.name)).collect(),
        };
        (all, ids, true, spec)
    } else if input == Path::new("synthetic") {
        let faces = crate::data::synthetic::generate(limit.unwrap_or(16), 0);
        let ids = (1..=faces.len()).map(|i| i.to_string()).collect();
        (faces, ids, true, crate::data::Spec::kaggle())
    } else {
        let t = kaggle::read(input)?;
        (t.faces, t.ids, t.labelled, crate::data::Spec::kaggle())
    };
    if draw_labels && !labelled {
        bail!("{}: no keypoint columns to draw (--draw needs a labelled CSV)", input.display());
    }
    let n = limit.unwrap_or(usize::MAX).min(ids.len());
    let paths: Vec<PathBuf> = ids[..n].iter().map(|id| dir.join(format!("{id}.png"))).collect();
    for p in &paths {
        crate::run::check_new_output(p, force)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    faces = faces.select(&(0..n).collect::<Vec<_>>());
    if let Some(a) = augment {
        tch::manual_seed(0);
        let (x, y) = faces.to_tensors(tch::Device::Cpu);
        let (x, y) = a.apply(&x, &y, &spec);
        let px = (x * 255.0).round().clamp(0.0, 255.0).to_kind(tch::Kind::Uint8).flatten(0, -1);
        faces.pixels = Vec::<u8>::try_from(&px)?;
        let half = spec.half();
        faces.keypoints = Vec::<f32>::try_from((y * half + half).flatten(0, -1))?;
    }
    for (i, path) in paths.iter().enumerate() {
        let mut img = draw::face_image(faces.image(i), faces.shape);
        if draw_labels {
            draw::keypoints(&mut img, faces.points(i), &spec.keypoints);
        }
        img.save(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(n)
}
