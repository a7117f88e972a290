//! Reports on trained runs: test, predict, submit, extract, export, diff and plots.

pub mod caffe_run;
pub mod diff;
pub mod draw;
pub mod export;
pub mod extract;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod predict;
pub mod submit;
pub mod summary;
pub mod test;
