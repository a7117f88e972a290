//! Caffe interop: prototxt (protobuf text format) import into fkpnet YAML.

mod import;
pub use import::{import, Imported, Options};

use std::path::{Path, PathBuf};

/// Write an import into `out` (created): `<net name>.yaml`, and the solver as
/// `<solver file's stem>.yaml`. Nothing is overwritten: an existing file is refused
/// before any is written. Returns the files written.
pub fn write(imported: &Imported, solver: Option<&Path>, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![(format!("{}.yaml", imported.net_name), imported.net_yaml.clone())];
    if let (Some(y), Some(s)) = (&imported.solver_yaml, solver) {
        let stem = s.file_stem().and_then(|s| s.to_str()).unwrap_or("solver");
        files.push((format!("{stem}.yaml"), y.clone()));
    }
    for (name, _) in &files {
        if out.join(name).exists() {
            anyhow::bail!("{} exists; choose another -o (nothing is overwritten)", out.join(name).display());
        }
    }
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for (name, text) in files {
        crate::run::write_text(&out.join(&name), &text)?;
        written.push(out.join(name));
    }
    Ok(written)
}

/// Types generated from proto/caffe.proto (and proto/tensorboard.proto) at build time.
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/caffe_proto/mod.rs"));
}
