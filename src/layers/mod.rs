//! Layer kinds. Each kind lives in its own file: its params (serde, with Caffe's
//! defaults), output shape, FLOPs and build. Adding a kind = its file + one line in
//! `KINDS`.

pub mod batchnorm;
pub mod check;
pub mod concat;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod eltwise;
pub mod filler;
pub mod flatten;
pub mod pool;
pub mod prelu;
pub mod relu;
pub mod soft_argmax;
pub mod upsample;

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

/// How the net computes (the same weights and results either way).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BuildOptions {
    /// Conv and dense layers compute in bfloat16 from float32 master weights (mixed
    /// precision, as PyTorch's CPU autocast); everything else stays float32.
    pub bf16: bool,
    /// Conv weights and activations in NHWC strides (PyTorch's channels_last).
    pub channels_last: bool,
}

impl BuildOptions {
    /// Whether fkpnet's own kernels may stand in for libtorch's (each still declines a
    /// call it does not compute): float32 (they have no bf16 path), a CPU with AVX-512 or
    /// AVX2 + FMA, and not turned off by `FKPNET_KERNELS=libtorch`.
    pub fn own_kernels(&self) -> bool {
        !self.bf16 && crate::kernels::isa().is_some() && crate::kernels::enabled()
    }
}

/// The same logical NCHW tensor with NHWC strides (channels-last); other ranks as they are.
/// The strides are set explicitly: with one channel (the faces, conv1's weight) the
/// permute-contiguous-permute idiom keeps NCHW strides, libtorch then picks its NCHW
/// kernels for the whole first block, and most of the gain is lost.
pub fn channels_last(x: &tch::Tensor) -> tch::Tensor {
    let d = x.size();
    if d.len() != 4 {
        return x.shallow_clone();
    }
    let strides = [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]];
    let out = tch::Tensor::empty_strided(&d, &strides, (x.kind(), x.device()));
    tch::no_grad(|| out.shallow_clone().copy_(x));
    out
}

/// Whether a 4-D tensor already has NHWC strides.
pub fn is_channels_last(x: &tch::Tensor) -> bool {
    let (s, d) = (x.stride(), x.size());
    d.len() == 4 && s == [d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]]
}

/// A tensor a layer keeps: its name suffix (`weight`, `bias`), shape and filler.
/// `learn: false` marks a buffer (BatchNorm's running statistics): saved and loaded
/// with the weights, never touched by the solver.
pub struct ParamDef {
    pub suffix: &'static str,
    pub shape: Vec<i64>,
    pub filler: filler::Filler,
    pub learn: bool,
}

/// A layer's params as YAML with every default filled in (for the resolved config);
/// every kind gets it from its `Serialize` impl.
pub trait ToYaml {
    fn to_yaml(&self) -> serde_yaml::Value;
}

impl<T: Serialize> ToYaml for T {
    fn to_yaml(&self) -> serde_yaml::Value {
        serde_yaml::to_value(self).expect("layer params are plain data")
    }
}

/// Cast to bfloat16 when the net computes in it (conv and dense inputs, weights, bias).
pub fn compute_kind(t: &tch::Tensor, opts: &BuildOptions) -> tch::Tensor {
    if opts.bf16 {
        t.to_kind(tch::Kind::BFloat16)
    } else {
        t.shallow_clone()
    }
}

/// A layer and the max pool after it (`Layer::build_pooled`), or the ReLU after it
/// (`Layer::build_rectified`), as one function.
pub type PooledFn = Box<dyn Fn(&tch::Tensor) -> Option<tch::Tensor> + Send>;
/// The same in a training step (`Layer::build_pooled_train`): the pooled map, without
/// autograd history, and the backward step that adds the layer's parameter gradients
/// given the map's gradient.
pub type PooledTrainFn = Box<dyn Fn(&tch::Tensor) -> Option<(tch::Tensor, PooledBackward)> + Send>;
pub type PooledBackward = Box<dyn FnOnce(&tch::Tensor)>;

/// A layer's training step (`Layer::build_train`) for its input: its output, in
/// autograd's graph, with a hook (`autograd::on_gradient`) that adds the parameters'
/// gradients in autograd's backward pass.
pub type TrainFn = Box<dyn Fn(&tch::Tensor) -> Option<tch::Tensor> + Send>;

/// Adds each gradient to its parameter's, as autograd would have (a kernel autograd does
/// not see computed them; `autograd::accumulate_grad`). Parameters that learn nothing
/// (no `requires_grad`) are left alone.
pub fn add_gradients(pairs: &[(&tch::Tensor, tch::Tensor)]) {
    for (p, g) in pairs.iter().filter(|(p, _)| p.requires_grad()) {
        crate::autograd::accumulate_grad(p, &g.to_kind(p.kind()));
    }
}

pub use crate::kernels::direct_conv::Pooling;

/// The forward function of a kind that joins several bottoms.
pub type MergeFn = Box<dyn Fn(&[&tch::Tensor]) -> tch::Tensor + Send>;

/// What a kind that takes several bottoms (concat, eltwise) adds to `Layer`. With one
/// bottom such a kind is the identity, through `Layer`'s own methods.
pub trait Merge {
    /// Output shape for these bottoms, or why they do not fit together.
    fn merge_shape(&self, inputs: &[Shape]) -> Result<Shape, String>;
    fn merge_flops(&self, inputs: &[Shape], output: &[i64]) -> i64;
    fn build_merge(&self, inputs: &[Shape], opts: &BuildOptions) -> MergeFn;
    /// The PyTorch expression joining the named inputs, e.g. `torch.cat([a, b], 1)`.
    fn pytorch_merge(&self, args: &[String]) -> String;
}

pub trait Layer: std::fmt::Debug + Send + ToYaml {
    /// Kinds that join several bottoms return themselves; all others take exactly one.
    fn merge(&self) -> Option<&dyn Merge> {
        None
    }
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
    fn build(&self, input: &[i64], params: Vec<tch::Tensor>, opts: &BuildOptions) -> nn::FuncT<'static>;
    /// The equivalent PyTorch module (for `fkpnet export`), e.g. `nn.ReLU()`.
    fn pytorch(&self, input: &[i64]) -> String;
    /// Whether the PyTorch module needs its input flattened first (nn.Linear does not
    /// flatten by itself, as Caffe's InnerProduct does).
    fn pytorch_flattens_first(&self, _input: &[i64]) -> bool {
        false
    }
    /// The Python class `pytorch` names, for kinds torch.nn lacks (the export defines it).
    fn pytorch_class(&self) -> Option<&'static str> {
        None
    }
    /// Elementwise, non-decreasing and without params (ReLU with slope >= 0): such a
    /// layer commutes with max pooling, max(f(a), f(b)) = f(max(a, b)), gradients
    /// included, so a following max pool may run first and the layer then touches a
    /// quarter of the values (see `Graph::build`).
    fn monotone(&self) -> bool {
        false
    }
    /// Max pooling (what a `monotone` layer may be moved behind).
    fn is_max_pool(&self) -> bool {
        false
    }
    /// Exactly max(x, 0) (ReLU of slope 0): a kernel fused with the max pool after it may
    /// apply it to the maxima (`Pooling::rectify`), saving the layer's own pass.
    fn is_plain_relu(&self) -> bool {
        false
    }
    /// A max pool without padding, as a window a kernel can fuse into the layer before
    /// it (`build_pooled`); `input` is the pool's input shape.
    fn max_pool_window(&self, _input: &[i64]) -> Option<Pooling> {
        None
    }
    /// For predictions: this layer and the max pool `pool` right after it as one kernel,
    /// where the kind has one (conv with few input channels, on AVX-512). The function
    /// gives `None` for a call its kernel does not take (a gradient wanted, another device
    /// or precision); the two layers then run one by one, as built.
    fn build_pooled(
        &self,
        _input: &[i64],
        _params: &[tch::Tensor],
        _pool: Pooling,
        _opts: &BuildOptions,
    ) -> Option<PooledFn> {
        None
    }
    /// For predictions: this layer and the plain ReLU right after it as one function,
    /// where the kind's kernel can rectify as it writes (dense at batch 1-4 on AVX-512).
    /// The function gives `None` for a call its kernel does not take; the two layers then
    /// run one by one, as built.
    fn build_rectified(
        &self,
        _input: &[i64],
        _params: &[tch::Tensor],
        _opts: &BuildOptions,
    ) -> Option<PooledFn> {
        None
    }
    /// `build_pooled` for training steps, where the kind has a kernel with its own
    /// backward pass (conv with few input channels as a net's first layer, on AVX-512).
    /// The function gives `None` for a call its kernel does not take (an input that
    /// wants a gradient, another device or precision); autograd then runs the layers.
    fn build_pooled_train(
        &self,
        _input: &[i64],
        _params: &[tch::Tensor],
        _pool: Pooling,
        _opts: &BuildOptions,
    ) -> Option<PooledTrainFn> {
        None
    }
    /// For training steps: the layer with its parameters' gradients computed by a kernel
    /// of fkpnet's own after autograd's pass (conv's weight gradient, on CPUs with AVX2
    /// and no AVX-512), autograd still giving its input's. The function gives `None` for a
    /// call the kernel does not take; autograd then runs the layer, as built.
    fn build_train(&self, _input: &[i64], _params: &[tch::Tensor], _opts: &BuildOptions) -> Option<TrainFn> {
        None
    }
    /// Computes faster in the channels-last layout on CPU (measured for convolutions:
    /// README "Speed"); `layout: auto` picks it for nets with such a layer.
    fn prefers_channels_last(&self) -> bool {
        false
    }
    /// Kinds that read keypoints off heatmaps (soft_argmax): the log-probability of each
    /// position of each map, NxCxHxW, from the layer's input (for heatmap losses).
    fn heatmap_log_probs(&self, _input: &tch::Tensor) -> Option<tch::Tensor> {
        None
    }
    /// Whether `heatmap_log_probs` gives the maps (a heatmap loss may follow it).
    fn reads_heatmaps(&self) -> bool {
        false
    }
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
    kind!("prelu", prelu::Prelu, "rectifier with learned negative slopes (Caffe: PReLU)"),
    kind!(
        "batchnorm",
        batchnorm::BatchNorm,
        "batch normalisation with optional scale/shift (Caffe: BatchNorm + Scale)"
    ),
    kind!("dropout", dropout::Dropout, "inverted dropout, identity at test time (Caffe: Dropout)"),
    kind!("concat", concat::Concat, "joins its bottoms along an axis, channels by default (Caffe: Concat)"),
    kind!(
        "eltwise",
        eltwise::Eltwise,
        "sum, product or max of its bottoms, for skip connections (Caffe: Eltwise)"
    ),
    kind!("flatten", flatten::Flatten, "flattens CxHxW to a vector (Caffe: Flatten)"),
    kind!(
        "soft_argmax",
        soft_argmax::SoftArgmax,
        "each channel's expected (x, y) under a spatial softmax: heatmaps -> keypoints (not in Caffe)"
    ),
    kind!("upsample", upsample::Upsample, "enlarges the map by an integer factor (PyTorch: nn.Upsample)"),
];

/// Caffe's type names for the kinds that are Caffe layers: `type: Convolution` is
/// `type: conv` (with fkpnet's flat keys, `num_output: 16`, not `convolution_param`).
pub const CAFFE_NAMES: &[(&str, &str)] = &[
    ("Convolution", "conv"),
    ("Pooling", "pool"),
    ("InnerProduct", "dense"),
    ("ReLU", "relu"),
    ("PReLU", "prelu"),
    ("BatchNorm", "batchnorm"),
    ("Dropout", "dropout"),
    ("Concat", "concat"),
    ("Eltwise", "eltwise"),
    ("Flatten", "flatten"),
];

/// A kind by its fkpnet name or its Caffe name.
pub fn kind(name: &str) -> Option<&'static Kind> {
    let name = CAFFE_NAMES.iter().find(|(c, _)| *c == name).map_or(name, |(_, k)| *k);
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
