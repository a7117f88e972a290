//! Caffe interop: prototxt (protobuf text format) import into fkpnet YAML.

mod import;
pub use import::{import, Imported, Options};

/// Types generated from proto/caffe.proto (and proto/tensorboard.proto) at build time.
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/caffe_proto/mod.rs"));
}
