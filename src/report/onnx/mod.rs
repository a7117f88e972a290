//! `fkpnet export --format onnx`: the trained net as an ONNX model (IR 7, opset 13,
//! a dynamic batch), written from Rust through proto/onnx.proto, so that
//! onnxruntime, TensorRT, OpenCV's DNN and tract run it. Every op is chosen to
//! compute fkpnet's numbers: Caffe's ceil pooling as `ceil_mode` (which, as Caffe,
//! drops a last window that would start in the padding), soft-argmax as a softmax and
//! a matmul with the constant grid of cell centres, upsampling with the coordinate
//! mode of libtorch's.

use super::model::Model;
use crate::data::framing::Fitted;
use crate::graph::Node;
use crate::proto::onnx::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use anyhow::{anyhow, bail, Result};
use protobuf::Message;

mod proto;
use proto::{attr_float, attr_int, attr_ints, attr_str, value_info, Onnx};

pub const OPSET: i64 = 13;

/// One fkpnet layer as ONNX nodes reading `inputs` and writing the layer's name.
fn layer(g: &mut Onnx, model: &Model, n: &Node, inputs: &[String]) -> Result<()> {
    let v = n.layer.to_yaml();
    let int = |k: &str| v[k].as_i64().unwrap_or(0);
    let name = n.name.as_str();
    let x = inputs[0].as_str();
    let pair = |k: &str| vec![int(k), int(k)];
    match n.kind {
        "conv" => {
            let w = g.tensor(model, &format!("{name}.weight"))?;
            let mut ins = vec![x.to_string(), w];
            if v["bias_term"].as_bool() != Some(false) {
                ins.push(g.tensor(model, &format!("{name}.bias"))?);
            }
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            let p = int("pad");
            g.node(
                "Conv",
                name,
                &ins,
                name,
                vec![
                    attr_ints("kernel_shape", &pair("kernel_size")),
                    attr_ints("strides", &pair("stride")),
                    attr_ints("pads", &[p, p, p, p]),
                    attr_ints("dilations", &pair("dilation")),
                    attr_int("group", int("group")),
                ],
            );
        }
        "dense" => {
            let flat = format!("{name}/flatten");
            g.node("Flatten", &flat, &[x], &flat, vec![attr_int("axis", 1)]);
            let w = g.tensor(model, &format!("{name}.weight"))?;
            let mut ins = vec![flat, w];
            if v["bias_term"].as_bool() != Some(false) {
                ins.push(g.tensor(model, &format!("{name}.bias"))?);
            }
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            g.node("Gemm", name, &ins, name, vec![attr_int("transB", 1)]);
        }
        "relu" => match v["negative_slope"].as_f64().unwrap_or(0.0) {
            0.0 => g.node("Relu", name, &[x], name, vec![]),
            // LeakyRelu is max(0, x) + alpha * min(0, x) for every alpha, as Caffe's.
            s => g.node("LeakyRelu", name, &[x], name, vec![attr_float("alpha", s)]),
        },
        "prelu" => {
            let p = model
                .params
                .iter()
                .find(|p| p.name == format!("{name}.weight"))
                .ok_or_else(|| anyhow!("no slope"))?;
            let c = p.tensor.size()[0];
            let slope = Vec::<f32>::try_from(p.tensor.detach().to_kind(tch::Kind::Float).flatten(0, -1))?;
            // Broadcast over H and W (or the vector): per channel as Caffe's.
            let dims = if n.input().len() == 3 { vec![c, 1, 1] } else { vec![c] };
            let s = g.floats(&format!("{name}.weight"), &dims, slope);
            g.node("PRelu", name, &[x, &s], name, vec![]);
        }
        "pool" => pool(g, n, &v, x)?,
        "dropout" => g.node("Identity", name, &[x], name, vec![]),
        "flatten" => g.node("Flatten", name, &[x], name, vec![attr_int("axis", 1)]),
        "batchnorm" => {
            let c = n.input()[0];
            let (scale, bias) = if v["affine"].as_bool() == Some(true) {
                (g.tensor(model, &format!("{name}.weight"))?, g.tensor(model, &format!("{name}.bias"))?)
            } else {
                (
                    g.floats(&format!("{name}/scale"), &[c], vec![1.0; c as usize]),
                    g.floats(&format!("{name}/shift"), &[c], vec![0.0; c as usize]),
                )
            };
            let mean = g.tensor(model, &format!("{name}.running_mean"))?;
            let var = g.tensor(model, &format!("{name}.running_var"))?;
            let eps = v["eps"].as_f64().unwrap_or(1e-5);
            g.node(
                "BatchNormalization",
                name,
                &[x, &scale, &bias, &mean, &var],
                name,
                vec![attr_float("epsilon", eps)],
            );
        }
        "concat" if inputs.len() > 1 => {
            let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
            g.node("Concat", name, &ins, name, vec![attr_int("axis", int("axis"))]);
        }
        "eltwise" if inputs.len() > 1 => eltwise(g, n, &v, inputs),
        "concat" | "eltwise" => g.node("Identity", name, &[x], name, vec![]),
        "soft_argmax" => soft_argmax(g, n, &v, x)?,
        "upsample" => upsample(g, n, &v, x)?,
        other => bail!("layer `{name}` ({other}): no ONNX form yet"),
    }
    Ok(())
}

/// Sum (after Muls by the coefficients), a chain of two-input Muls, or Max.
fn eltwise(g: &mut Onnx, n: &Node, v: &serde_yaml::Value, inputs: &[String]) {
    let name = n.name.as_str();
    let coeff: Vec<f64> =
        v["coeff"].as_sequence().map_or(vec![], |c| c.iter().filter_map(|x| x.as_f64()).collect());
    let mut ins: Vec<String> = inputs.to_vec();
    if !coeff.is_empty() {
        for (i, c) in coeff.iter().enumerate() {
            let k = g.floats(&format!("{name}/coeff{i}"), &[], vec![*c as f32]);
            let out = format!("{name}/scaled{i}");
            g.node("Mul", &out, &[&ins[i], &k], &out, vec![]);
            ins[i] = out;
        }
    }
    let op = match v["operation"].as_str() {
        Some("prod") => "Mul",
        Some("max") => "Max",
        _ => "Sum",
    };
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    if op == "Mul" {
        // Mul takes two inputs: a chain.
        let mut acc = ins[0].to_string();
        for (i, b) in ins[1..].iter().enumerate() {
            let out = if i + 2 == ins.len() { name.to_string() } else { format!("{name}/prod{i}") };
            g.node("Mul", &out, &[&acc, b], &out, vec![]);
            acc = out;
        }
    } else {
        g.node(op, name, &ins, name, vec![]);
    }
}

/// p = softmax(beta * map) per channel; (x, y) = p . grid, the grid holding each
/// cell's centre in target units (-1..1), x then y: N x C x 2 -> N x 2C.
fn soft_argmax(g: &mut Onnx, n: &Node, v: &serde_yaml::Value, x: &str) -> Result<()> {
    let name = n.name.as_str();
    let (h, w) = (n.input()[1], n.input()[2]);
    let beta = g.floats(&format!("{name}/beta"), &[], vec![v["beta"].as_f64().unwrap_or(1.0) as f32]);
    let centre = |i: i64, len: i64| ((i as f64 + 0.5) * (2.0 / len as f64) - 1.0) as f32;
    let mut grid = Vec::with_capacity((h * w * 2) as usize);
    for yi in 0..h {
        for xi in 0..w {
            grid.extend([centre(xi, w), centre(yi, h)]);
        }
    }
    let grid = g.floats(&format!("{name}/grid"), &[h * w, 2], grid);
    let flat_shape = g.ints(&format!("{name}/maps_shape"), vec![0, 0, -1]);
    let out_shape = g.ints(&format!("{name}/out_shape"), vec![0, -1]);
    let (s, f, p, xy) =
        (format!("{name}/scaled"), format!("{name}/flat"), format!("{name}/p"), format!("{name}/xy"));
    g.node("Mul", &s, &[x, &beta], &s, vec![]);
    g.node("Reshape", &f, &[&s, &flat_shape], &f, vec![]);
    g.node("Softmax", &p, &[&f], &p, vec![attr_int("axis", 2)]);
    g.node("MatMul", &xy, &[&p, &grid], &xy, vec![]);
    g.node("Reshape", name, &[&xy, &out_shape], name, vec![]);
    Ok(())
}

/// Resize with libtorch's coordinate mode: nearest = asymmetric + floor, bilinear =
/// half_pixel (align_corners false).
fn upsample(g: &mut Onnx, n: &Node, v: &serde_yaml::Value, x: &str) -> Result<()> {
    let name = n.name.as_str();
    let int = |k: &str| v[k].as_i64().unwrap_or(0);
    let s = int("scale_factor") as f32;
    let scales = g.floats(&format!("{name}/scales"), &[4], vec![1.0, 1.0, s, s]);
    let attrs = match v["mode"].as_str() {
        Some("bilinear") => {
            vec![attr_str("mode", "linear"), attr_str("coordinate_transformation_mode", "half_pixel")]
        }
        _ => vec![
            attr_str("mode", "nearest"),
            attr_str("coordinate_transformation_mode", "asymmetric"),
            attr_str("nearest_mode", "floor"),
        ],
    };
    g.node("Resize", name, &[x, "", &scales], name, attrs);
    Ok(())
}

/// Max or average pooling; Caffe's ceil rounding is ceil_mode (which, as Caffe, drops
/// a last window that would start in the padding).
fn pool(g: &mut Onnx, n: &Node, v: &serde_yaml::Value, x: &str) -> Result<()> {
    let name = n.name.as_str();
    let int = |k: &str| v[k].as_i64().unwrap_or(0);
    let pair = |k: &str| vec![int(k), int(k)];
    let ave = v["pool"].as_str() == Some("ave");
    if v["global_pooling"].as_bool() == Some(true) {
        g.node(if ave { "GlobalAveragePool" } else { "GlobalMaxPool" }, name, &[x], name, vec![]);
    } else {
        let p = int("pad");
        let mut attrs = vec![
            attr_ints("kernel_shape", &pair("kernel_size")),
            attr_ints("strides", &pair("stride")),
            attr_ints("pads", &[p, p, p, p]),
            attr_int("ceil_mode", (v["round_mode"].as_str() != Some("floor")) as i64),
        ];
        if ave {
            // Caffe divides by the window with its padding (clipped to the padded map).
            attrs.push(attr_int("count_include_pad", (p > 0) as i64));
        }
        g.node(if ave { "AveragePool" } else { "MaxPool" }, name, &[x], name, attrs);
    }
    Ok(())
}

/// What a client (fkpnet-infer) needs to feed the model and read it, as JSON: the
/// input's size and colour, how a face is cut out of a photo (fkpnet_face's boxes),
/// the output's scaling, and the keypoints with the CSV columns fkpnet predict prints.
fn client_meta(spec: &crate::data::Spec, framing: Option<&Fitted>) -> String {
    let kaggle = spec.format == crate::data::DataFormat::Kaggle;
    let (first, columns): (&str, Vec<String>) = if kaggle {
        ("input", spec.target_columns())
    } else {
        ("image", (0..spec.keypoints.len()).flat_map(|k| [format!("x{k}"), format!("y{k}")]).collect())
    };
    let mut meta = serde_json::json!({
        "version": 1,
        "input": {"name": "data", "channels": spec.channels, "height": spec.height, "width": spec.width,
                  "scale": 1.0 / 255.0},
        "output": {"name": "keypoints", "half": spec.half()},
        "crop": {"from": crate::config::name_of(&spec.crop.from), "margin": spec.crop.margin},
        "keypoints": spec.keypoints.names,
        "csv": {"first": first, "columns": columns},
    });
    // How the training faces sit in the face detector's boxes: what a client needs to
    // cut the faces it detects in photos as this net was trained (data::framing).
    if let Some(f) = framing {
        meta["framing"] =
            serde_json::json!({"detector": f.detector, "dx": f.dx, "dy": f.dy, "scale": f.scale});
    }
    meta.to_string()
}

/// A model's net as ONNX nodes and initialisers, before its metadata: `fkpnet export`
/// converts first, so that a net that cannot be exported fails before anything is
/// written or fitted.
pub struct Converted(Onnx);

/// Convert every layer: input `data` (N x C x H x W, pixels / 255), output `keypoints`
/// (N x 2K, (xy - half) / half).
pub fn convert(model: &Model) -> Result<Converted> {
    let graph = &model.graph;
    let mut g = Onnx { nodes: Vec::new(), inits: Vec::new() };
    for n in &graph.nodes {
        let inputs: Vec<String> = n.bottoms.iter().map(|b| graph.blob_name(*b)).collect();
        layer(&mut g, model, n, &inputs).map_err(|e| anyhow!("cannot export to ONNX: {e:#}"))?;
    }
    let last = graph.nodes.last().ok_or_else(|| anyhow!("the net has no layers"))?;
    g.node("Identity", "keypoints", &[&last.name], "keypoints", vec![]);
    Ok(Converted(g))
}

/// The converted model as ONNX bytes, with what a client needs to use it in the
/// metadata (and the framing for faces found in photos, where there is one).
pub fn model_bytes(converted: Converted, model: &Model, framing: Option<&Fitted>) -> Result<Vec<u8>> {
    let (graph, g) = (&model.graph, converted.0);
    let input: Vec<Option<i64>> = std::iter::once(None).chain(graph.input.iter().map(|d| Some(*d))).collect();
    let k = model.spec.keypoints.len();
    let meta = [
        (
            "input",
            format!(
                "data: N x {} x {} x {} float, {} pixels / 255",
                graph.input[0],
                graph.input[1],
                graph.input[2],
                if graph.input[0] == 3 { "RGB" } else { "grey" }
            ),
        ),
        (
            "output",
            format!(
                "keypoints: N x {}, x0, y0, x1, y1, ... in the face image's pixels as keypoints * {h} + {h}",
                2 * k,
                h = model.spec.half()
            ),
        ),
        ("keypoint_names", model.spec.keypoints.names.join(",")),
        ("fkpnet", client_meta(&model.spec, framing)),
        ("producer", format!("fkpnet {} from {}", env!("CARGO_PKG_VERSION"), model.weights.display())),
    ];
    let proto = ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
            ..Default::default()
        }],
        producer_name: Some("fkpnet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: protobuf::MessageField::some(GraphProto {
            node: g.nodes,
            name: Some(graph.name.clone()),
            initializer: g.inits,
            input: vec![value_info("data", &input)],
            output: vec![value_info("keypoints", &[None, Some(2 * k as i64)])],
            ..Default::default()
        }),
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Ok(proto.write_to_bytes()?)
}
