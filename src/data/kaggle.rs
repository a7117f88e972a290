//! Kaggle's "Facial Keypoints Detection" CSVs: 30 keypoint columns (blank = missing)
//! and `Image`, 9,216 space-separated grey values.

use super::{target_columns, Faces, PIXELS, TARGETS};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// A Kaggle CSV: the faces, an id per row (`ImageId` if the file has it, else the
/// 1-based row number) and whether it carries keypoint columns.
pub struct Table {
    pub faces: Faces,
    pub ids: Vec<String>,
    pub labelled: bool,
}

/// Read a training.csv (labels required). Errors name the file, line and column.
pub fn read_training(path: &Path) -> Result<Faces> {
    let t = read(path)?;
    if !t.labelled {
        bail!(
            "{}: no keypoint columns (left_eye_center_x ... mouth_center_bottom_lip_y); \
             a labelled Kaggle training.csv is needed here",
            path.display()
        );
    }
    Ok(t.faces)
}

/// Read any Kaggle-format CSV: training.csv (keypoints + Image) or test.csv
/// (ImageId + Image). Keypoints are NaN where blank, or everywhere in a file without
/// keypoint columns. A file read before comes from the binary cache (`cache`).
pub fn read(path: &Path) -> Result<Table> {
    if let Some(t) = super::cache::load(path) {
        return Ok(t);
    }
    let t = parse(path)?;
    super::cache::store(path, &t);
    Ok(t)
}

/// Parse a Kaggle CSV (no cache).
pub fn parse(path: &Path) -> Result<Table> {
    let file = path.display();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("cannot open {file}"))?;
    let header = rdr.byte_headers().with_context(|| format!("{file}: cannot read the header"))?.clone();
    let col = |name: &str| header.iter().position(|h| h == name.as_bytes());
    let names = target_columns();
    let missing: Vec<&String> = names.iter().filter(|n| col(n).is_none()).collect();
    let labelled = missing.len() < names.len();
    let image = col("Image");
    if (labelled && !missing.is_empty()) || image.is_none() {
        let mut m: Vec<String> =
            if labelled { missing.iter().map(|s| s.to_string()).collect() } else { vec![] };
        if image.is_none() {
            m.push("Image".into());
        }
        bail!(
            "{file}: missing column(s) {}; a Kaggle training.csv has the 30 keypoint columns \
             (left_eye_center_x ... mouth_center_bottom_lip_y) and Image, a test.csv ImageId and Image",
            m.join(", ")
        );
    }
    let image = image.expect("checked");
    let id_col = col("ImageId");
    let cols: Vec<usize> =
        if labelled { names.iter().map(|n| col(n).expect("checked")).collect() } else { vec![] };

    let mut faces = Faces::kaggle();
    let mut ids = Vec::new();
    // Records first (the CSV scan is sequential), then the Image fields, the bulk of
    // the file, parsed on every core; the first bad row in file order is reported.
    let mut records: Vec<(u64, csv::ByteRecord)> = Vec::new();
    loop {
        let mut rec = csv::ByteRecord::new();
        if !rdr.read_byte_record(&mut rec).map_err(|e| anyhow!("{file}: {e}"))? {
            break;
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        for (c, name) in cols.iter().zip(&names) {
            let field = rec.get(*c).unwrap_or(b"");
            let v = if field.is_empty() {
                f32::NAN
            } else {
                std::str::from_utf8(field)
                    .ok()
                    .and_then(|s| s.trim().parse::<f32>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        anyhow!(
                            "{file}:{line}: column {name}: `{}` is not a number (blank means missing)",
                            String::from_utf8_lossy(field)
                        )
                    })?
            };
            faces.keypoints.push(v);
        }
        if !labelled {
            faces.keypoints.extend([f32::NAN; TARGETS]);
        }
        ids.push(match id_col {
            Some(c) => String::from_utf8_lossy(rec.get(c).unwrap_or(b"")).trim().to_string(),
            None => ids.len().saturating_add(1).to_string(),
        });
        records.push((line, rec));
    }
    faces.pixels =
        parse_images(&records, image).map_err(|(line, e)| anyhow!("{file}:{line}: column Image: {e}"))?;
    if faces.is_empty() {
        bail!("{file}: no faces (the file has a header but no rows)");
    }
    debug_assert_eq!(faces.pixels.len(), faces.len() * PIXELS);
    Ok(Table { faces, ids, labelled })
}

/// The Image column of every record, parsed in parallel chunks in file order; the
/// error of the first bad row (its line) if any.
fn parse_images(records: &[(u64, csv::ByteRecord)], image: usize) -> Result<Vec<u8>, (u64, String)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunk = records.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<u8>, (u64, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|rs| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(rs.len() * PIXELS);
                    for (line, rec) in rs {
                        parse_image(rec.get(image).unwrap_or(b""), &mut out).map_err(|e| (*line, e))?;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("the pixel parser does not panic")).collect()
    });
    let mut pixels = Vec::with_capacity(records.len() * PIXELS);
    for p in parts {
        pixels.extend_from_slice(&p?);
    }
    Ok(pixels)
}

/// Parse 9,216 space-separated integers 0..=255 onto `out` (a hand loop: this is the
/// bulk of a 120 MB file).
pub fn parse_image(field: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let mut val: u32 = 0;
    let mut digits = 0;
    for &b in field.iter().chain(std::iter::once(&b' ')) {
        match b {
            b'0'..=b'9' => {
                val = val * 10 + (b - b'0') as u32;
                digits += 1;
                if digits > 3 {
                    let n = out.len() - start + 1;
                    out.truncate(start);
                    return Err(format!("pixel {n} has too many digits (0..255 expected)"));
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => {
                if digits > 0 {
                    if val > 255 {
                        let n = out.len() - start + 1;
                        out.truncate(start);
                        return Err(format!("pixel {n} is {val}, outside 0..255"));
                    }
                    if out.len() - start == PIXELS {
                        out.truncate(start);
                        return Err(format!("more than {PIXELS} pixels (96x96 expected)"));
                    }
                    out.push(val as u8);
                    val = 0;
                    digits = 0;
                }
            }
            other => {
                let n = out.len() - start + 1;
                out.truncate(start);
                return Err(format!("pixel {n}: unexpected character {:?}", other as char));
            }
        }
    }
    let n = out.len() - start;
    if n != PIXELS {
        out.truncate(start);
        return Err(format!("{n} pixels, expected {PIXELS} (96x96)"));
    }
    Ok(())
}
