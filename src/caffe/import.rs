//! `fkpnet import-caffe`: Caffe prototxt (net, optionally solver) -> fkpnet YAML that
//! keeps Caffe's semantics (ceil pooling, Caffe's fillers, constant-0 where Caffe
//! omits a filler). Parsing is done by rust-protobuf against proto/caffe.proto, so
//! syntax errors and unknown fields come with line and column.

use super::proto::caffe::{
    filler_parameter::VarianceNorm, pooling_parameter, solver_parameter, FillerParameter, LayerParameter,
    NetParameter, Phase, SolverParameter,
};
use crate::config::schema::did_you_mean;
use crate::config::solver::{DataConfig, Labels, LrPolicy, Regularization};
use crate::config::{NetConfig, NetSource, SolverConfig, SolverType};
use crate::graph::Graph;
use anyhow::{anyhow, bail, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

pub struct Options {
    /// Input shape for data layers that carry none (HDF5Data, Data).
    pub input: [i64; 3],
    /// `data.train` of the converted solver.
    pub data: String,
    /// Batch size when no data layer gives one.
    pub batch: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options { input: [1, 96, 96], data: crate::data::SYNTHETIC.into(), batch: 64 }
    }
}

pub struct Imported {
    pub net_name: String,
    pub net_yaml: String,
    pub solver_yaml: Option<String>,
    /// Things the user should know (Caffe defaults made explicit, skipped layers).
    pub notes: Vec<String>,
}

const SUPPORTED: &str = "Input, Data, HDF5Data, Convolution, Pooling, InnerProduct, ReLU, Dropout, Flatten, \
     BatchNorm, Scale (after BatchNorm), Concat, Eltwise, EuclideanLoss";

/// A layer's line in the prototxt: the line of its `name: "..."`, searched in order.
fn layer_lines(text: &str, layers: &[LayerParameter]) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    layers
        .iter()
        .map(|l| {
            let quoted = [format!("\"{}\"", l.name()), format!("'{}'", l.name())];
            let hit = (from..lines.len()).find(|&i| {
                let t = lines[i].trim_start();
                t.starts_with("name") && quoted.iter().any(|q| t.contains(q.as_str()))
            });
            if let Some(i) = hit {
                from = i + 1;
            }
            hit.map_or(0, |i| i + 1)
        })
        .collect()
}

fn in_train_phase(l: &LayerParameter) -> bool {
    if l.phase.is_some() && l.phase() != Phase::TRAIN {
        return false;
    }
    let matches = |r: &super::proto::caffe::NetStateRule| r.phase.is_none() || r.phase() == Phase::TRAIN;
    (l.include.is_empty() || l.include.iter().any(matches)) && !l.exclude.iter().any(matches)
}

fn num(v: f64) -> Value {
    // f32 fields printed as the shortest decimal that round-trips the f32.
    let s = format!("{}", v as f32);
    Value::Number(serde_yaml::Number::from(s.parse::<f64>().unwrap_or(v)))
}

fn filler(f: Option<&FillerParameter>, what: &str, at: &str, notes: &mut Vec<String>) -> Result<Value> {
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

fn params(l: &LayerParameter) -> Option<Value> {
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

/// Convert one compute layer; `None` for nothing to emit.
fn convert_layer(l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let mut m = Mapping::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    match l.type_() {
        "Convolution" => {
            let p = l.convolution_param.as_ref().cloned().unwrap_or_default();
            if p.axis() != 1 {
                bail!("{at}: convolution_param axis {} is not supported (only 1)", p.axis());
            }
            put("type", "conv".into());
            put("name", l.name().into());
            put("num_output", (p.num_output() as i64).into());
            put("kernel_size", square("kernel", &p.kernel_size, p.kernel_h, p.kernel_w, 0, at)?.into());
            put("stride", square("stride", &p.stride, p.stride_h, p.stride_w, 1, at)?.into());
            let (ph, pw) = (p.pad_h.filter(|v| *v > 0), p.pad_w.filter(|v| *v > 0));
            put("pad", square("pad", &p.pad, ph, pw, 0, at)?.into());
            put("dilation", square("dilation", &p.dilation, None, None, 1, at)?.into());
            put("group", (p.group() as i64).into());
            put("bias_term", p.bias_term().into());
            put("weight_filler", filler(p.weight_filler.as_ref(), "weight_filler", at, notes)?);
            if p.bias_term() {
                put("bias_filler", filler(p.bias_filler.as_ref(), "bias_filler", at, notes)?);
            }
        }
        "InnerProduct" => {
            let p = l.inner_product_param.as_ref().cloned().unwrap_or_default();
            if p.axis() != 1 || p.transpose() {
                bail!("{at}: inner_product_param axis must be 1 and transpose false");
            }
            put("type", "dense".into());
            put("name", l.name().into());
            put("num_output", (p.num_output() as i64).into());
            put("bias_term", p.bias_term().into());
            put("weight_filler", filler(p.weight_filler.as_ref(), "weight_filler", at, notes)?);
            if p.bias_term() {
                put("bias_filler", filler(p.bias_filler.as_ref(), "bias_filler", at, notes)?);
            }
        }
        "Pooling" => {
            let p = l.pooling_param.as_ref().cloned().unwrap_or_default();
            put("type", "pool".into());
            put("name", l.name().into());
            let method = match p.pool() {
                pooling_parameter::PoolMethod::MAX => "max",
                pooling_parameter::PoolMethod::AVE => "ave",
                pooling_parameter::PoolMethod::STOCHASTIC => {
                    bail!("{at}: STOCHASTIC pooling is not supported")
                }
            };
            put("pool", method.into());
            if p.global_pooling() {
                put("global_pooling", true.into());
            } else {
                let k = p.kernel_size.map(|k| vec![k]).unwrap_or_default();
                put("kernel_size", square("kernel", &k, p.kernel_h, p.kernel_w, 0, at)?.into());
                let s = p.stride.map(|s| vec![s]).unwrap_or_default();
                put("stride", square("stride", &s, p.stride_h, p.stride_w, 1, at)?.into());
                let pad = p.pad.map(|s| vec![s]).unwrap_or_default();
                let (ph, pw) = (p.pad_h.filter(|v| *v > 0), p.pad_w.filter(|v| *v > 0));
                put("pad", square("pad", &pad, ph, pw, 0, at)?.into());
            }
            let round = match p.round_mode() {
                pooling_parameter::RoundMode::CEIL => "ceil",
                pooling_parameter::RoundMode::FLOOR => "floor",
            };
            put("round_mode", round.into());
        }
        "ReLU" => {
            put("type", "relu".into());
            put("name", l.name().into());
            let slope = l.relu_param.as_ref().map_or(0.0, |p| p.negative_slope());
            if slope != 0.0 {
                put("negative_slope", num(slope as f64));
            }
        }
        "Dropout" => {
            put("type", "dropout".into());
            put("name", l.name().into());
            put("dropout_ratio", num(l.dropout_param.as_ref().map_or(0.5, |p| p.dropout_ratio()) as f64));
        }
        "BatchNorm" => {
            let p = l.batch_norm_param.as_ref().cloned().unwrap_or_default();
            put("type", "batchnorm".into());
            put("name", l.name().into());
            put("moving_average_fraction", num(p.moving_average_fraction() as f64));
            put("eps", num(p.eps() as f64));
            if p.use_global_stats.is_some() {
                put("use_global_stats", p.use_global_stats().into());
            }
            // Caffe's BatchNorm only normalises; a following Scale adds the affine part.
            put("affine", false.into());
            // Its three blobs are statistics, which Caffe nets freeze with
            // `param { lr_mult: 0 }`: in fkpnet they are buffers the solver never touches.
            return Ok(m);
        }
        "Concat" => {
            let p = l.concat_param.as_ref().cloned().unwrap_or_default();
            put("type", "concat".into());
            put("name", l.name().into());
            let axis = if p.axis.is_some() { p.axis() as i64 } else { p.concat_dim() as i64 };
            put("axis", axis.into());
        }
        "Eltwise" => {
            use super::proto::caffe::eltwise_parameter::EltwiseOp;
            let p = l.eltwise_param.as_ref().cloned().unwrap_or_default();
            put("type", "eltwise".into());
            put("name", l.name().into());
            let op = match p.operation() {
                EltwiseOp::PROD => "prod",
                EltwiseOp::SUM => "sum",
                EltwiseOp::MAX => "max",
            };
            put("operation", op.into());
            if !p.coeff.is_empty() {
                put("coeff", Value::Sequence(p.coeff.iter().map(|c| num(*c as f64)).collect()));
            }
        }
        "Flatten" => {
            if let Some(p) = l.flatten_param.as_ref() {
                if p.axis() != 1 || p.end_axis() != -1 {
                    bail!("{at}: flatten_param axis 1 / end_axis -1 only");
                }
            }
            put("type", "flatten".into());
            put("name", l.name().into());
        }
        other => {
            let hint = did_you_mean(other, &SUPPORTED.split(", ").collect::<Vec<_>>())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            bail!("{at}: layer type `{other}` is not supported{hint}; supported: {SUPPORTED}")
        }
    }
    if let Some(p) = params(l) {
        m.insert("param".into(), p);
    }
    Ok(m)
}

/// Caffe's Scale after a BatchNorm is the BatchNorm's affine part: fold it in
/// (a Scale without bias_term keeps the shift at 0 with lr_mult 0, which is the same).
fn fold_scale(
    l: &LayerParameter,
    at: &str,
    layers: &mut [Value],
    top: &Option<String>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(Value::Mapping(bn)) = layers.last_mut() else {
        bail!("{at}: a Scale layer is supported only right after a BatchNorm (as its affine part)");
    };
    if bn.get("type").and_then(|t| t.as_str()) != Some("batchnorm") || l.bottom.first() != top.as_ref() {
        bail!("{at}: a Scale layer is supported only right after a BatchNorm, taking its top (as its affine part)");
    }
    let p = l.scale_param.as_ref().cloned().unwrap_or_default();
    if p.axis() != 1 || p.num_axes() != 1 {
        bail!("{at}: scale_param axis 1 / num_axes 1 (per channel) only");
    }
    if p.filler.is_some() || p.bias_filler.is_some() {
        notes.push(format!("{at}: Scale fillers ignored: fkpnet starts the scale at 1 and the shift at 0"));
    }
    bn.insert("affine".into(), true.into());
    let mut mults: Vec<Value> = params(l).and_then(|v| v.as_sequence().cloned()).unwrap_or_default();
    if !p.bias_term() {
        while mults.is_empty() {
            mults.push(serde_yaml::from_str("{lr_mult: 1, decay_mult: 1}")?);
        }
        mults.truncate(1);
        mults.push(serde_yaml::from_str("{lr_mult: 0, decay_mult: 0}")?);
    }
    if !mults.is_empty() {
        bn.insert("param".into(), Value::Sequence(mults));
    }
    if let Some(t) = l.top.first() {
        let name = bn.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        if *t != name {
            bn.insert("top".into(), t.clone().into());
        }
    }
    notes.push(format!("{at}: folded into the BatchNorm before it as `affine: true`"));
    Ok(())
}

/// YAML flow style for one layer: `{type: conv, name: conv1, ...}`.
fn flow(v: &Value) -> String {
    match v {
        Value::Mapping(m) => {
            let items: Vec<String> =
                m.iter().map(|(k, v)| format!("{}: {}", k.as_str().unwrap_or_default(), flow(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Sequence(s) => format!("[{}]", s.iter().map(flow).collect::<Vec<_>>().join(", ")),
        other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_string(),
    }
}

struct NetOut {
    name: String,
    yaml: String,
    batch: Option<i64>,
    /// Batch size of the TEST-phase data layer: Caffe's test_iter counts its batches.
    test_batch: Option<i64>,
}

fn data_batch(l: &LayerParameter) -> Option<i64> {
    l.hdf5_data_param
        .as_ref()
        .and_then(|p| p.batch_size)
        .or_else(|| l.data_param.as_ref().and_then(|p| p.batch_size))
        .map(|b| b as i64)
}

fn convert_net(path: &Path, opts: &Options, notes: &mut Vec<String>) -> Result<NetOut> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    let net: NetParameter = protobuf::text_format::parse_from_str(&text)
        .map_err(|e| anyhow!("{file}:{e} (caffe NetParameter)"))?;
    let lines = layer_lines(&text, &net.layer);
    let at = |i: usize| format!("{file}:{}: layer `{}`", lines[i], net.layer[i].name());

    let mut input: Option<Vec<i64>> = None;
    if let Some(s) = net.input_shape.first() {
        input = Some(s.dim.iter().skip(1).copied().collect());
    } else if net.input_dim.len() == 4 {
        input = Some(net.input_dim[1..].iter().map(|d| *d as i64).collect());
    }
    let mut top: Option<String> = net.input.first().cloned();
    // The data layer's top: fkpnet calls the net's input `data`.
    let mut input_top: Option<String> = top.clone();
    let (mut batch, mut test_batch) = (None, None);
    let mut layers = Vec::new();
    let mut loss: Option<(f64, usize)> = None;
    for (i, l) in net.layer.iter().enumerate() {
        if !in_train_phase(l) {
            if matches!(l.type_(), "Data" | "HDF5Data") {
                test_batch = data_batch(l);
            } else {
                notes.push(format!("{}: TEST-phase layer skipped", at(i)));
            }
            continue;
        }
        if loss.is_some() {
            bail!("{}: layers after the loss are not supported (the loss must be last)", at(i));
        }
        match l.type_() {
            "Input" => {
                let p = l.input_param.as_ref().cloned().unwrap_or_default();
                let dims = p.shape.first().map(|s| s.dim.clone()).unwrap_or_default();
                if dims.len() != 4 {
                    bail!("{}: input_param shape must be N x C x H x W, got {dims:?}", at(i));
                }
                input = Some(dims[1..].to_vec());
                top = l.top.first().cloned();
                input_top = top.clone();
                continue;
            }
            "Data" | "HDF5Data" => {
                input = Some(opts.input.to_vec());
                batch = data_batch(l);
                if l.transform_param.as_ref().is_some_and(|t| t.mirror()) {
                    notes.push(format!(
                        "{}: Caffe's mirror flips only the image, not the keypoints; not converted",
                        at(i)
                    ));
                }
                top = l.top.first().cloned();
                input_top = top.clone();
                continue;
            }
            "EuclideanLoss" => {
                if l.bottom.first() != top.as_ref() {
                    bail!(
                        "{}: the loss must take the previous layer's output `{}`",
                        at(i),
                        top.unwrap_or_default()
                    );
                }
                loss = Some((l.loss_weight.first().copied().unwrap_or(1.0) as f64, i));
                continue;
            }
            _ => {}
        }
        if l.type_() == "Scale" {
            fold_scale(l, &at(i), &mut layers, &top, notes)?;
            top = l.top.first().cloned();
            continue;
        }
        let mut layer = convert_layer(l, &at(i), notes)?;
        // Caffe's graph as it is: bottoms by top name (the data layer's top is fkpnet's
        // `data`), written only where they are not simply the layer before.
        let data_top =
            |b: &String| if Some(b) == input_top.as_ref() { "data".to_string() } else { b.clone() };
        if l.bottom.is_empty() {
            bail!("{}: the layer has no bottom", at(i));
        }
        if l.bottom.len() != 1 || l.bottom.first() != top.as_ref() {
            let names: Vec<Value> = l.bottom.iter().map(|b| data_top(b).into()).collect();
            layer.insert(
                "bottom".into(),
                if names.len() == 1 { names[0].clone() } else { Value::Sequence(names) },
            );
        }
        if let Some(t) = l.top.first() {
            if t != l.name() {
                layer.insert("top".into(), t.clone().into());
            }
        }
        top = l.top.first().cloned();
        layers.push(Value::Mapping(layer));
    }
    let input = input
        .ok_or_else(|| anyhow!("{file}: no input shape: add an Input layer, or a Data/HDF5Data layer"))?;
    let (loss_weight, _) =
        loss.ok_or_else(|| anyhow!("{file}: no EuclideanLoss layer; fkpnet nets end in a loss"))?;
    let name = if net.name().is_empty() {
        path.file_stem().and_then(|s| s.to_str()).unwrap_or("net").to_string()
    } else {
        net.name().to_string()
    };
    let mut yaml = format!(
        "# Imported from {} by fkpnet import-caffe; Caffe semantics kept (ceil pooling, Caffe fillers).\n\
         name: {}\ninput: {}\nlayers:\n",
        path.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
        flow(&Value::String(name.clone())),
        flow(&serde_yaml::to_value(&input)?),
    );
    for l in &layers {
        yaml += &format!("  - {}\n", flow(l));
    }
    yaml +=
        &format!("loss: {{type: euclidean, loss_weight: {}}}   # EuclideanLoss: sum / (2N)\n", loss_weight);
    Ok(NetOut { name, yaml, batch, test_batch })
}

fn convert_solver(
    path: &Path,
    net_file: &str,
    batch: i64,
    test_batch: Option<i64>,
    opts: &Options,
) -> Result<String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    let s: SolverParameter = protobuf::text_format::parse_from_str(&text)
        .map_err(|e| anyhow!("{file}:{e} (caffe SolverParameter)"))?;
    let solver_type = if s.type_.is_none() && s.solver_type.is_some() {
        use solver_parameter::SolverType as T;
        match s.solver_type() {
            T::SGD => SolverType::SGD,
            T::NESTEROV => SolverType::Nesterov,
            T::ADAGRAD => SolverType::AdaGrad,
            T::RMSPROP => SolverType::RMSProp,
            T::ADADELTA => SolverType::AdaDelta,
            T::ADAM => SolverType::Adam,
        }
    } else {
        serde_yaml::from_value(Value::String(s.type_().into())).map_err(|_| {
            anyhow!(
                "{file}: type \"{}\": expected SGD, Nesterov, AdaGrad, RMSProp, AdaDelta or Adam",
                s.type_()
            )
        })?
    };
    let lr_policy: LrPolicy =
        serde_yaml::from_value(Value::String(s.lr_policy().to_lowercase())).map_err(|_| {
            anyhow!(
                "{file}: lr_policy \"{}\": expected fixed, step, exp, inv, multistep, poly or sigmoid",
                s.lr_policy()
            )
        })?;
    let regularization_type = match s.regularization_type() {
        "L2" => Regularization::L2,
        "L1" => Regularization::L1,
        other => bail!("{file}: regularization_type \"{other}\": expected L1 or L2"),
    };
    let f = |v: f32| num(v as f64).as_f64().unwrap_or(v as f64);
    let cfg = SolverConfig {
        net: Value::String(net_file.into()),
        data: DataConfig { split: 0.9, labels: Labels::Complete, ..DataConfig::of(opts.data.clone()) },
        solver_type,
        flavor: Default::default(),
        base_lr: f(s.base_lr()),
        lr_policy,
        gamma: s.gamma.map(f),
        power: s.power.map(f),
        stepsize: s.stepsize.map(|v| v as i64),
        stepvalue: s.stepvalue.iter().map(|v| *v as i64).collect(),
        max_iter: s.max_iter() as i64,
        warmup_iter: 0,
        patience: None,
        early_stop: 0,
        momentum: f(s.momentum()),
        momentum2: f(s.momentum2()),
        delta: f(s.delta()),
        rms_decay: f(s.rms_decay()),
        weight_decay: f(s.weight_decay()),
        ema_decay: 0.0,
        regularization_type,
        clip_gradients: f(s.clip_gradients()),
        iter_size: s.iter_size() as i64,
        batch_size: batch,
        test_interval: s.test_interval() as i64,
        // fkpnet's test_iter counts batches of batch_size: keep the number of faces.
        test_iter: s.test_iter.first().map_or(0, |t| {
            let faces = *t as i64 * test_batch.unwrap_or(batch);
            (faces + batch - 1) / batch
        }),
        test_initialization: s.test_initialization(),
        display: s.display() as i64,
        average_loss: s.average_loss() as i64,
        snapshot: s.snapshot() as i64,
        snapshot_prefix: Path::new(s.snapshot_prefix())
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("snapshot")
            .to_string(),
        random_seed: s.random_seed(),
        device: match s.solver_mode() {
            solver_parameter::SolverMode::CPU => "cpu".into(),
            solver_parameter::SolverMode::GPU => "auto".into(),
        },
        histograms: true,
        test: Default::default(),
        on_nan: Default::default(),
        precision: Default::default(),
        layout: Default::default(),
    };
    cfg.validate().map_err(|e| anyhow!("{file}: {e}"))?;
    Ok(format!(
        "# Imported from {} by fkpnet import-caffe. data.train: Kaggle's training.csv, or synthetic.\n{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
        serde_yaml::to_string(&cfg)?
    ))
}

/// Convert a Caffe net (and solver) prototxt. The net is compiled before returning,
/// so what comes out is a valid fkpnet net.
pub fn import(net: &Path, solver: Option<&Path>, opts: &Options) -> Result<Imported> {
    let mut notes = Vec::new();
    let out = convert_net(net, opts, &mut notes)?;
    let cfg: NetConfig = serde_yaml::from_str(&out.yaml)?;
    let src = NetSource { path: net.with_extension("yaml"), text: out.yaml.clone() };
    Graph::compile(&cfg, &src, None).map_err(|e| anyhow!("the converted net: {e:#}"))?;
    let net_file = format!("{}.yaml", out.name);
    let solver_yaml = match solver {
        Some(s) => Some(convert_solver(s, &net_file, out.batch.unwrap_or(opts.batch), out.test_batch, opts)?),
        None => None,
    };
    Ok(Imported { net_name: out.name, net_yaml: out.yaml, solver_yaml, notes })
}
