//! Types generated at build time (build.rs, protobuf-codegen) from proto/caffe.proto
//! (Caffe's prototxt and caffemodel), proto/onnx.proto (the ONNX export) and
//! proto/tensorboard.proto (the run dir's event files): one module for every reader
//! and writer of those formats, so the reports need not reach into `caffe`.

#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/caffe_proto/mod.rs"));
}
pub use generated::*;
