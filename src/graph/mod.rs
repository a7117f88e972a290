//! Net config -> checked layer graph (every shape, param count and FLOP known before
//! anything is allocated) -> libtorch module.

use crate::config::net::{layer_lines, layer_names, LayerCommon};
use crate::config::schema::did_you_mean;
use crate::config::{LossConfig, NetConfig, NetSource, ParamMult};
use crate::layers::{self, shape_str, Layer, ParamDef, Shape};
use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};
use tch::Tensor;

mod build;
mod net;
pub use net::{save_weights, Net, Tape};

pub struct Node {
    pub name: String,
    pub kind: &'static str,
    pub layer: Box<dyn Layer>,
    /// lr_mult/decay_mult per tensor in `params` (buffers keep the defaults).
    pub mults: Vec<ParamMult>,
    /// Blobs read: 0 is the net's input, k + 1 the output of node k.
    pub bottoms: Vec<usize>,
    /// Their shapes (one for all but merge layers).
    pub inputs: Vec<Shape>,
    pub output: Shape,
    pub params: Vec<ParamDef>,
    pub flops: i64,
}

impl Node {
    /// The (first) input's shape: what a single-input layer reads.
    pub fn input(&self) -> &Shape {
        &self.inputs[0]
    }
}

pub struct Graph {
    pub name: String,
    pub input: Shape,
    pub nodes: Vec<Node>,
    pub loss: LossConfig,
}

/// A tensor of a built net, with its solver multipliers. `learn: false` marks a
/// buffer (running statistics): saved and loaded, never updated by the solver.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub mult: ParamMult,
    pub learn: bool,
}

/// Split a layer mapping into the keys every layer has and its kind's params.
pub fn parse_layer(v: &Value) -> Result<(LayerCommon, Box<dyn Layer>), String> {
    let map = v.as_mapping().ok_or_else(|| format!("a layer must be a mapping with a `type:`, got {v:?}"))?;
    let (mut common, mut params) = (Mapping::new(), Mapping::new());
    // The keys every layer has are LayerCommon's fields; the rest are its kind's.
    let common_keys = crate::config::schema::struct_fields::<LayerCommon>();
    for (k, val) in map {
        if k.as_str().is_some_and(|k| common_keys.contains(&k)) {
            common.insert(k.clone(), val.clone());
        } else {
            params.insert(k.clone(), val.clone());
        }
    }
    let common: LayerCommon = serde_yaml::from_value(Value::Mapping(common)).map_err(|e| e.to_string())?;
    let names = layers::kind_names();
    let kind = layers::kind(&common.kind).ok_or_else(|| {
        // Case aside (`Conv`, `Dense`), and Caffe's names in other case (`RELU`).
        let lower = common.kind.to_lowercase();
        let caffe = layers::CAFFE_NAMES.iter().find(|(c, _)| c.to_lowercase() == lower).map(|(_, k)| *k);
        let hint = caffe
            .or_else(|| did_you_mean(&lower, &names))
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        format!("unknown layer type `{}`{hint}; valid types: {}", common.kind, names.join(", "))
    })?;
    let layer = (kind.parse)(Value::Mapping(params))
        .map_err(|e| format!("{}: {}", kind.name, crate::config::schema::explain(&e.to_string())))?;
    Ok((common, layer))
}

/// Blob names while compiling: `data`/`input` is the net's input; each layer's
/// output is known by its name and its `top`, the latest layer with a name holding it.
struct Blobs {
    index: std::collections::HashMap<String, usize>,
    shapes: Vec<Shape>,
}

impl Blobs {
    fn new(input: &Shape) -> Blobs {
        Blobs {
            index: [("data".to_string(), 0), ("input".to_string(), 0)].into(),
            shapes: vec![input.clone()],
        }
    }

    /// The blobs layer `i` reads: its `bottom` names, or the layer before.
    fn bottoms(&self, i: usize, common: &LayerCommon, at: &str) -> Result<Vec<usize>> {
        if common.bottom.is_empty() {
            return Ok(vec![i]);
        }
        let mut known: Vec<&str> = self.index.keys().map(|k| k.as_str()).collect();
        known.sort();
        common
            .bottom
            .iter()
            .map(|b| {
                self.index.get(b).copied().ok_or_else(|| {
                    let hint = did_you_mean(b, &known)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    anyhow::anyhow!(
                        "{at}: bottom `{b}` is not the name or top of an earlier layer{hint}; known: {}",
                        known.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Layer `i`'s output is known by its name and its top from now on.
    fn add(&mut self, i: usize, name: &str, top: Option<&String>, shape: Shape) {
        self.index.insert(name.to_string(), i + 1);
        if let Some(top) = top {
            self.index.insert(top.clone(), i + 1);
        }
        self.shapes.push(shape);
    }
}

/// A layer's output shape and FLOPs for its bottoms' shapes (one, or several for the
/// kinds that join them).
fn shape_and_flops(layer: &dyn Layer, kind: &str, inputs: &[Shape], at: &str) -> Result<(Shape, i64)> {
    let shape_err = |e: String| {
        let ins: Vec<String> = inputs.iter().map(|s| shape_str(s)).collect();
        anyhow::anyhow!("{at} ({kind}), input {}: {e}", ins.join(" + "))
    };
    if inputs.len() == 1 {
        let out = layer.output_shape(&inputs[0]).map_err(shape_err)?;
        let flops = layer.flops(&inputs[0], &out);
        return Ok((out, flops));
    }
    let merge = layer.merge().ok_or_else(|| {
        anyhow::anyhow!(
            "{at}: a {kind} layer takes one bottom, got {}; concat and eltwise join several",
            inputs.len()
        )
    })?;
    let out = merge.merge_shape(inputs).map_err(shape_err)?;
    let flops = merge.merge_flops(inputs, &out);
    Ok((out, flops))
}

/// lr_mult/decay_mult of each of a layer's tensors: the `param` entries for its
/// learnable ones in order, the defaults for the rest and for buffers.
fn multipliers(params: &[ParamDef], given: &[ParamMult], at: &str) -> Result<Vec<ParamMult>> {
    let learnable = params.iter().filter(|p| p.learn).count();
    if given.len() > learnable {
        bail!("{at}: {} `param` entries given, but the layer has {learnable} learnable blobs", given.len());
    }
    let mut given = given.iter();
    Ok(params
        .iter()
        .map(|p| if p.learn { given.next().copied().unwrap_or_default() } else { ParamMult::default() })
        .collect())
}

/// Tensors are named `LAYER.weight`, and libtorch's VarStore refuses a dot in a path
/// segment (found by the 100,000-case fuzz run).
fn check_name(name: &str, nodes: &[Node], at: &str) -> Result<()> {
    if name.is_empty() || name.contains('.') {
        bail!("{at}: a layer name must be non-empty and without `.` (its tensors are named NAME.weight, NAME.bias); got `{name}`");
    }
    if nodes.iter().any(|n| n.name == name) {
        bail!("{at}: the name `{name}` is used twice; layer names must be unique");
    }
    Ok(())
}

/// The net's end against the data: 2K values (`outputs`) where the data is known, an
/// even-length vector otherwise; a heatmap loss needs a layer that reads heatmaps.
fn check_head(nodes: &[Node], loss: &LossConfig, outputs: Option<i64>, file: &str) -> Result<()> {
    let last = nodes.last().expect("non-empty");
    let shape = &last.output;
    match outputs {
        Some(n) if *shape != [n] => bail!(
            "{file}: the last layer `{}` outputs {} but the data has {n} targets ({} keypoints x/y); \
             end the net with a dense layer of num_output: {n} (or a soft_argmax over {} heatmaps)",
            last.name,
            shape_str(shape),
            n / 2,
            n / 2
        ),
        None if shape.len() != 1 || shape[0] % 2 != 0 => bail!(
            "{file}: the last layer `{}` outputs {}, but a keypoint net outputs x and y of each keypoint: \
             a vector of even length",
            last.name,
            shape_str(shape)
        ),
        _ => {}
    }
    loss.check().map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if loss.js_reg.is_some() && !last.layer.reads_heatmaps() {
        bail!(
            "{file}: loss `js_reg` regularises heatmaps, but the last layer `{}` is a {}; \
             end the net with a soft_argmax layer (or drop js_reg)",
            last.name,
            last.kind
        );
    }
    Ok(())
}

impl Graph {
    /// Check the net and infer every shape, in steps: each layer's bottoms, its shape
    /// and FLOPs, its params and multipliers; then the head against the data.
    /// `outputs` is the number of targets the data has (30 for 15 keypoints): the last
    /// layer must produce exactly that. Without data (a net file on its own) any x, y
    /// per keypoint will do: a vector of even length.
    pub fn compile(net: &NetConfig, src: &NetSource, outputs: impl Into<Option<i64>>) -> Result<Graph> {
        let file = src.path.display().to_string();
        let lines = layer_lines(&src.text);
        let names = layer_names(&net.layers);
        if net.input.len() != 3 || net.input.iter().any(|d| *d < 1) {
            bail!(
                "{file}: input must be [C, H, W] with positive sizes, e.g. [1, 96, 96]; got {:?}",
                net.input
            );
        }
        if net.layers.is_empty() {
            bail!("{file}: the net has no layers");
        }
        let mut blobs = Blobs::new(&net.input);
        let mut nodes: Vec<Node> = Vec::new();
        for (i, v) in net.layers.iter().enumerate() {
            let mut at = match lines.get(i) {
                Some(l) => format!("{file}:{l}: layer `{}` (#{})", names[i], i + 1),
                None => format!("{file}: layer `{}` (#{})", names[i], i + 1),
            };
            // What the file says was changed on the command line: name the change first.
            let sets: Vec<&str> = src.sets.iter().filter(|(l, _)| *l == i).map(|(_, s)| s.as_str()).collect();
            if !sets.is_empty() {
                at = format!("--set {} (in {at})", sets.join(" --set "));
            }
            let (common, layer) = parse_layer(v).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            check_name(&names[i], &nodes, &at)?;
            let bottoms = blobs.bottoms(i, &common, &at)?;
            let inputs: Vec<Shape> = bottoms.iter().map(|&b| blobs.shapes[b].clone()).collect();
            let (output, flops) = shape_and_flops(layer.as_ref(), &common.kind, &inputs, &at)?;
            let params = layer.params(&inputs[0]);
            let mults = multipliers(&params, &common.param, &at)?;
            blobs.add(i, &names[i], common.top.as_ref(), output.clone());
            let kind = layers::kind(&common.kind).expect("parsed").name;
            nodes.push(Node {
                name: names[i].clone(),
                kind,
                layer,
                mults,
                bottoms,
                inputs,
                output,
                params,
                flops,
            });
        }
        check_head(&nodes, &net.loss, outputs.into(), &file)?;
        Ok(Graph { name: net.name.clone(), input: net.input.clone(), nodes, loss: net.loss.clone() })
    }

    /// Learnable values (buffers such as running statistics do not count, as in PyTorch).
    pub fn num_params(&self) -> i64 {
        self.nodes
            .iter()
            .flat_map(|n| &n.params)
            .filter(|p| p.learn)
            .map(|p| p.shape.iter().product::<i64>())
            .sum()
    }

    /// Whether every layer reads just the layer before (no skip connections), so the
    /// net is a plain `nn.Sequential`.
    pub fn is_sequential(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| n.bottoms == [i])
    }

    pub fn flops(&self) -> i64 {
        self.nodes.iter().map(|n| n.flops).sum()
    }

    /// The net as resolved YAML: every layer with its defaults filled in.
    pub fn resolved(&self) -> Value {
        let layers: Vec<Value> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut m = Mapping::new();
                m.insert("type".into(), n.kind.into());
                m.insert("name".into(), n.name.clone().into());
                let learned: Vec<ParamMult> =
                    n.params.iter().zip(&n.mults).filter(|(d, _)| d.learn).map(|(_, m)| *m).collect();
                if learned.iter().any(|p| *p != ParamMult::default()) {
                    m.insert("param".into(), serde_yaml::to_value(&learned).expect("plain data"));
                }
                if n.bottoms != [i] {
                    let names: Vec<Value> = n.bottoms.iter().map(|&b| self.blob_name(b).into()).collect();
                    m.insert("bottom".into(), Value::Sequence(names));
                }
                if let Value::Mapping(params) = n.layer.to_yaml() {
                    m.extend(params);
                }
                Value::Mapping(m)
            })
            .collect();
        let net =
            NetConfig { name: self.name.clone(), input: self.input.clone(), layers, loss: self.loss.clone() };
        serde_yaml::to_value(net).expect("plain data")
    }

    /// Blob `b` by its layer's name (`data` for the input): unique, unlike tops.
    pub fn blob_name(&self, b: usize) -> String {
        if b == 0 {
            "data".into()
        } else {
            self.nodes[b - 1].name.clone()
        }
    }
}

/// 1234567 -> "1.23M".
pub fn human(n: i64) -> String {
    let x = n as f64;
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        _ => n.to_string(),
    }
}
