//! Faces from image files and their annotations (csv, pts, coco): each image decoded,
//! its face cut out as `data.crop` says and resized to the net's input, its keypoints
//! mapped into the crop. Decoding runs on every core; the result is cached (see
//! `cache::images_key`), invalid as soon as an annotation or image file changes.

use super::annotations::{self, Annotation};
use super::crop::{self, CropBox};
use super::{Faces, Source, Spec};
use crate::config::DataConfig;
use anyhow::{anyhow, Result};
use std::path::Path;

/// The faces of an image dataset, ordered by image name.
pub fn load(cfg: &DataConfig, spec: &Spec) -> Result<Faces> {
    let (anns, key) = annotated(cfg, spec)?;
    if let Some(faces) = key.as_ref().and_then(super::cache::load_images) {
        return Ok(faces);
    }
    let faces = decode_all(&anns, cfg, spec)?;
    if let Some(k) = &key {
        super::cache::store_images(k, &faces);
    }
    Ok(faces)
}

/// Decode every face, bypassing the cache, then store it; and the cache key (for
/// `fkpnet bench-data`).
pub fn decode_and_cache(cfg: &DataConfig, spec: &Spec) -> Result<(Faces, Option<super::cache::ImagesKey>)> {
    let (anns, key) = annotated(cfg, spec)?;
    let faces = decode_all(&anns, cfg, spec)?;
    if let Some(k) = &key {
        super::cache::store_images(k, &faces);
    }
    Ok((faces, key))
}

/// The annotations, in one order whatever the format (a folder of .pts files has
/// none of its own), so the same faces train the same as csv, pts or coco; an image's
/// faces keep theirs. And where their cache is.
fn annotated(cfg: &DataConfig, spec: &Spec) -> Result<(Vec<Annotation>, Option<super::cache::ImagesKey>)> {
    let source = Path::new(&cfg.train);
    let images = cfg.images.as_deref().map(Path::new);
    let mut anns = annotations::read(cfg.format, source, images, &cfg.columns, spec.keypoints.len())?;
    anns.sort_by(|a, b| a.name.cmp(&b.name));
    let key = super::cache::images_key(cfg, spec, &anns);
    Ok((anns, key))
}

/// One face: its crop's pixels and its keypoints in the crop.
fn decode(a: &Annotation, cfg: &DataConfig, spec: &Spec) -> Result<(Vec<u8>, Vec<f32>, CropBox)> {
    if !a.path.is_file() {
        return Err(anyhow!("{}: image {} does not exist", a.origin, a.path.display()));
    }
    let img = crop::open(&a.path).map_err(|e| anyhow!("{}: {e:#}", a.origin))?;
    let b = crop::crop_box(&cfg.crop, img.width(), img.height(), &a.points, a.bbox)
        .map_err(|e| anyhow!("{}: {e}", a.origin))?;
    let pixels = crop::cut(&img, &b, spec.width, spec.channels);
    Ok((pixels, b.points_to_crop(&a.points, spec.width), b))
}

fn decode_all(anns: &[Annotation], cfg: &DataConfig, spec: &Spec) -> Result<Faces> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunk = anns.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<(Vec<u8>, Vec<f32>, CropBox)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = anns
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || part.iter().map(|a| decode(a, cfg, spec)).collect::<Result<Vec<_>>>())
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("decoding does not panic")).collect()
    });
    let mut faces = Faces::empty([spec.channels, spec.height, spec.width], spec.targets());
    let mut all = anns.iter();
    // The first bad face in file order is the one reported.
    for part in parts {
        for (pixels, points, crop) in part? {
            let a = all.next().expect("one result per annotation");
            faces.pixels.extend(pixels);
            faces.keypoints.extend(points);
            faces.sources.push(Source { name: a.name.clone(), crop });
        }
    }
    Ok(faces)
}
