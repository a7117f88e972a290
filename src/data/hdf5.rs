//! Caffe's HDF5 input (`data.format: hdf5`), as its HDF5Data layer reads it: `train`
//! is a list file of `.h5` paths (whitespace-separated; relative ones from the list's
//! folder), or one `.h5` file; each file holds `data`, N x C x H x W floats, and
//! `label`, N x 2K floats. As Caffe setups for keypoints write them (the shared
//! make_h5.py), pixels are value / 255 in [0, 1] and labels (xy - half) / half; the
//! faces are kept in file order.

use super::{Faces, Spec};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// The `.h5` files `source` names: itself, or the paths its list holds.
fn files(source: &Path) -> Result<Vec<PathBuf>> {
    let f = source.display();
    if !source.is_file() {
        bail!("data file {f} does not exist");
    }
    let bytes = std::fs::read(source).with_context(|| format!("cannot read {f}"))?;
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Ok(vec![source.to_path_buf()]);
    }
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow!("{f}: neither an HDF5 file nor a list of .h5 paths"))?;
    let dir = source.parent().unwrap_or(Path::new("."));
    let list: Vec<PathBuf> = text.split_whitespace().map(|p| dir.join(p)).collect();
    if list.is_empty() {
        bail!("{f}: an empty list (Caffe's HDF5Data source lists .h5 files, one per line)");
    }
    Ok(list)
}

/// Every face of the files, in order.
pub fn read(source: &Path, spec: &Spec) -> Result<Faces> {
    let mut faces = Faces::empty([spec.channels, spec.height, spec.width], spec.targets());
    for path in files(source)? {
        read_file(&path, spec, &mut faces).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    }
    if faces.is_empty() {
        bail!("{}: no faces in its .h5 files", source.display());
    }
    Ok(faces)
}

fn read_file(path: &Path, spec: &Spec, faces: &mut Faces) -> Result<()> {
    if !path.is_file() {
        bail!("does not exist (listed in the HDF5 source)");
    }
    let file = hdf5_pure::File::open(path).map_err(|e| anyhow!("not a readable HDF5 file ({e})"))?;
    let dataset = |name: &str| {
        file.dataset(name)
            .map_err(|e| anyhow!("no `{name}` dataset ({e}); Caffe's HDF5Data reads `data` and `label`"))
    };
    let (data, label) = (dataset("data")?, dataset("label")?);
    let (ds, ls) = (data.shape()?, label.shape()?);
    let want = [spec.channels as u64, spec.height as u64, spec.width as u64];
    if ds.len() != 4 || ds[1..] != want {
        bail!("`data` is {ds:?}, but the net's input needs N x {} x {} x {}", want[0], want[1], want[2]);
    }
    if ls.len() != 2 || ls[0] != ds[0] || ls[1] != spec.targets() as u64 {
        bail!(
            "`label` is {ls:?}, but {} faces of {} keypoints need {} x {}",
            ds[0],
            spec.keypoints.len(),
            ds[0],
            spec.targets()
        );
    }
    let pixels = data.read_f32()?;
    if let Some((i, v)) = pixels.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        bail!("`data` value {v} (at {i}) is outside [0, 1]: fkpnet reads pixels / 255, as make_h5.py writes them");
    }
    faces.pixels.extend(pixels.iter().map(|v| (v * 255.0).round() as u8));
    let half = spec.half() as f32;
    faces.keypoints.extend(label.read_f32()?.iter().map(|y| y * half + half));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_h5(path: &Path, n: usize, data: &[f32], label: &[f32]) {
        let mut b = hdf5_pure::FileBuilder::new();
        b.create_dataset("data").with_f32_data(data).with_shape(&[n as u64, 1, 2, 2]);
        b.create_dataset("label").with_f32_data(label).with_shape(&[n as u64, 2]);
        b.write(path).unwrap();
    }

    #[test]
    fn reads_caffes_list_files_in_order_and_checks_shapes_and_scales() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_h5(&d.join("a.h5"), 1, &[0.0, 1.0, 0.5, 0.25], &[0.0, -0.5]);
        write_h5(&d.join("b.h5"), 2, &[1.0; 8], &[0.5, 0.5, f32::NAN, 1.0]);
        std::fs::write(d.join("list.txt"), "a.h5\nb.h5\n").unwrap();
        let spec = Spec {
            keypoints: crate::data::KeypointSet::from_config(&serde_yaml::from_str("{count: 1}").unwrap())
                .unwrap(),
            channels: 1,
            height: 2,
            width: 2,
            crop: Default::default(),
            format: crate::data::DataFormat::Hdf5,
        };
        let f = read(&d.join("list.txt"), &spec).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.image(0), &[0, 255, 128, 64]);
        // Labels in pixels of the 2x2 input (half = 1): y * 1 + 1.
        assert_eq!(f.points(0), &[1.0, 0.5]);
        assert!(f.points(2)[0].is_nan() && f.points(2)[1] == 2.0);
        // One .h5 file on its own reads too.
        assert_eq!(read(&d.join("a.h5"), &spec).unwrap().len(), 1);
        // Wrong shapes and scales are named.
        let spec3 = Spec { width: 3, height: 3, ..spec.clone() };
        let e = read(&d.join("list.txt"), &spec3).unwrap_err().to_string();
        assert!(e.contains("a.h5: `data` is [1, 1, 2, 2], but the net's input needs N x 1 x 3 x 3"), "{e}");
        write_h5(&d.join("c.h5"), 1, &[0.0, 2.0, 0.0, 0.0], &[0.0, 0.0]);
        let e = read(&d.join("c.h5"), &spec).unwrap_err().to_string();
        assert!(e.contains("outside [0, 1]"), "{e}");
        std::fs::write(d.join("missing.txt"), "nope.h5\n").unwrap();
        let e = read(&d.join("missing.txt"), &spec).unwrap_err().to_string();
        assert!(e.contains("nope.h5: does not exist"), "{e}");
    }
}
