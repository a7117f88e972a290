//! `fkpnet predict`: keypoints for image files, folders of them (recursively) or the
//! rows of Kaggle CSVs, in each original image's pixels. The faces of a photo are found
//! by the face detector and each is cut out as the model's training faces were (its
//! framing, `data::framing`), or from the boxes the user gives, or the whole image is
//! the face (`--whole`); the keypoints are mapped back through the same box.

use super::draw;
use super::model::Ensemble;
use crate::data::crop::{self, CropBox};
use crate::data::{kaggle, DataFormat, Faces, KeypointSet, Spec};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod find;
use find::{images_in, is_csv, report_missed};
pub use find::{Boxes, Finder, MIN_SCORE};

/// One predicted face: where it came from and its keypoints in its image's pixels.
pub struct Prediction {
    /// The image (its path as given, or relative to the folder given) or `CSV#id`.
    pub input: String,
    pub keypoints: Vec<f32>,
    /// The box the face was cut out of (None for a Kaggle CSV row, already cut out).
    pub crop: Option<CropBox>,
    /// The detector's score, for a face it found.
    pub score: Option<f64>,
    /// Whether a drawing shows the box (a face box, not the whole image).
    show_box: bool,
    /// Which image of the command line this face is in (several faces: one drawing).
    image_index: usize,
    /// The image the coordinates refer to, for drawing.
    image: std::rc::Rc<image::RgbImage>,
    /// Output file names: the short one (`face`), and the whole input's path parts
    /// (`a`, `b`, `face`) for when two inputs share the short one.
    stem: String,
    parts: Vec<String>,
}

pub fn predict(model: &Ensemble, inputs: &[PathBuf], finder: &Finder) -> Result<Vec<Prediction>> {
    let spec = model.spec();
    let mut out = Vec::new();
    let mut detect = None;
    let mut images = 0;
    let mut missed = Vec::new();
    let mut files_read = 0;
    for p in inputs {
        if is_csv(p) {
            // Kaggle's and Caffe's HDF5 faces are both the net's input, already cut out.
            if !matches!(spec.format, DataFormat::Kaggle | DataFormat::Hdf5) {
                bail!("{}: a CSV is read as Kaggle faces, but this model takes {} faces cut from images: give the images or their folder", p.display(), crate::config::name_of(&spec.format));
            }
            out.extend(kaggle_rows(model, p, &mut images)?);
            continue;
        }
        if !p.exists() {
            bail!("{}: no such file or folder", p.display());
        }
        let files = if p.is_dir() {
            let found = images_in(p)?;
            if found.is_empty() {
                bail!("{}: no image files in this folder (JPEG or PNG, found by their content)", p.display());
            }
            found
        } else {
            vec![(p.clone(), p.display().to_string())]
        };
        let mut faces = Faces::empty([spec.channels, spec.height, spec.width], spec.targets());
        let mut pending = Vec::new();
        for (path, name) in files {
            let img = crop::open(&path)?;
            let rgb = std::rc::Rc::new(img.to_rgb8());
            let found = finder.faces(model, &mut detect, &img, &name, &path)?;
            files_read += 1;
            if found.is_empty() {
                missed.push(name.clone());
            }
            for f in found {
                faces.pixels.extend(crop::cut(&img, &f.crop, spec.width, spec.channels));
                faces.keypoints.extend(std::iter::repeat_n(f32::NAN, spec.targets()));
                pending.push((name.clone(), f, rgb.clone(), images));
            }
            images += 1;
        }
        let kp = model.predict_px(&faces);
        let t = spec.targets();
        for (i, (name, f, image, image_index)) in pending.into_iter().enumerate() {
            let stem =
                Path::new(&name).file_stem().map_or("input".into(), |s| s.to_string_lossy().into_owned());
            out.push(Prediction {
                keypoints: f.crop.points_to_image(&kp[i * t..(i + 1) * t], spec.width),
                crop: Some(f.crop),
                score: f.score,
                show_box: f.show_box,
                image_index,
                image,
                stem,
                parts: path_parts(&name),
                input: name,
            });
        }
    }
    report_missed(&missed, files_read, !out.is_empty(), finder.min_score)?;
    Ok(out)
}

/// Kaggle CSV rows: faces already cut out at the model's input size.
fn kaggle_rows(model: &Ensemble, p: &Path, images: &mut usize) -> Result<Vec<Prediction>> {
    let t = kaggle::read(p)?;
    let kp = model.predict_px(&t.faces);
    let n = model.spec().targets();
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("input").to_string();
    let first = *images;
    *images += t.ids.len();
    Ok(t.ids
        .iter()
        .enumerate()
        .map(|(i, id)| Prediction {
            input: format!("{}#{id}", p.display()),
            keypoints: kp[i * n..(i + 1) * n].to_vec(),
            crop: None,
            score: None,
            show_box: false,
            image_index: first + i,
            image: std::rc::Rc::new(draw::face_image(t.faces.image(i), t.faces.shape)),
            stem: format!("{stem}_{id}"),
            parts: path_parts(&format!("{}#{id}", p.display())),
        })
        .collect())
}

/// One row per face: Kaggle's columns (`input,left_eye_center_x,...`) for Kaggle
/// models, the image dataset's own layout (`image,x0,y0,...`) otherwise.
pub fn to_csv(preds: &[Prediction], spec: &Spec) -> String {
    let mut s = match spec.format {
        DataFormat::Kaggle => format!("input,{}\n", spec.target_columns().join(",")),
        _ => {
            let cols: Vec<String> = (0..spec.keypoints.len()).map(|k| format!("x{k},y{k}")).collect();
            format!("image,{}\n", cols.join(","))
        }
    };
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

/// A pixel position as the CSV prints it: to 0.01 px (f32's 60.52939987182617 is
/// noise past that).
fn px(v: f32) -> f64 {
    (v as f64 * 100.0).round() / 100.0
}

/// A list of faces: the input, the box it was cut out of (x, y, w, h), the detector's
/// score and the keypoints by name, in the set's order.
pub fn to_json(preds: &[Prediction], set: &KeypointSet) -> String {
    let items: Vec<serde_json::Value> = preds
        .iter()
        .map(|p| {
            let kps: serde_json::Map<String, serde_json::Value> = set
                .names
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    (n.clone(), serde_json::json!([px(p.keypoints[2 * k]), px(p.keypoints[2 * k + 1])]))
                })
                .collect();
            let mut item = serde_json::json!({"input": p.input});
            if let Some(b) = p.crop {
                item["box"] = serde_json::json!([b.left, b.top, b.side, b.side]);
            }
            if let Some(score) = p.score {
                item["face_score"] = serde_json::json!(px(score as f32));
            }
            item["keypoints"] = serde_json::Value::Object(kps);
            item
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("plain data") + "\n"
}

/// One output file name per prediction, all distinct: the input's stem (`face.png` ->
/// `face`), or where several inputs share a stem (`x/a/1.png`, `x/b/1.png`) as many
/// of their last path parts as tell them apart, joined by `_` (`a_1`, `b_1`), numbered
/// if even the whole paths are equal (the same file twice).
fn distinct_stems(preds: &[&Prediction]) -> Vec<String> {
    let count = |names: &[String], n: &str| names.iter().filter(|m| *m == n).count();
    let stems: Vec<String> = preds.iter().map(|p| p.stem.clone()).collect();
    let parts: Vec<&Vec<String>> = preds.iter().map(|p| &p.parts).collect();
    let suffix = |i: usize, d: usize| parts[i][parts[i].len().saturating_sub(d)..].join("_");
    let named: Vec<String> = (0..preds.len())
        .map(|i| {
            let group: Vec<usize> = (0..preds.len()).filter(|&j| stems[j] == stems[i]).collect();
            if group.len() == 1 {
                return stems[i].clone();
            }
            // The fewest trailing parts that tell the group apart (or all of them).
            let most = group.iter().map(|&j| parts[j].len()).max().unwrap_or(1);
            let d = (2..=most)
                .find(|&d| {
                    let names: Vec<String> = group.iter().map(|&j| suffix(j, d)).collect();
                    names.iter().all(|n| count(&names, n) == 1)
                })
                .unwrap_or(most);
            suffix(i, d)
        })
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

/// `./a/b/1.png` -> [a, b, 1], `x/test.csv#7` -> [x, test, 7]: an input's path parts.
fn path_parts(input: &str) -> Vec<String> {
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
    parts
}

/// `./a/b/1.png` -> `a_b_1`, `x/test.csv#7` -> `x_test_7`: a file name from a whole input.
pub fn path_stem(input: &str) -> String {
    path_parts(input).join("_")
}

/// Write each image with its faces' keypoints (and boxes) drawn into `dir`, one file
/// per image; files already there are refused unless `force`, before any is written.
pub fn draw_all(preds: &[Prediction], set: &KeypointSet, dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    // One drawing per image: its faces are consecutive predictions.
    let groups: Vec<&[Prediction]> = preds.chunk_by(|a, b| a.image_index == b.image_index).collect();
    let firsts: Vec<&Prediction> = groups.iter().map(|g| &g[0]).collect();
    let paths: Vec<PathBuf> = distinct_stems(&firsts).iter().map(|s| dir.join(format!("{s}.png"))).collect();
    for p in &paths {
        crate::run::check_new_output(p, force)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (faces, path) in groups.iter().zip(&paths) {
        let mut img = (*faces[0].image).clone();
        for p in *faces {
            if let (Some(b), true) = (p.crop, p.show_box) {
                draw::square(&mut img, b.left, b.top, b.side);
            }
            let face = p.crop.map_or(img.width().min(img.height()) as f32, |b| b.side as f32);
            draw::keypoints(&mut img, &p.keypoints, set, face);
        }
        img.save(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(paths)
}
