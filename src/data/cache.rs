//! A binary cache of parsed Kaggle CSVs (the 120 MB training.csv is parsed once, then
//! read back as raw bytes) and of image datasets' decoded, cropped faces. The cache lives in `$FKPNET_CACHE`, or
//! `$XDG_CACHE_HOME/fkpnet`, or `~/.cache/fkpnet` (the data folder may be read-only),
//! keyed by the CSV's absolute path, and is invalid as soon as the CSV's size or
//! modification time differ from what the cache recorded.

use super::kaggle::Table;
use super::{Faces, PIXELS, TARGETS};
use anyhow::{bail, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FKPNETC1";

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FKPNET_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("fkpnet"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fkpnet"))
}

/// (cache file, source size, source mtime in ns) for a CSV.
fn key(csv: &Path) -> Option<(PathBuf, u64, u128)> {
    let meta = std::fs::metadata(csv).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let abs = std::fs::canonicalize(csv).ok()?;
    // FNV-1a of the path: a stable, dependency-free file name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.to_string_lossy().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let stem = csv.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    Some((cache_dir()?.join(format!("{stem}-{h:016x}.bin")), meta.len(), mtime))
}

/// The cached table of `csv`, if a valid cache exists.
pub fn load(csv: &Path) -> Option<Table> {
    let (file, size, mtime) = key(csv)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&file).ok()?.read_to_end(&mut bytes).ok()?;
    parse(&bytes, size, mtime).ok()
}

fn parse(b: &[u8], size: u64, mtime: u128) -> Result<Table> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = b.get(at..at + n).ok_or_else(|| anyhow::anyhow!("truncated cache"))?;
        at += n;
        Ok(s)
    };
    if take(8)? != MAGIC {
        bail!("not an fkpnet cache");
    }
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    if u64_of(take(8)?) != size || u128::from_le_bytes(take(16)?.try_into()?) != mtime {
        bail!("stale cache");
    }
    let n = u64_of(take(8)?) as usize;
    let labelled = take(1)?[0] == 1;
    let pixels = take(n * PIXELS)?.to_vec();
    let keypoints =
        take(n * TARGETS * 4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let ids_len = u64_of(take(8)?) as usize;
    let ids: Vec<String> = std::str::from_utf8(take(ids_len)?)?.split('\n').map(str::to_string).collect();
    if ids.len() != n {
        bail!("corrupt cache");
    }
    Ok(Table { faces: Faces { pixels, keypoints, ..Faces::kaggle() }, ids, labelled })
}

/// Write the cache for `csv` (best effort: a read-only or full disk only costs speed).
pub fn store(csv: &Path, t: &Table) {
    let Some((file, size, mtime)) = key(csv) else { return };
    let mut b = Vec::with_capacity(t.faces.pixels.len() + t.faces.keypoints.len() * 4 + 64);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&mtime.to_le_bytes());
    b.extend_from_slice(&(t.ids.len() as u64).to_le_bytes());
    b.push(t.labelled as u8);
    b.extend_from_slice(&t.faces.pixels);
    for v in &t.faces.keypoints {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let ids = t.ids.join("\n");
    b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    b.extend_from_slice(ids.as_bytes());
    let write = || -> Result<()> {
        std::fs::create_dir_all(file.parent().expect("cache file in a dir"))?;
        crate::run::atomic_write(&file, |tmp| {
            let mut f = std::fs::File::create(tmp)?;
            f.write_all(&b)?;
            Ok(())
        })
    };
    if write().is_ok() {
        prune(&file, max_bytes());
    }
}

/// Where an image dataset's faces are cached, and the digest of everything they were
/// made from: the annotation file, every image file (size and modification time),
/// the format, columns, crop, keypoint set and input size.
pub struct ImagesKey {
    file: PathBuf,
    digest: u64,
}

const IMAGES_MAGIC: &[u8; 8] = b"FKPNETI1";

/// FNV-1a over bytes: a stable, dependency-free digest.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn stat_bytes(p: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(p).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let mut b = meta.len().to_le_bytes().to_vec();
    b.extend(mtime.to_le_bytes());
    Some(b)
}

pub fn images_key(
    cfg: &crate::config::DataConfig,
    spec: &super::Spec,
    anns: &[super::annotations::Annotation],
) -> Option<ImagesKey> {
    let source = std::fs::canonicalize(&cfg.train).ok()?;
    let what = format!(
        "{:?}|{:?}|{:?}|{:?}|{}x{}x{}|{}",
        cfg.format,
        cfg.columns,
        cfg.crop,
        cfg.images,
        spec.channels,
        spec.height,
        spec.width,
        spec.keypoints.len()
    );
    let path_hash = fnv(0xcbf2_9ce4_8422_2325, format!("{}|{what}", source.display()).as_bytes());
    let mut digest = fnv(path_hash, &stat_bytes(&source).unwrap_or_default());
    for a in anns {
        digest = fnv(digest, a.path.to_string_lossy().as_bytes());
        digest = fnv(digest, &stat_bytes(&a.path)?);
    }
    let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    Some(ImagesKey { file: cache_dir()?.join(format!("{stem}-images-{path_hash:016x}.bin")), digest })
}

pub fn load_images(key: &ImagesKey) -> Option<Faces> {
    let mut bytes = Vec::new();
    let mut f = std::fs::File::open(&key.file).ok()?;
    f.read_to_end(&mut bytes).ok()?;
    let faces = parse_images(&bytes, key.digest).ok()?;
    // Marks it as used, for `prune` (best effort).
    let _ = f.set_modified(std::time::SystemTime::now());
    Some(faces)
}

fn parse_images(b: &[u8], digest: u64) -> Result<Faces> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = b.get(at..at + n).ok_or_else(|| anyhow::anyhow!("truncated cache"))?;
        at += n;
        Ok(s)
    };
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    if take(8)? != IMAGES_MAGIC || u64_of(take(8)?) != digest {
        bail!("not this dataset's cache, or stale");
    }
    let n = u64_of(take(8)?) as usize;
    let shape = [u64_of(take(8)?) as usize, u64_of(take(8)?) as usize, u64_of(take(8)?) as usize];
    let targets = u64_of(take(8)?) as usize;
    let mut faces = Faces::empty(shape, targets);
    faces.pixels = take(n * shape.iter().product::<usize>())?.to_vec();
    faces.keypoints =
        take(n * targets * 4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let meta_len = u64_of(take(8)?) as usize;
    faces.sources = serde_json::from_slice(take(meta_len)?)?;
    if faces.sources.len() != n {
        bail!("corrupt cache");
    }
    Ok(faces)
}

/// Best effort, as `store`.
pub fn store_images(key: &ImagesKey, faces: &Faces) {
    let Ok(meta) = serde_json::to_vec(&faces.sources) else { return };
    let mut b = Vec::with_capacity(faces.pixels.len() + faces.keypoints.len() * 4 + meta.len() + 64);
    b.extend_from_slice(IMAGES_MAGIC);
    b.extend_from_slice(&key.digest.to_le_bytes());
    for v in [faces.len(), faces.shape[0], faces.shape[1], faces.shape[2], faces.targets] {
        b.extend_from_slice(&(v as u64).to_le_bytes());
    }
    b.extend_from_slice(&faces.pixels);
    for v in &faces.keypoints {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    b.extend_from_slice(&meta);
    let write = || -> Result<()> {
        std::fs::create_dir_all(key.file.parent().expect("cache file in a dir"))?;
        crate::run::atomic_write(&key.file, |tmp| {
            let mut f = std::fs::File::create(tmp)?;
            f.write_all(&b)?;
            Ok(())
        })
    };
    if write().is_ok() {
        prune(&key.file, max_bytes());
    }
}

/// `FKPNET_CACHE_MAX_MB` (default 2,048 MB) in bytes.
fn max_bytes() -> u64 {
    std::env::var("FKPNET_CACHE_MAX_MB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(2048) << 20
}

/// Keep the cache folder under `max` bytes: every dataset, crop and input size is a
/// file of its own, so without a bound it would only grow. The least recently used
/// files go first; `keep`, just written, stays.
fn prune(keep: &Path, max: u64) {
    let Some(dir) = keep.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let p = e.ok()?.path();
            let m = p.metadata().ok()?;
            let used = m.modified().ok()?;
            (p.extension().is_some_and(|x| x == "bin") && m.is_file()).then_some((used, m.len(), p))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, p) in files {
        if total <= max {
            break;
        }
        if p != keep && std::fs::remove_file(&p).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prune_drops_the_least_recently_used_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, age_s: u64| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
            p
        };
        let (old, mid, keep) = (at("old.bin", 300), at("mid.bin", 200), at("new.bin", 100));
        let other = at("notes.txt", 400);
        super::prune(&keep, 2000);
        assert!(!old.exists() && mid.exists() && keep.exists() && other.exists());
        super::prune(&keep, 500);
        assert!(!mid.exists() && keep.exists(), "the file just written stays even over the bound");
    }
}
