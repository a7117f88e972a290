//! The run directory: resolved config, metrics CSV, weights. Nothing in it is ever
//! overwritten by another run, and files are written atomically (temp + rename).

pub mod caffe_log;
pub mod tensorboard;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Create `runs_dir/name`. An explicit name that exists is an error; a default
    /// name gets `_2`, `_3`, ... appended. `create_dir` is atomic, so two trainings
    /// can never get the same directory.
    pub fn create(runs_dir: &Path, name: Option<&str>, default_name: &str) -> Result<RunDir> {
        fs::create_dir_all(runs_dir)
            .with_context(|| format!("cannot create the runs directory {}", runs_dir.display()))?;
        if let Some(name) = name {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                bail!("--name {name:?}: a run name must be a plain directory name");
            }
            let path = runs_dir.join(name);
            return match fs::create_dir(&path) {
                Ok(()) => Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                    "run {} already exists; choose another --name (runs are never overwritten)",
                    path.display()
                ),
                Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
            };
        }
        for k in 1.. {
            let n = if k == 1 { default_name.to_string() } else { format!("{default_name}_{k}") };
            let path = runs_dir.join(&n);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        unreachable!()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Fail early, before data is loaded and minutes are spent, when run directories
/// cannot be written in `runs_dir`.
pub fn check_writable(runs_dir: &Path) -> Result<()> {
    let bad = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot write run directories in {}: {e} (choose another --runs-dir)",
            runs_dir.display()
        )
    };
    fs::create_dir_all(runs_dir).map_err(bad)?;
    let probe = runs_dir.join(format!(".fkpnet-write-test-{}", std::process::id()));
    fs::write(&probe, b"ok").map_err(bad)?;
    fs::remove_file(&probe).map_err(bad)?;
    Ok(())
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-struct of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Refuse to start when the run's files (weights, snapshots, logs) would not fit, so
/// a full disk is reported now and not hours into training.
pub fn check_space(dir: &Path, needed: u64, free: Option<u64>) -> Result<()> {
    let mb = |b: u64| b as f64 / 1e6;
    match free {
        Some(free) if free < needed => bail!(
            "{} has {:.1} MB free, but this run writes about {:.1} MB (weights, snapshots, logs); \
             free some space or choose another --runs-dir",
            dir.display(),
            mb(free),
            mb(needed)
        ),
        _ => Ok(()),
    }
}

/// Write `path` via a temp file in the same directory and a rename, so a reader (or
/// a crash) never sees a half-written file. `write` gets the temp path; a failed write
/// (a full disk) leaves the old file as it was and removes the temp file.
pub fn atomic_write(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Keep the extension last: VarStore::save picks the format from it.
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    let done = write(&tmp).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
    });
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// Refuse to replace a file the user already has, unless they said `--force`: every
/// command that writes files the user names (`-o`, `--draw DIR`, `extract DIR`) checks
/// each of them before writing the first.
pub fn check_new_output(path: &Path, force: bool) -> Result<()> {
    if !force && fs::symlink_metadata(path).is_ok() {
        bail!("{} exists; pass --force to overwrite it (nothing is overwritten otherwise)", path.display());
    }
    Ok(())
}

pub fn write_text(path: &Path, text: &str) -> Result<()> {
    atomic_write(path, |tmp| {
        let mut f = fs::File::create(tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    })
}

/// One line of metrics.csv; `None` is written as an empty cell. The struct is the
/// file's schema: its header, each row and the reader all come from it (serde + csv).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub iter: i64,
    #[serde(serialize_with = "fixed3")]
    pub epoch: f64,
    #[serde(serialize_with = "sci", default)]
    pub lr: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub train_loss: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub train_rmse_px: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub val_loss: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub val_rmse_px: Option<f64>,
    /// NME, failure rate and AUC on the val split, in percent (where the keypoint set
    /// has a normaliser; absent from runs made before 2026-12-01).
    #[serde(serialize_with = "sci", default)]
    pub val_nme: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub val_fr: Option<f64>,
    #[serde(serialize_with = "sci", default)]
    pub val_auc: Option<f64>,
    #[serde(serialize_with = "fixed2")]
    pub seconds: f64,
}

fn sci<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.map(|x| format!("{x:.6e}")).unwrap_or_default())
}

fn fixed3<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:.3}"))
}

fn fixed2<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:.2}"))
}

/// `row` as one CSV line, with the header line first when `header`.
fn csv_lines(row: &MetricsRow, header: bool) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().has_headers(header).from_writer(Vec::new());
    w.serialize(row).expect("plain data serializes");
    w.into_inner().expect("a Vec does not fail")
}

/// The header line of metrics.csv (without its newline), from `MetricsRow`'s fields.
pub fn metrics_header() -> String {
    let lines = String::from_utf8(csv_lines(&MetricsRow::default(), true)).expect("ASCII");
    lines.lines().next().expect("a header line").to_string()
}

/// metrics.csv, flushed after every row so it is readable while training runs.
pub struct Metrics {
    file: fs::File,
}

impl Metrics {
    pub fn create(path: &Path) -> Result<Metrics> {
        let mut file = fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(file, "{}", metrics_header())?;
        Ok(Metrics { file })
    }

    /// One `write` call per row, so a killed process leaves whole rows (and at most
    /// one cut-off last line, which `read_metrics` skips).
    pub fn write(&mut self, r: &MetricsRow) -> Result<()> {
        self.file.write_all(&csv_lines(r, false))?;
        self.file.flush()?;
        Ok(())
    }
}

/// Read a metrics.csv back (for reports, resumes and tests). A last line without its
/// newline is a row cut off by a crash: it is left out.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let mut text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !text.ends_with('\n') {
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    }
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header = rdr.headers().map(|h| h.iter().collect::<Vec<_>>().join(",")).unwrap_or_default();
    if !header.starts_with("iter,epoch,lr,train_loss,train_rmse_px,val_loss,val_rmse_px") {
        bail!("{}: unexpected header {header:?}, expected {:?}", path.display(), metrics_header());
    }
    rdr.deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| anyhow::anyhow!("{}:{}: malformed row ({e})", path.display(), i + 2)))
        .collect()
}
