//! The compute layers the importer converts, one function per Caffe type and one
//! table (`CONVERTERS`) that also gives the list of supported types in errors. The
//! structural types (data, inputs, the loss, Scale after BatchNorm, Split, Silence,
//! Accuracy) are handled by `net`, which walks the graph.

use super::proto::caffe::{
    filler_parameter::VarianceNorm, pooling_parameter, FillerParameter, LayerParameter,
};
use crate::config::schema::did_you_mean;
use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};

type Convert = fn(&LayerParameter, &str, &mut Vec<String>) -> Result<Mapping>;

/// Caffe type -> fkpnet layer.
const CONVERTERS: &[(&str, Convert)] = &[
    ("Convolution", conv),
    ("InnerProduct", dense),
    ("Pooling", pool),
    ("ReLU", relu),
    ("PReLU", prelu),
    ("Dropout", dropout),
    ("BatchNorm", batchnorm),
    ("Concat", concat),
    ("Eltwise", eltwise),
    ("Flatten", flatten),
    ("Reshape", reshape),
];

/// Every type the importer takes: the table's and the structural ones `net` handles.
pub fn supported() -> Vec<&'static str> {
    let mut v: Vec<&str> = CONVERTERS.iter().map(|(n, _)| *n).collect();
    v.extend(super::net::STRUCTURAL);
    v
}

/// Convert one compute layer.
pub fn convert(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let Some((_, f)) = CONVERTERS.iter().find(|(n, _)| *n == l.type_()) else {
        let all = supported();
        let hint =
            did_you_mean(l.type_(), &all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
        bail!("{at}: layer type `{}` is not supported{hint}; supported: {}", l.type_(), all.join(", "));
    };
    let mut m = f(l, at, notes)?;
    // BatchNorm's three blobs are statistics, which Caffe nets freeze with
    // `param { lr_mult: 0 }`: in fkpnet they are buffers the solver never touches.
    if l.type_() != "BatchNorm" {
        if let Some(p) = params(l, at)? {
            m.insert("param".into(), p);
        }
    }
    Ok(m)
}

/// A mapping that starts `{type: KIND, name: NAME}`.
fn layer(kind: &str, l: &LayerParameter) -> Mapping {
    let mut m = Mapping::new();
    m.insert("type".into(), kind.into());
    m.insert("name".into(), l.name().into());
    m
}

fn put(m: &mut Mapping, k: &str, v: impl Into<Value>) {
    m.insert(k.into(), v.into());
}

fn conv(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let p = l.convolution_param.as_ref().cloned().unwrap_or_default();
    if p.axis() != 1 {
        bail!("{at}: convolution_param axis {} is not supported (only 1)", p.axis());
    }
    let mut m = layer("conv", l);
    put(&mut m, "num_output", p.num_output() as i64);
    put(&mut m, "kernel_size", square("kernel", &p.kernel_size, p.kernel_h, p.kernel_w, 0, at)?);
    put(&mut m, "stride", square("stride", &p.stride, p.stride_h, p.stride_w, 1, at)?);
    let (ph, pw) = (p.pad_h.filter(|v| *v > 0), p.pad_w.filter(|v| *v > 0));
    put(&mut m, "pad", square("pad", &p.pad, ph, pw, 0, at)?);
    put(&mut m, "dilation", square("dilation", &p.dilation, None, None, 1, at)?);
    put(&mut m, "group", p.group() as i64);
    put(&mut m, "bias_term", p.bias_term());
    put(&mut m, "weight_filler", filler(p.weight_filler.as_ref(), "weight_filler", at, notes)?);
    if p.bias_term() {
        put(&mut m, "bias_filler", filler(p.bias_filler.as_ref(), "bias_filler", at, notes)?);
    }
    Ok(m)
}

fn dense(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let p = l.inner_product_param.as_ref().cloned().unwrap_or_default();
    if p.axis() != 1 || p.transpose() {
        bail!("{at}: inner_product_param axis must be 1 and transpose false");
    }
    let mut m = layer("dense", l);
    put(&mut m, "num_output", p.num_output() as i64);
    put(&mut m, "bias_term", p.bias_term());
    put(&mut m, "weight_filler", filler(p.weight_filler.as_ref(), "weight_filler", at, notes)?);
    if p.bias_term() {
        put(&mut m, "bias_filler", filler(p.bias_filler.as_ref(), "bias_filler", at, notes)?);
    }
    Ok(m)
}

fn pool(l: &LayerParameter, at: &str, _: &mut Vec<String>) -> Result<Mapping> {
    let p = l.pooling_param.as_ref().cloned().unwrap_or_default();
    let mut m = layer("pool", l);
    let method = match p.pool() {
        pooling_parameter::PoolMethod::MAX => "max",
        pooling_parameter::PoolMethod::AVE => "ave",
        pooling_parameter::PoolMethod::STOCHASTIC => bail!("{at}: STOCHASTIC pooling is not supported"),
    };
    put(&mut m, "pool", method);
    if p.global_pooling() {
        put(&mut m, "global_pooling", true);
    } else {
        let k = p.kernel_size.map(|k| vec![k]).unwrap_or_default();
        put(&mut m, "kernel_size", square("kernel", &k, p.kernel_h, p.kernel_w, 0, at)?);
        let s = p.stride.map(|s| vec![s]).unwrap_or_default();
        put(&mut m, "stride", square("stride", &s, p.stride_h, p.stride_w, 1, at)?);
        let pad = p.pad.map(|s| vec![s]).unwrap_or_default();
        let (ph, pw) = (p.pad_h.filter(|v| *v > 0), p.pad_w.filter(|v| *v > 0));
        put(&mut m, "pad", square("pad", &pad, ph, pw, 0, at)?);
    }
    let round = match p.round_mode() {
        pooling_parameter::RoundMode::CEIL => "ceil",
        pooling_parameter::RoundMode::FLOOR => "floor",
    };
    put(&mut m, "round_mode", round);
    Ok(m)
}

fn relu(l: &LayerParameter, _: &str, _: &mut Vec<String>) -> Result<Mapping> {
    let mut m = layer("relu", l);
    let slope = l.relu_param.as_ref().map_or(0.0, |p| p.negative_slope());
    if slope != 0.0 {
        put(&mut m, "negative_slope", num(slope as f64));
    }
    Ok(m)
}

/// Caffe's PReLU: a learned slope per channel (or one shared), filler default 0.25.
fn prelu(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let p = l.prelu_param.as_ref().cloned().unwrap_or_default();
    let mut m = layer("prelu", l);
    put(&mut m, "channel_shared", p.channel_shared());
    let f = match p.filler.as_ref() {
        Some(f) => filler(Some(f), "filler", at, notes)?,
        None => serde_yaml::from_str("{type: constant, value: 0.25}")?,
    };
    put(&mut m, "filler", f);
    Ok(m)
}

fn dropout(l: &LayerParameter, _: &str, _: &mut Vec<String>) -> Result<Mapping> {
    let mut m = layer("dropout", l);
    put(&mut m, "dropout_ratio", num(l.dropout_param.as_ref().map_or(0.5, |p| p.dropout_ratio()) as f64));
    Ok(m)
}

fn batchnorm(l: &LayerParameter, _: &str, _: &mut Vec<String>) -> Result<Mapping> {
    let p = l.batch_norm_param.as_ref().cloned().unwrap_or_default();
    let mut m = layer("batchnorm", l);
    put(&mut m, "moving_average_fraction", num(p.moving_average_fraction() as f64));
    put(&mut m, "eps", num(p.eps() as f64));
    if p.use_global_stats.is_some() {
        put(&mut m, "use_global_stats", p.use_global_stats());
    }
    // Caffe's BatchNorm only normalises; a following Scale adds the affine part.
    put(&mut m, "affine", false);
    Ok(m)
}

fn concat(l: &LayerParameter, _: &str, _: &mut Vec<String>) -> Result<Mapping> {
    let p = l.concat_param.as_ref().cloned().unwrap_or_default();
    let mut m = layer("concat", l);
    let axis = if p.axis.is_some() { p.axis() as i64 } else { p.concat_dim() as i64 };
    put(&mut m, "axis", axis);
    Ok(m)
}

fn eltwise(l: &LayerParameter, _: &str, _: &mut Vec<String>) -> Result<Mapping> {
    use super::proto::caffe::eltwise_parameter::EltwiseOp;
    let p = l.eltwise_param.as_ref().cloned().unwrap_or_default();
    let mut m = layer("eltwise", l);
    let op = match p.operation() {
        EltwiseOp::PROD => "prod",
        EltwiseOp::SUM => "sum",
        EltwiseOp::MAX => "max",
    };
    put(&mut m, "operation", op);
    if !p.coeff.is_empty() {
        put(&mut m, "coeff", Value::Sequence(p.coeff.iter().map(|c| num(*c as f64)).collect()));
    }
    Ok(m)
}

fn flatten(l: &LayerParameter, at: &str, _: &mut Vec<String>) -> Result<Mapping> {
    if let Some(p) = l.flatten_param.as_ref() {
        if p.axis() != 1 || p.end_axis() != -1 {
            bail!("{at}: flatten_param axis 1 / end_axis -1 only");
        }
    }
    Ok(layer("flatten", l))
}

/// A Reshape that keeps the batch and flattens the rest (`shape { dim: 0 dim: -1 }`)
/// is a flatten; fkpnet has no general reshape, so others are refused.
fn reshape(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let p = l.reshape_param.as_ref().cloned().unwrap_or_default();
    let dims: Vec<i64> = p.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    if dims == [0, -1] && p.axis() == 0 && p.num_axes() == -1 {
        notes.push(format!("{at}: Reshape to (batch, -1) imported as a flatten"));
        return Ok(layer("flatten", l));
    }
    bail!(
        "{at}: Reshape to {dims:?} is not supported: fkpnet's layers keep CxHxW or flatten it; only \
         `reshape_param {{ shape {{ dim: 0 dim: -1 }} }}` (a flatten) converts"
    )
}

pub fn num(v: f64) -> Value {
    // f32 fields printed as the shortest decimal that round-trips the f32.
    let s = format!("{}", v as f32);
    Value::Number(serde_yaml::Number::from(s.parse::<f64>().unwrap_or(v)))
}

pub fn filler(f: Option<&FillerParameter>, what: &str, at: &str, notes: &mut Vec<String>) -> Result<Value> {
    let mut m = Mapping::new();
    let Some(f) = f else {
        if what == "weight_filler" {
            notes.push(format!(
                "{at}: no weight_filler: Caffe's default, constant 0, kept (it will not train)"
            ));
        }
        m.insert("type".into(), "constant".into());
        m.insert("value".into(), 0.into());
        return Ok(Value::Mapping(m));
    };
    m.insert("type".into(), f.type_().into());
    match f.type_() {
        "constant" => {
            m.insert("value".into(), num(f.value() as f64));
        }
        "uniform" => {
            m.insert("min".into(), num(f.min() as f64));
            m.insert("max".into(), num(f.max() as f64));
        }
        "gaussian" => {
            if f.sparse() != -1 {
                bail!("{at}: {what}: gaussian `sparse` is not supported");
            }
            m.insert("mean".into(), num(f.mean() as f64));
            m.insert("std".into(), num(f.std() as f64));
        }
        "xavier" | "msra" => {
            let norm = match f.variance_norm() {
                VarianceNorm::FAN_IN => "fan_in",
                VarianceNorm::FAN_OUT => "fan_out",
                VarianceNorm::AVERAGE => "average",
            };
            m.insert("variance_norm".into(), norm.into());
        }
        other => bail!("{at}: {what}: filler type `{other}` is not supported (constant, uniform, gaussian, xavier, msra)"),
    }
    Ok(Value::Mapping(m))
}

/// One value or a square pair (`kernel_size: 3` or `kernel_h: 3 kernel_w: 3`).
fn square(name: &str, list: &[u32], h: Option<u32>, w: Option<u32>, default: u32, at: &str) -> Result<i64> {
    match (list, h, w) {
        ([], None, None) => Ok(default as i64),
        ([v], None, None) => Ok(*v as i64),
        ([], Some(h), Some(w)) if h == w => Ok(h as i64),
        _ => bail!("{at}: only square {name}s are supported (one {name}, or equal {name}_h and {name}_w)"),
    }
}

/// The layer's `param { lr_mult decay_mult }` list; shared weights (`param { name }`)
/// are refused: fkpnet's layers own their tensors.
pub fn params(l: &LayerParameter, at: &str) -> Result<Option<Value>> {
    if let Some(p) = l.param.iter().find(|p| p.name.as_ref().is_some_and(|n| !n.is_empty())) {
        bail!(
            "{at}: `param {{ name: \"{}\" }}` shares weights between layers, which fkpnet does not support \
             (each layer has its own tensors); remove the names to train them apart",
            p.name()
        );
    }
    Ok(params_list(l))
}

fn params_list(l: &LayerParameter) -> Option<Value> {
    if l.param.is_empty() {
        return None;
    }
    Some(Value::Sequence(
        l.param
            .iter()
            .map(|p| {
                let mut m = Mapping::new();
                m.insert("lr_mult".into(), num(p.lr_mult() as f64));
                m.insert("decay_mult".into(), num(p.decay_mult() as f64));
                Value::Mapping(m)
            })
            .collect(),
    ))
}
