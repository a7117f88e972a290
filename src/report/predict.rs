//! `fkpnet predict`: keypoints for image files, folders of them (recursively) or the
//! rows of Kaggle CSVs, in each original image's pixels. The faces of a photo are found
//! by the face detector and each is cut out as the model's training faces were (its
//! framing, `data::framing`), or from the boxes the user gives, or the whole image is
//! the face (`--whole`); the keypoints are mapped back through the same box.

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

/// How the faces of an image file are found: the user's boxes for the images they
/// name, else the whole image (`--whole`), else the face detector, its boxes framed as
/// the model's training faces (`data::framing`).
pub struct Finder {
    pub boxes: Boxes,
    pub whole: bool,
    /// The detector's least score for a face (`--min-score`).
    pub min_score: f64,
}

/// SeetaFace's own demo threshold: on the training frames of ../shared/data/landmarks68
/// it keeps 99% of the faces, with 16 other detections in 3,593 frames.
pub const MIN_SCORE: f64 = 2.0;

/// A face to cut out: its box, the detector's score if it found it, and whether a
/// drawing shows the box.
struct Found {
    crop: CropBox,
    score: Option<f64>,
    show_box: bool,
}

/// The detector and the model's framing, made on the first image that needs them.
struct Detect {
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

impl Finder {
    /// The faces of one image (none: the detector found none).
    fn faces(
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

/// What a user can do about images without a face found.
fn no_face_hint(min_score: f64) -> String {
    format!(
        "SeetaFace's frontal face detector, faces of {} px and more, score {min_score} or more: --min-score \
         lowers it. Give a face's box with --box x,y,w,h or --boxes CSV, or --whole for images that are \
         already faces cut out as the model's training faces are",
        fkpnet_face::MIN_FACE
    )
}

/// Images without a face found: an error where no image had one, else a warning
/// (a folder of photos keeps the faces it has).
fn report_missed(missed: &[String], images: usize, any_face: bool, min_score: f64) -> Result<()> {
    if missed.is_empty() {
        return Ok(());
    }
    let hint = no_face_hint(min_score);
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
fn user_box(spec: &Spec, name: &str, w: u32, h: u32, b @ [x, y, bw, bh]: [f32; 4]) -> Result<Found> {
    if x >= w as f32 || y >= h as f32 || x + bw <= 0.0 || y + bh <= 0.0 {
        bail!("{name}: the box {x},{y},{bw},{bh} lies outside the {w}x{h} image");
    }
    let cfg = CropConfig { from: CropFrom::Box, margin: spec.crop.margin };
    let crop = crop::crop_box(&cfg, w, h, &[], Some(b)).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Found { crop, score: None, show_box: true })
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
                bail!("{}: a CSV is read as Kaggle faces, but this model takes {} faces cut from images: give the images or their folder", p.display(), format!("{:?}", spec.format).to_lowercase());
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
