//! fkpnet: declarative, Caffe-style deep learning for facial keypoint detection.
//!
//! One direction of flow: `config` (YAML -> typed, validated) -> `graph` (shapes,
//! params, FLOPs; built into libtorch modules) -> `train` (with `data`, `loss`,
//! `solver`) -> `run` (the run directory) -> reports.

pub mod bench;
pub mod caffe;
pub mod config;
pub mod data;
pub mod graph;
pub mod infer;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod peak;
pub mod report;
pub mod run;
pub mod solver;
pub mod sweep;
pub mod timing;
pub mod train;
