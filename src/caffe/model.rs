//! Caffe's trained weights (`.caffemodel`, a binary NetParameter whose layers carry
//! `blobs`) both ways: read into fkpnet's tensor names (`conv1.weight`, ...), and
//! written, with a `deploy.prototxt`, from a trained fkpnet model (`fkpnet export
//! --format caffe`). Blobs are matched by layer name, as Caffe's
//! `CopyTrainedLayersFrom` matches them.

use super::proto::caffe::{
    eltwise_parameter::EltwiseOp, pooling_parameter, BlobProto, BlobShape, LayerParameter, NetParameter,
};
use crate::graph::{Graph, Node, Param};
use anyhow::{anyhow, bail, Result};
use protobuf::{Message, MessageField};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

pub fn is_caffemodel(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "caffemodel")
}

/// A blob's shape: `shape { dim }`, or the legacy num/channels/height/width (with the
/// leading 1s Caffe's old files pad vectors and matrices with, dropped).
fn blob_shape(b: &BlobProto) -> Vec<i64> {
    if let Some(s) = b.shape.as_ref() {
        return s.dim.clone();
    }
    let mut dims: Vec<i64> =
        [b.num(), b.channels(), b.height(), b.width()].iter().map(|d| *d as i64).collect();
    while dims.len() > 1 && dims[0] == 1 {
        dims.remove(0);
    }
    dims
}

fn blob_values(b: &BlobProto) -> Vec<f32> {
    if b.data.is_empty() {
        b.double_data.iter().map(|d| *d as f32).collect()
    } else {
        b.data.clone()
    }
}

/// Blob `i` of `l` as a tensor, checked for as many values as its shape says.
fn blob(l: &LayerParameter, i: usize, file: &str) -> Result<Tensor> {
    let b = &l.blobs[i];
    let (shape, values) = (blob_shape(b), blob_values(b));
    if shape.iter().product::<i64>() != values.len() as i64 {
        bail!(
            "{file}: layer `{}` blob {i} has shape {shape:?} but {} values: the file is damaged",
            l.name(),
            values.len()
        );
    }
    Ok(Tensor::from_slice(&values).reshape(&shape))
}

/// The weights of a `.caffemodel` under fkpnet's tensor names: Convolution and
/// InnerProduct blobs are `NAME.weight` / `NAME.bias`, PReLU's `NAME.weight`;
/// BatchNorm's mean and variance are divided by its third blob (the moving-average
/// normaliser) as Caffe does at test time; a Scale after a BatchNorm gives that
/// BatchNorm's `weight` / `bias` (fkpnet folds the two into one layer, as
/// import-caffe does). Layers of other types carry no blobs fkpnet keeps; their
/// names are returned as notes.
pub fn read(path: &Path) -> Result<(HashMap<String, Tensor>, Vec<String>)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    let net = NetParameter::parse_from_bytes(&bytes)
        .map_err(|e| anyhow!("{file}: not a Caffe NetParameter ({e}); is it a .caffemodel?"))?;
    if net.layer.is_empty() {
        if net.special_fields.unknown_fields().get(2).is_some() {
            bail!(
                "{file}: the V1 format (`layers`, from Caffe before 2015); upgrade it with Caffe's \
                 `upgrade_net_proto_binary OLD.caffemodel NEW.caffemodel`"
            );
        }
        bail!("{file}: no layers: not a trained Caffe model");
    }
    let (mut out, mut notes) = (HashMap::new(), Vec::new());
    // Which layer wrote each blob last (a Scale's bottom is its BatchNorm's top).
    let mut producer: HashMap<&str, &LayerParameter> = HashMap::new();
    for l in &net.layer {
        let name = l.name();
        let count = l.blobs.len();
        let expect = |n: std::ops::RangeInclusive<usize>| -> Result<()> {
            if !n.contains(&count) {
                bail!("{file}: layer `{name}` ({}) has {count} blobs, expected {n:?}", l.type_());
            }
            Ok(())
        };
        match l.type_() {
            _ if count == 0 => {}
            "Convolution" | "InnerProduct" => {
                expect(1..=2)?;
                let mut w = blob(l, 0, &file)?;
                if l.type_() == "InnerProduct" {
                    let p = l.inner_product_param.as_ref();
                    let n = w.size().iter().product::<i64>();
                    let outs = p.map_or(w.size()[0], |p| p.num_output() as i64);
                    // Caffe keeps (out, in), or (in, out) with `transpose: true`.
                    w = if p.is_some_and(|p| p.transpose()) {
                        w.reshape([n / outs, outs]).transpose(0, 1).contiguous()
                    } else {
                        w.reshape([outs, n / outs])
                    };
                }
                out.insert(format!("{name}.weight"), w);
                if count == 2 {
                    out.insert(format!("{name}.bias"), blob(l, 1, &file)?.flatten(0, -1));
                }
            }
            "PReLU" => {
                expect(1..=1)?;
                out.insert(format!("{name}.weight"), blob(l, 0, &file)?.flatten(0, -1));
            }
            "BatchNorm" => {
                expect(3..=3)?;
                let factor = f64::try_from(blob(l, 2, &file)?.flatten(0, -1).get(0)).unwrap_or(0.0);
                let scale = if factor == 0.0 { 0.0 } else { 1.0 / factor };
                out.insert(format!("{name}.running_mean"), blob(l, 0, &file)?.flatten(0, -1) * scale);
                out.insert(format!("{name}.running_var"), blob(l, 1, &file)?.flatten(0, -1) * scale);
                out.insert(format!("{name}.num_batches_tracked"), Tensor::from(0i64));
            }
            "Scale" => {
                expect(1..=2)?;
                let bn = l
                    .bottom
                    .first()
                    .and_then(|b| producer.get(b.as_str()))
                    .filter(|p| p.type_() == "BatchNorm");
                let Some(bn) = bn else {
                    bail!(
                        "{file}: layer `{name}` (Scale) does not follow a BatchNorm: fkpnet takes a Scale only \
                         as a BatchNorm's affine part"
                    );
                };
                out.insert(format!("{}.weight", bn.name()), blob(l, 0, &file)?.flatten(0, -1));
                let c = l.blobs[0].data.len().max(l.blobs[0].double_data.len()) as i64;
                let bias = if count == 2 {
                    blob(l, 1, &file)?.flatten(0, -1)
                } else {
                    Tensor::zeros([c], tch::kind::FLOAT_CPU)
                };
                out.insert(format!("{}.bias", bn.name()), bias);
            }
            other => notes.push(format!("{file}: layer `{name}` ({other}): its {count} blob(s) ignored")),
        }
        for t in &l.top {
            producer.insert(t, l);
        }
    }
    Ok((out, notes))
}

fn blob_of(t: &Tensor) -> BlobProto {
    let t = t.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu).contiguous();
    let mut b = BlobProto::new();
    b.shape = MessageField::some(BlobShape { dim: t.size(), ..Default::default() });
    b.data = Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor");
    b
}

fn caffe_layer(name: &str, kind: &str, bottoms: Vec<String>) -> LayerParameter {
    let mut l = LayerParameter::new();
    l.set_name(name.into());
    l.set_type(kind.into());
    l.bottom = bottoms;
    l.top = vec![name.into()];
    l
}

/// The layers of a Caffe deploy net for `graph`, with their blobs from `params` where
/// `with_blobs` (the .caffemodel) or without (the prototxt). Each layer's top is its
/// own name, so no blob is written in place. A layer Caffe has no type for is an
/// error naming it.
pub fn deploy(graph: &Graph, params: &[Param], with_blobs: bool) -> Result<NetParameter> {
    let mut net = NetParameter::new();
    net.set_name(graph.name.clone());
    let mut input = caffe_layer("data", "Input", vec![]);
    let mut shape = BlobShape::new();
    shape.dim = std::iter::once(1).chain(graph.input.iter().copied()).collect();
    input.input_param.mut_or_insert_default().shape.push(shape);
    net.layer.push(input);
    let tensor = |n: &str| -> Result<Tensor> {
        params
            .iter()
            .find(|p| p.name == n)
            .map(|p| p.tensor.shallow_clone())
            .ok_or_else(|| anyhow!("the model has no tensor `{n}`"))
    };
    for n in &graph.nodes {
        let bottoms = n.bottoms.iter().map(|b| graph.blob_name(*b)).collect();
        let v = n.layer.to_yaml();
        let mut l = caffe_layer(&n.name, "", bottoms);
        set_type_and_params(&mut l, n, &v)?;
        if with_blobs {
            l.blobs = blobs_of(n, &tensor)?;
        }
        net.layer.push(l);
        if n.kind == "batchnorm" && v["affine"].as_bool() == Some(true) {
            // The affine part is Caffe's Scale (with bias), in place on the BatchNorm's top.
            let name = format!("{}_scale", n.name);
            let mut s = caffe_layer(&name, "Scale", vec![n.name.clone()]);
            s.top = vec![n.name.clone()];
            s.scale_param.mut_or_insert_default().set_bias_term(true);
            if with_blobs {
                s.blobs = vec![
                    blob_of(&tensor(&format!("{}.weight", n.name))?),
                    blob_of(&tensor(&format!("{}.bias", n.name))?),
                ];
            }
            net.layer.push(s);
        }
    }
    Ok(net)
}

/// A node's Caffe type and its `*_param` from the layer's resolved config `v`.
fn set_type_and_params(l: &mut LayerParameter, n: &Node, v: &serde_yaml::Value) -> Result<()> {
    let int = |k: &str| v[k].as_i64().unwrap_or(0) as u32;
    match n.kind {
        "conv" => {
            l.set_type("Convolution".into());
            let p = l.convolution_param.mut_or_insert_default();
            p.set_num_output(int("num_output"));
            p.kernel_size = vec![int("kernel_size")];
            p.stride = vec![int("stride")];
            p.pad = vec![int("pad")];
            p.dilation = vec![int("dilation")];
            p.set_group(int("group"));
            p.set_bias_term(v["bias_term"].as_bool().unwrap_or(true));
        }
        "dense" => {
            l.set_type("InnerProduct".into());
            let p = l.inner_product_param.mut_or_insert_default();
            p.set_num_output(int("num_output"));
            p.set_bias_term(v["bias_term"].as_bool().unwrap_or(true));
        }
        "pool" => {
            l.set_type("Pooling".into());
            let p = l.pooling_param.mut_or_insert_default();
            p.set_pool(match v["pool"].as_str() {
                Some("ave") => pooling_parameter::PoolMethod::AVE,
                _ => pooling_parameter::PoolMethod::MAX,
            });
            if v["global_pooling"].as_bool() == Some(true) {
                p.set_global_pooling(true);
            } else {
                p.set_kernel_size(int("kernel_size"));
            }
            p.set_stride(int("stride"));
            p.set_pad(int("pad"));
            p.set_round_mode(match v["round_mode"].as_str() {
                Some("floor") => pooling_parameter::RoundMode::FLOOR,
                _ => pooling_parameter::RoundMode::CEIL,
            });
        }
        "relu" => {
            l.set_type("ReLU".into());
            let slope = v["negative_slope"].as_f64().unwrap_or(0.0);
            if slope != 0.0 {
                l.relu_param.mut_or_insert_default().set_negative_slope(slope as f32);
            }
        }
        "prelu" => {
            l.set_type("PReLU".into());
            l.prelu_param
                .mut_or_insert_default()
                .set_channel_shared(v["channel_shared"].as_bool() == Some(true));
        }
        "dropout" => {
            l.set_type("Dropout".into());
            l.dropout_param
                .mut_or_insert_default()
                .set_dropout_ratio(v["dropout_ratio"].as_f64().unwrap_or(0.5) as f32);
        }
        "flatten" => l.set_type("Flatten".into()),
        "concat" => {
            l.set_type("Concat".into());
            l.concat_param.mut_or_insert_default().set_axis(int("axis") as i32);
        }
        "eltwise" => {
            l.set_type("Eltwise".into());
            let p = l.eltwise_param.mut_or_insert_default();
            p.set_operation(match v["operation"].as_str() {
                Some("prod") => EltwiseOp::PROD,
                Some("max") => EltwiseOp::MAX,
                _ => EltwiseOp::SUM,
            });
            p.coeff = v["coeff"]
                .as_sequence()
                .map_or(vec![], |c| c.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect());
        }
        "batchnorm" => {
            l.set_type("BatchNorm".into());
            let p = l.batch_norm_param.mut_or_insert_default();
            p.set_eps(v["eps"].as_f64().unwrap_or(1e-5) as f32);
            p.set_moving_average_fraction(v["moving_average_fraction"].as_f64().unwrap_or(0.999) as f32);
        }
        _ => bail!(
            "layer `{}` ({}): Caffe has no such layer, so this net cannot be exported to Caffe (it takes \
             conv, dense, pool, relu, prelu, dropout, flatten, concat, eltwise and batchnorm)",
            n.name,
            n.kind
        ),
    }
    Ok(())
}

/// A node's blobs in Caffe's order: weights and bias; PReLU's slopes; BatchNorm's
/// mean, variance and scale factor (1: fkpnet keeps the statistics unscaled).
fn blobs_of(n: &Node, tensor: &dyn Fn(&str) -> Result<Tensor>) -> Result<Vec<BlobProto>> {
    let named = |suffix: &str| tensor(&format!("{}.{suffix}", n.name)).map(|t| blob_of(&t));
    match n.kind {
        "conv" | "dense" => n.params.iter().map(|d| named(d.suffix)).collect(),
        "prelu" => Ok(vec![named("weight")?]),
        "batchnorm" => Ok(vec![
            named("running_mean")?,
            named("running_var")?,
            blob_of(&Tensor::ones([1], tch::kind::FLOAT_CPU)),
        ]),
        _ => Ok(vec![]),
    }
}

/// `deploy.prototxt` and `model.caffemodel` for a trained model, into `dir`.
pub fn write(graph: &Graph, params: &[Param], dir: &Path) -> Result<()> {
    let text = protobuf::text_format::print_to_string_pretty(&deploy(graph, params, false)?);
    crate::run::write_text(&dir.join("deploy.prototxt"), &text)?;
    let bytes = deploy(graph, params, true)?.write_to_bytes()?;
    std::fs::write(dir.join("model.caffemodel"), bytes)
        .map_err(|e| anyhow!("cannot write {}: {e}", dir.join("model.caffemodel").display()))
}
