//! The field's annotation formats, read into one shape: per face, its image file,
//! its keypoints in that image's 0-based pixels (NaN = not annotated) and, where the
//! format has one, its face box.
//!
//! - `csv`: an image-path column and 2K coordinate columns `x0, y0, x1, y1, ...`
//!   (Udacity's `image,x0,y0,...`; HRNet's `image_name,scale,center_w,center_h,...`
//!   with its box as centre and scale, side = 200 x scale, as HRNet and MMPose read it).
//! - `pts`: 300-W's files, one `NAME.pts` beside each image under a folder: `version:
//!   1`, `n_points: K`, then `x y` per line between `{` and `}`, 1-based (the top-left
//!   pixel is (1, 1)), so 1 is subtracted.
//! - `coco`: COCO keypoints JSON: `images` (id, file_name), `annotations` (image_id,
//!   `keypoints` as [x, y, v] x K with v = 0 not labelled, `bbox` [x, y, w, h]).

use super::DataFormat;
use crate::config::solver::Columns;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// One annotated face.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The image file.
    pub path: PathBuf,
    /// Its name as the annotation gives it (relative to the images folder): the key
    /// `split_group` matches and predictions are written under.
    pub name: String,
    /// 2K values, x then y per keypoint, in the image's 0-based pixels; NaN = missing.
    pub points: Vec<f32>,
    /// The face box `[x, y, w, h]` in pixels, where the format gives one.
    pub bbox: Option<[f32; 4]>,
    /// Where in the annotation file it came from (`file:line`), for errors.
    pub origin: String,
}

/// Read the annotations of `source` (a file, or for `pts` a folder) with `k` keypoints.
/// Relative image paths start at `images` (default: the annotation file's folder).
pub fn read(
    format: DataFormat,
    source: &Path,
    images: Option<&Path>,
    columns: &Columns,
    k: usize,
) -> Result<Vec<Annotation>> {
    if !source.exists() {
        bail!("data file {} does not exist", source.display());
    }
    let root = match images {
        Some(d) => d.to_path_buf(),
        None if format == DataFormat::Pts => source.to_path_buf(),
        None => source.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let faces = match format {
        DataFormat::Csv => read_csv(source, &root, columns, k)?,
        DataFormat::Pts => read_pts_dir(source, &root, k)?,
        DataFormat::Coco => read_coco(source, &root, k)?,
        DataFormat::Kaggle | DataFormat::Hdf5 => bail!(
            "Kaggle CSVs and HDF5 files hold their faces' pixels; data::kaggle and data::hdf5 read them"
        ),
    };
    if faces.is_empty() {
        bail!("{}: no annotated faces", source.display());
    }
    Ok(faces)
}

fn read_csv(file: &Path, root: &Path, columns: &Columns, k: usize) -> Result<Vec<Annotation>> {
    let f = file.display();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(file)
        .with_context(|| format!("cannot open {f}"))?;
    let header = rdr.headers().with_context(|| format!("{f}: cannot read the header"))?.clone();
    let col = |name: &str, what: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            anyhow!(
                "{f}: no `{name}` column ({what}); the header has: {}",
                header.iter().collect::<Vec<_>>().join(",")
            )
        })
    };
    let image = col(&columns.image, "data.columns.image")?;
    let first = match &columns.first {
        Some(c) => col(c, "data.columns.first")?,
        None => image + 1,
    };
    let want = first + 2 * k;
    if header.len() < want {
        bail!(
            "{f}: {} coordinate columns from column {} on, but {k} keypoints need {} (x, y each); \
             set data.columns.first to the first x column, or data.keypoints to the file's set",
            header.len().saturating_sub(first),
            first + 1,
            2 * k
        );
    }
    let boxcols = match (&columns.center, &columns.scale) {
        (Some([cx, cy]), Some(s)) => Some((
            col(cx, "data.columns.center")?,
            col(cy, "data.columns.center")?,
            col(s, "data.columns.scale")?,
        )),
        (None, None) => None,
        _ => bail!("data.columns: `center` and `scale` (HRNet's box) go together"),
    };
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| anyhow!("{f}: {e}"))?;
        let line = rec.position().map_or(0, |p| p.line());
        let at = format!("{f}:{line}");
        if rec.len() != header.len() {
            bail!(
                "{at}: {} values, but the header has {} columns ({} coordinate values from column {} on, {k} keypoints need {})",
                rec.len(),
                header.len(),
                rec.len().saturating_sub(first),
                first + 1,
                2 * k
            );
        }
        let num = |c: usize| -> Result<f32> {
            let s = rec.get(c).unwrap_or("").trim();
            if s.is_empty() {
                return Ok(f32::NAN);
            }
            s.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                anyhow!("{at}: column {}: `{s}` is not a number (blank means missing)", &header[c])
            })
        };
        let points = (first..want).map(num).collect::<Result<Vec<f32>>>()?;
        let bbox = match boxcols {
            Some((cx, cy, s)) => {
                let (cx, cy, side) = (num(cx)?, num(cy)?, num(s)? * 200.0);
                Some([cx - side / 2.0, cy - side / 2.0, side, side])
            }
            None => None,
        };
        let name = rec.get(image).unwrap_or("").trim().to_string();
        if name.is_empty() {
            bail!("{at}: column {}: no image path", &header[image]);
        }
        out.push(Annotation { path: root.join(&name), name, points, bbox, origin: at });
    }
    Ok(out)
}

/// Every `.pts` file under `dir` (recursively, sorted by path), each with the image
/// file of the same name beside it.
fn read_pts_dir(dir: &Path, root: &Path, k: usize) -> Result<Vec<Annotation>> {
    if !dir.is_dir() {
        bail!("{}: format pts reads a folder of images with a .pts file beside each", dir.display());
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let is_pts = |p: &PathBuf| p.extension().is_some_and(|e| e == "pts");
    // Any other file of the same name is the image (read by its content, whatever its extension).
    let images: std::collections::HashMap<PathBuf, &PathBuf> =
        files.iter().filter(|p| !is_pts(p)).map(|p| (p.with_extension(""), p)).collect();
    let mut out = Vec::new();
    for pts in files.iter().filter(|p| is_pts(p)) {
        let image = images
            .get(&pts.with_extension(""))
            .ok_or_else(|| anyhow!("{}: no image file of the same name beside it", pts.display()))?;
        let name = image.strip_prefix(root).unwrap_or(image).to_string_lossy().replace('\\', "/");
        let points = read_pts(pts, k)?;
        out.push(Annotation {
            path: image.to_path_buf(),
            name,
            points,
            bbox: None,
            origin: pts.display().to_string(),
        });
    }
    Ok(out)
}

/// Every file under `dir`, recursively (unsorted).
pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// One `.pts` file's points, 0-based.
pub fn read_pts(path: &Path, k: usize) -> Result<Vec<f32>> {
    let f = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {f}"))?;
    let mut n_points = None;
    let mut points = Vec::new();
    let (mut open, mut closed) = (false, false);
    for (i, raw) in text.lines().enumerate() {
        let (line, l) = (i + 1, raw.trim());
        if l.is_empty() {
            continue;
        }
        if closed {
            bail!("{f}:{line}: text after the closing `}}`");
        }
        if !open {
            if let Some(v) = l.strip_prefix("n_points:") {
                n_points = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow!("{f}:{line}: n_points `{}` is not a count", v.trim()))?,
                );
            } else if l == "{" {
                open = true;
            } else if !l.starts_with("version:") {
                bail!("{f}:{line}: expected `version:`, `n_points:` or `{{`, got `{l}`");
            }
            continue;
        }
        if l == "}" {
            closed = true;
            continue;
        }
        let xy: Vec<f32> = l
            .split_whitespace()
            .map(|v| v.parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow!("{f}:{line}: `{l}` is not `x y`"))?;
        match xy.as_slice() {
            [x, y] if x.is_finite() && y.is_finite() => points.extend([x - 1.0, y - 1.0]),
            _ => bail!("{f}:{line}: `{l}` is not `x y`"),
        }
    }
    if !open {
        bail!("{f}: no `{{` opening the points");
    }
    if !closed {
        bail!("{f}: the points are not closed by `}}`");
    }
    let n = n_points.ok_or_else(|| anyhow!("{f}: no `n_points:` line"))?;
    if n != points.len() / 2 {
        bail!("{f}: n_points says {n} but the file lists {} points", points.len() / 2);
    }
    if n != k {
        bail!("{f}: {n} points, but data.keypoints has {k}");
    }
    Ok(points)
}

fn read_coco(file: &Path, root: &Path, k: usize) -> Result<Vec<Annotation>> {
    let f = file.display();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {f}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{f}: not valid JSON ({e})"))?;
    let list = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_array())
            .ok_or_else(|| anyhow!("{f}: no `{key}` list; a COCO keypoints file has images and annotations"))
    };
    let mut names = std::collections::HashMap::new();
    for (i, im) in list("images")?.iter().enumerate() {
        let id = im
            .get("id")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| anyhow!("{f}: images[{i}] has no integer `id`"))?;
        let name = im
            .get("file_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("{f}: images[{i}] has no `file_name`"))?;
        names.insert(id, name.to_string());
    }
    let mut out = Vec::new();
    for (i, a) in list("annotations")?.iter().enumerate() {
        let at = format!("{f}: annotations[{i}]");
        let id = a
            .get("image_id")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| anyhow!("{at}: no integer `image_id`"))?;
        let name = names.get(&id).ok_or_else(|| anyhow!("{at}: image_id {id} is not in `images`"))?;
        let kp: Vec<f64> = a
            .get("keypoints")
            .and_then(|v| v.as_array())
            .ok_or_else(|| anyhow!("{at}: no `keypoints` list"))?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| anyhow!("{at}: keypoints hold a non-number {v}")))
            .collect::<Result<_>>()?;
        if kp.len() != 3 * k {
            bail!(
                "{at}: {} keypoint values ({} keypoints as x, y, v), but data.keypoints has {k}",
                kp.len(),
                kp.len() / 3
            );
        }
        let points = kp
            .chunks(3)
            .flat_map(|c| if c[2] > 0.0 { [c[0] as f32, c[1] as f32] } else { [f32::NAN; 2] })
            .collect();
        let bbox = match a.get("bbox") {
            Some(b) => {
                let v: Vec<f32> = b
                    .as_array()
                    .map(|b| b.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
                    .unwrap_or_default();
                let [x, y, w, h] = v[..] else { bail!("{at}: bbox must be [x, y, width, height]") };
                Some([x, y, w, h])
            }
            None => None,
        };
        out.push(Annotation { path: root.join(name), name: name.clone(), points, bbox, origin: at });
    }
    Ok(out)
}
