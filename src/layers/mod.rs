//! Layer kinds. Each kind lives in its own file: its params (serde, with Caffe's
//! defaults), output shape, FLOPs and build. Adding a kind = its file + one line in
//! `KINDS`.

pub mod conv;
pub mod dense;
pub mod dropout;
pub mod filler;
pub mod flatten;
pub mod pool;
pub mod relu;

use crate::config::schema::struct_fields;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::nn;

/// Per-sample shape: `[C, H, W]` for images, `[N]` for vectors.
pub type Shape = Vec<i64>;

/// `16x94x94` or `500`.
pub fn shape_str(s: &[i64]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// A learnable tensor of a layer: its name suffix (`weight`, `bias`), shape and filler.
pub struct ParamDef {
    pub suffix: &'static str,
    pub shape: Vec<i64>,
    pub filler: filler::Filler,
}

pub trait Layer: std::fmt::Debug + Send {
    /// Output shape for one sample, or why this input does not fit the layer.
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String>;
    /// Learnable tensors, in Caffe's blob order (weight, then bias).
    fn params(&self, _input: &[i64]) -> Vec<ParamDef> {
        Vec::new()
    }
    /// Forward FLOPs per sample (a multiply-add counts 2).
    fn flops(&self, input: &[i64], output: &[i64]) -> i64;
    /// Extra text for `summary` (kernel, filler, ...).
    fn details(&self) -> String {
        String::new()
    }
    /// The forward function; `params` are the tensors made from `self.params(input)`.
    fn build(&self, input: &[i64], params: Vec<tch::Tensor>) -> nn::FuncT<'static>;
    /// The params with every default filled in, for the resolved config.
    fn resolved(&self) -> serde_yaml::Value;
    /// The equivalent PyTorch module (for `fkpnet export`), e.g. `nn.ReLU()`.
    fn pytorch(&self, input: &[i64]) -> String;
}

/// One entry of the registry.
pub struct Kind {
    pub name: &'static str,
    pub about: &'static str,
    pub parse: fn(serde_yaml::Value) -> Result<Box<dyn Layer>, serde_yaml::Error>,
    pub fields: fn() -> &'static [&'static str],
}

fn parse<T: Layer + DeserializeOwned + 'static>(
    v: serde_yaml::Value,
) -> Result<Box<dyn Layer>, serde_yaml::Error> {
    Ok(Box::new(serde_yaml::from_value::<T>(v)?))
}

/// Serialize a layer's params (used by `Layer::resolved` impls).
pub fn to_yaml<T: Serialize>(t: &T) -> serde_yaml::Value {
    serde_yaml::to_value(t).expect("layer params are plain data")
}

macro_rules! kind {
    ($name:literal, $ty:ty, $about:literal) => {
        Kind { name: $name, about: $about, parse: parse::<$ty>, fields: struct_fields::<$ty> }
    };
}

/// The registry: every layer `type:` a net may use.
pub const KINDS: &[Kind] = &[
    kind!("conv", conv::Conv, "2-D convolution (Caffe: Convolution)"),
    kind!("pool", pool::Pool, "max or average pooling (Caffe: Pooling)"),
    kind!("dense", dense::Dense, "fully connected, flattens its input (Caffe: InnerProduct)"),
    kind!("relu", relu::Relu, "rectifier, leaky with negative_slope (Caffe: ReLU)"),
    kind!("dropout", dropout::Dropout, "inverted dropout, identity at test time (Caffe: Dropout)"),
    kind!("flatten", flatten::Flatten, "flattens CxHxW to a vector (Caffe: Flatten)"),
];

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Positive-integer check shared by the kinds' params.
pub fn positive(what: &str, v: i64) -> Result<(), String> {
    if v > 0 {
        Ok(())
    } else {
        Err(format!("{what} must be >= 1, got {v}"))
    }
}

/// The input must be an image `CxHxW`.
pub fn chw(input: &[i64], kind: &str) -> Result<(i64, i64, i64), String> {
    match input {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(format!(
            "{kind} needs an image input CxHxW, got {} (add it before any dense/flatten layer)",
            shape_str(input)
        )),
    }
}
