//! fkpnet: declarative, Caffe-style deep learning for facial keypoint detection.
//!
//! One direction of flow: `config` (YAML -> typed, validated; it knows no layer or
//! data code but the layer registry's key lists and the augmentation's schema) ->
//! `graph` (shapes, params, FLOPs; built into libtorch modules from `layers`, one file
//! per kind) -> `train` (a `Trainer` over `data`, `loss`, `solver`) -> `run` (the run
//! directory: metrics, logs, events, weights) -> `report` (test, predict, export, diff,
//! plots). `infer` (predictions with test-time views, evaluation) and `metrics` (NME,
//! failure rate, AUC) serve both training's val tests and the reports, which never
//! import `train`. `data` describes a dataset as config (`data::Spec`: keypoint set,
//! input size and colour, crop) and reads the field's formats. `proto` holds the
//! protobuf types of Caffe's, ONNX's and TensorBoard's files, for whichever module
//! reads or writes them. `kernels` holds fkpnet's own CPU kernels for shapes libtorch
//! computes slowly in predictions (a first conv and its max pool, layers at batch 1-4;
//! on CPUs without AVX-512 convs at any batch),
//! which layer kinds use where they apply.

pub mod autograd;
pub mod bench;
pub mod caffe;
pub mod config;
pub mod data;
pub mod graph;
pub mod infer;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod peak;
pub mod proto;
pub mod report;
pub mod run;
pub mod solver;
pub mod sweep;
pub mod timing;
pub mod train;
