//! A binary cache of parsed Kaggle CSVs: the 120 MB training.csv is parsed once, then
//! read back as raw bytes. The cache lives in `$FKPNET_CACHE`, or
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
    let _ = write();
}
