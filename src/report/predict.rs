//! `fkpnet predict`: keypoints for image files, folders of them (recursively) or the
//! rows of Kaggle CSVs, in each original image's pixels. Each face is cut out as the
//! model was trained (`data.crop`), or from the box the user gives; the keypoints are
//! mapped back through the same box.

use super::draw;
use super::model::Ensemble;
use crate::config::solver::{CropConfig, CropFrom};
use crate::data::crop::{self, CropBox};
use crate::data::{kaggle, DataFormat, Faces, KeypointSet, Spec};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One predicted face: where it came from and its keypoints in its image's pixels.
pub struct Prediction {
    /// The image (its path as given, or relative to the folder given) or `CSV#id`.
    pub input: String,
    pub keypoints: Vec<f32>,
    /// The box the face was cut out of (None for a Kaggle CSV row, already cut out).
    pub crop: Option<CropBox>,
    /// Whether a drawing shows the box (a face box, not the whole image).
    show_box: bool,
    /// The image the coordinates refer to, for drawing.
    image: image::RgbImage,
    /// Output file names: the short one (`face`), and the whole input's path parts
    /// (`a`, `b`, `face`) for when two inputs share the short one.
    stem: String,
    parts: Vec<String>,
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

fn is_csv(p: &Path) -> bool {
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
fn images_in(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
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

/// The box a face is cut out of: the model's own crop, or the user's box treated as
/// the face's box (grown by the model's margin).
fn face_boxes(
    spec: &Spec,
    img: &image::DynamicImage,
    name: &str,
    user: Option<Vec<[f32; 4]>>,
) -> Result<Vec<CropBox>> {
    let (w, h) = (img.width(), img.height());
    let Some(user) = user else {
        if spec.crop.from != CropFrom::Whole {
            bail!(
                "{name}: this model was trained on faces cut out of their images (data.crop.from: {}), so a \
                 whole photo would not look like its faces: the face must be cropped or boxed. Give --box \
                 x,y,w,h or --boxes CSV (image,x,y,w,h per face)",
                format!("{:?}", spec.crop.from).to_lowercase()
            );
        }
        return Ok(vec![crop::crop_box(&spec.crop, w, h, &[], None).map_err(|e| anyhow!("{name}: {e}"))?]);
    };
    user.into_iter()
        .map(|b @ [x, y, bw, bh]| {
            if x >= w as f32 || y >= h as f32 || x + bw <= 0.0 || y + bh <= 0.0 {
                bail!("{name}: the box {x},{y},{bw},{bh} lies outside the {w}x{h} image");
            }
            let cfg = CropConfig { from: CropFrom::Box, margin: spec.crop.margin };
            crop::crop_box(&cfg, w, h, &[], Some(b)).map_err(|e| anyhow!("{name}: {e}"))
        })
        .collect()
}

pub fn predict(model: &Ensemble, inputs: &[PathBuf], boxes: &Boxes) -> Result<Vec<Prediction>> {
    let spec = model.spec();
    let mut out = Vec::new();
    for p in inputs {
        if is_csv(p) {
            // Kaggle's and Caffe's HDF5 faces are both the net's input, already cut out.
            if !matches!(spec.format, DataFormat::Kaggle | DataFormat::Hdf5) {
                bail!("{}: a CSV is read as Kaggle faces, but this model takes {} faces cut from images: give the images or their folder", p.display(), format!("{:?}", spec.format).to_lowercase());
            }
            out.extend(kaggle_rows(model, p)?);
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
            for b in face_boxes(spec, &img, &name, boxes.of(&name, &path))? {
                faces.pixels.extend(crop::cut(&img, &b, spec.width, spec.channels));
                faces.keypoints.extend(std::iter::repeat_n(f32::NAN, spec.targets()));
                pending.push((name.clone(), b, img.to_rgb8()));
            }
        }
        let kp = model.predict_px(&faces);
        let t = spec.targets();
        let faces_of = |name: &str| pending.iter().filter(|(n, _, _)| n == name).count();
        let mut nth: HashMap<&str, usize> = HashMap::new();
        for (i, (name, b, image)) in pending.iter().enumerate() {
            // Several faces in one photo: name_face1, name_face2, ...
            let suffix = match faces_of(name) {
                1 => String::new(),
                _ => {
                    let k = nth.entry(name).or_insert(0);
                    *k += 1;
                    format!("_face{k}")
                }
            };
            let short =
                Path::new(name).file_stem().map_or("input".into(), |s| s.to_string_lossy().into_owned());
            out.push(Prediction {
                input: name.clone(),
                keypoints: b.points_to_image(&kp[i * t..(i + 1) * t], spec.width),
                crop: Some(*b),
                show_box: boxes.of(name, Path::new(name)).is_some() || spec.crop.from != CropFrom::Whole,
                image: image.clone(),
                stem: short + &suffix,
                parts: with_suffix(path_parts(name), &suffix),
            });
        }
    }
    Ok(out)
}

/// Kaggle CSV rows: faces already cut out at the model's input size.
fn kaggle_rows(model: &Ensemble, p: &Path) -> Result<Vec<Prediction>> {
    let t = kaggle::read(p)?;
    let kp = model.predict_px(&t.faces);
    let n = model.spec().targets();
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("input").to_string();
    Ok(t.ids
        .iter()
        .enumerate()
        .map(|(i, id)| Prediction {
            input: format!("{}#{id}", p.display()),
            keypoints: kp[i * n..(i + 1) * n].to_vec(),
            crop: None,
            show_box: false,
            image: draw::face_image(t.faces.image(i), t.faces.shape),
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

/// A list of faces: the input, the box it was cut out of (x, y, w, h) and its
/// keypoints by name, in the set's order.
/// A pixel position as the CSV prints it: to 0.01 px (f32's 60.52939987182617 is
/// noise past that).
fn px(v: f32) -> f64 {
    (v as f64 * 100.0).round() / 100.0
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
                    (n.clone(), serde_json::json!([px(p.keypoints[2 * k]), px(p.keypoints[2 * k + 1])]))
                })
                .collect();
            let mut item = serde_json::json!({"input": p.input});
            if let Some(b) = p.crop {
                item["box"] = serde_json::json!([b.left, b.top, b.side, b.side]);
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
fn distinct_stems(preds: &[Prediction]) -> Vec<String> {
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

fn with_suffix(mut parts: Vec<String>, suffix: &str) -> Vec<String> {
    if let Some(last) = parts.last_mut() {
        last.push_str(suffix);
    }
    parts
}

/// `./a/b/1.png` -> `a_b_1`, `x/test.csv#7` -> `x_test_7`: a file name from a whole input.
pub fn path_stem(input: &str) -> String {
    path_parts(input).join("_")
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
        if let (Some(b), true) = (p.crop, p.show_box) {
            draw::square(&mut img, b.left, b.top, b.side);
        }
        draw::keypoints(&mut img, &p.keypoints, set);
        img.save(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(paths)
}
