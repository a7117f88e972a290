//! `fkpnet extract`: faces as PNG files, as the net sees them.

use super::draw;
use super::predict::path_stem;
use crate::data::kaggle;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

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
    } else if input == Path::new(crate::data::SYNTHETIC) {
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
            let side = img.width().min(img.height()) as f32;
            draw::keypoints(&mut img, faces.points(i), &spec.keypoints, side);
        }
        img.save(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(n)
}
