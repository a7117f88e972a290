//! A Caffe net prototxt walked as a graph: the TRAIN phase's layers (TEST-only ones
//! skipped with a note), the input (an `Input` layer, a data layer, or a deploy file's
//! top-level `input:`/`input_dim:`/`input_shape`), the label tops (a second `Input`,
//! a data layer's second top) that feed the loss and nothing else, `Split` tops as
//! other names of their bottom, `Silence` and `Accuracy` skipped, `Scale` folded into
//! the BatchNorm before it, and the EuclideanLoss at the end. Compute layers are
//! converted by `layers`.

use super::layers::{self, params};
use super::proto::caffe::{LayerParameter, NetParameter, Phase};
use super::Options;
use anyhow::{anyhow, bail, Result};
use serde_yaml::{Mapping, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The Caffe types handled here rather than by `layers`' table.
pub const STRUCTURAL: &[&str] = &[
    "Input",
    "Data",
    "HDF5Data",
    "EuclideanLoss",
    "Scale (after BatchNorm)",
    "Split",
    "Silence",
    "Accuracy",
];

pub struct NetOut {
    pub name: String,
    pub yaml: String,
    pub batch: Option<i64>,
    /// Batch size of the TEST-phase data layer: Caffe's test_iter counts its batches.
    pub test_batch: Option<i64>,
    /// The data layers' `source`s as Caffe reads them, TRAIN then TEST (relative ones
    /// resolved from the prototxt's folder), and whether they are HDF5 and shuffled.
    pub source: Option<String>,
    pub test_source: Option<String>,
    pub hdf5: bool,
    pub shuffle: bool,
}

/// A layer's line in the prototxt: the line holding its `name: "..."`, searched in
/// order (a whole layer may sit on one line, `layer { name: "x" type: ... }`).
fn layer_lines(text: &str, layers: &[LayerParameter]) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    layers
        .iter()
        .map(|l| {
            let quoted = [format!("\"{}\"", l.name()), format!("'{}'", l.name())];
            let hit = (from..lines.len()).find(|&i| {
                let t = lines[i];
                t.split("name").skip(1).any(|after| {
                    let after = after.trim_start().strip_prefix(':').unwrap_or("").trim_start();
                    quoted.iter().any(|q| after.starts_with(q.as_str()))
                })
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

fn data_batch(l: &LayerParameter) -> Option<i64> {
    l.hdf5_data_param
        .as_ref()
        .and_then(|p| p.batch_size)
        .or_else(|| l.data_param.as_ref().and_then(|p| p.batch_size))
        .map(|b| b as i64)
}

fn data_source(l: &LayerParameter) -> Option<String> {
    l.hdf5_data_param
        .as_ref()
        .and_then(|p| p.source.clone())
        .or_else(|| l.data_param.as_ref().and_then(|p| p.source.clone()))
}

/// The V1 format (`layers { type: CONVOLUTION }`), which Caffe upgrades with
/// upgrade_net_proto_text: its line, so the error can name it.
fn v1_layers_line(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("");
        if depth == 0
            && t.trim_start().starts_with("layers")
            && t.trim_start()[6..].trim_start().starts_with(['{', ':'])
        {
            return Some(i + 1);
        }
        depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
    }
    None
}

/// The walk's state: names of blobs as fkpnet knows them, the layers so far.
struct Walk<'a> {
    file: String,
    lines: Vec<usize>,
    net: &'a NetParameter,
    /// The previous layer's top (what an omitted `bottom:` would be).
    top: Option<String>,
    /// The net's input top: fkpnet calls it `data`.
    input_top: Option<String>,
    /// Tops that are other names of a blob (a Split's tops, its bottom).
    aliases: HashMap<String, String>,
    labels: HashSet<String>,
    layers: Vec<Value>,
}

impl Walk<'_> {
    fn at(&self, i: usize) -> String {
        format!("{}:{}: layer `{}`", self.file, self.lines[i], self.net.layer[i].name())
    }

    /// An EuclideanLoss's weight, where it reads the previous layer's output and the labels.
    fn loss_weight(&self, l: &LayerParameter, at: &str) -> Result<f64> {
        let (pred, label) = (l.bottom.first(), l.bottom.get(1));
        if pred.map(|p| self.blob(p)) != self.top.as_ref().map(|t| self.blob(t)) {
            bail!(
                "{at}: the loss must take the previous layer's output `{}` as its first bottom",
                self.top.clone().unwrap_or_default()
            );
        }
        if label.is_none_or(|b| !self.labels.contains(b)) {
            bail!("{at}: the loss's second bottom must be the labels (a data layer's second top or a label Input)");
        }
        Ok(l.loss_weight.first().copied().unwrap_or(1.0) as f64)
    }

    /// A Split: its tops become other names of its bottom.
    fn split(&mut self, l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<()> {
        let b = l.bottom.first().ok_or_else(|| anyhow!("{at}: a Split needs a bottom"))?.clone();
        let b = self.aliases.get(&b).cloned().unwrap_or(b);
        for t in &l.top {
            self.aliases.insert(t.clone(), b.clone());
        }
        notes.push(format!(
            "{at}: Split's tops read as its bottom `{b}` (fkpnet's blobs have any number of readers)"
        ));
        Ok(())
    }

    /// A bottom as fkpnet names it.
    fn blob(&self, b: &str) -> String {
        let b = self.aliases.get(b).map_or(b, String::as_str);
        if Some(b) == self.input_top.as_deref() {
            "data".into()
        } else {
            b.to_string()
        }
    }
}

/// The prototxt's text and its NetParameter. Caffe's V1 format (`layers { type: CONVOLUTION }`)
/// is refused with the command that upgrades it.
fn read_prototxt(path: &Path) -> Result<(String, NetParameter)> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    if let Some(line) = v1_layers_line(&text) {
        bail!(
            "{file}:{line}: `layers {{ type: CONVOLUTION ... }}` is Caffe's V1 format, which fkpnet does not \
             read; upgrade it with Caffe's tool first: upgrade_net_proto_text OLD.prototxt NEW.prototxt"
        );
    }
    let net = protobuf::text_format::parse_from_str(&text)
        .map_err(|e| anyhow!("{file}:{e} (caffe NetParameter)"))?;
    Ok((text, net))
}

/// The image shape (C, H, W) the net's header declares: `input_shape`, or four `input_dim`.
fn header_input(net: &NetParameter) -> Option<Vec<i64>> {
    match (net.input_shape.first(), net.input_dim.len()) {
        (Some(s), _) => Some(s.dim.iter().skip(1).copied().collect()),
        (None, 4) => Some(net.input_dim[1..].iter().map(|d| *d as i64).collect()),
        _ => None,
    }
}

/// The net's `name`, or the file's stem where it has none.
fn net_name(net: &NetParameter, path: &Path) -> String {
    match net.name() {
        "" => path.file_stem().and_then(|s| s.to_str()).unwrap_or("net").to_string(),
        n => n.to_string(),
    }
}

pub fn convert_net(path: &Path, opts: &Options, notes: &mut Vec<String>) -> Result<NetOut> {
    let file = path.display().to_string();
    let (text, net) = read_prototxt(path)?;
    let mut input = header_input(&net);
    let mut w = Walk {
        lines: layer_lines(&text, &net.layer),
        file: file.clone(),
        net: &net,
        top: net.input.first().cloned(),
        input_top: net.input.first().cloned(),
        aliases: HashMap::new(),
        labels: label_tops(&net),
        layers: Vec::new(),
    };
    let (mut batch, mut test_batch, mut source, mut test_source) = (None, None, None, None);
    let (mut hdf5, mut shuffle) = (false, true);
    let dir = path.parent().unwrap_or(Path::new("."));
    // Absolute: the converted solver lives in another folder than the prototxt.
    let resolve = |s: Option<String>| s.map(|s| crate::config::absolute(dir, &s));
    let mut loss: Option<f64> = None;
    for (i, l) in net.layer.iter().enumerate() {
        let at = w.at(i);
        if !in_train_phase(l) {
            if matches!(l.type_(), "Data" | "HDF5Data") {
                test_batch = data_batch(l);
                test_source = resolve(data_source(l));
            } else {
                notes.push(format!("{at}: TEST-phase layer skipped"));
            }
            continue;
        }
        if loss.is_some() && !matches!(l.type_(), "Silence" | "Accuracy") {
            bail!("{at}: layers after the loss are not supported (the loss must be last)");
        }
        match l.type_() {
            "Input" if l.top.first().is_some_and(|t| w.labels.contains(t)) => {
                notes.push(format!("{at}: the label input; fkpnet's data gives the targets"));
            }
            "Input" => {
                let p = l.input_param.as_ref().cloned().unwrap_or_default();
                let dims = p.shape.first().map(|s| s.dim.clone()).unwrap_or_default();
                if dims.len() != 4 {
                    bail!("{at}: input_param shape must be N x C x H x W for the images, got {dims:?} (a label input is one the loss reads as its second bottom)");
                }
                input = Some(dims[1..].to_vec());
                (w.top, w.input_top) = (l.top.first().cloned(), l.top.first().cloned());
            }
            "Data" | "HDF5Data" => {
                input = Some(opts.input.to_vec());
                batch = data_batch(l);
                source = resolve(data_source(l));
                hdf5 = l.type_() == "HDF5Data";
                shuffle = l.hdf5_data_param.as_ref().is_none_or(|p| p.shuffle());
                if l.transform_param.as_ref().is_some_and(|t| t.mirror()) {
                    notes.push(format!(
                        "{at}: Caffe's mirror flips only the image, not the keypoints; not converted"
                    ));
                }
                (w.top, w.input_top) = (l.top.first().cloned(), l.top.first().cloned());
            }
            "EuclideanLoss" => loss = Some(w.loss_weight(l, &at)?),
            "Silence" => notes.push(format!("{at}: Silence skipped (it only consumes blobs)")),
            "Accuracy" => notes.push(format!(
                "{at}: Accuracy skipped (a classification metric; fkpnet reports RMSE and NME)"
            )),
            "Split" => w.split(l, &at, notes)?,
            "Scale" => {
                fold_scale(l, &at, &mut w.layers, &w.top, notes)?;
                w.top = l.top.first().cloned();
            }
            _ => {
                let layer = graph_layer(&w, l, &at, notes)?;
                w.top = l.top.first().cloned();
                w.layers.push(Value::Mapping(layer));
            }
        }
    }
    let input = input
        .ok_or_else(|| anyhow!("{file}: no input shape: add an Input layer, or a Data/HDF5Data layer"))?;
    let loss_weight = loss.unwrap_or_else(|| {
        notes.push(format!(
            "{file}: no EuclideanLoss (a deploy net): `loss: {{type: euclidean}}` is written so that it \
             can train; change it if the net trained with another loss"
        ));
        1.0
    });
    let name = net_name(&net, path);
    let yaml = net_yaml(path, &name, &input, &w.layers, loss_weight)?;
    Ok(NetOut { name, yaml, batch, test_batch, source, test_source, hdf5, shuffle })
}

/// The converted net as fkpnet's YAML, one flow-style line per layer.
fn net_yaml(path: &Path, name: &str, input: &[i64], layers: &[Value], loss_weight: f64) -> Result<String> {
    let mut yaml = format!(
        "# Imported from {} by fkpnet import-caffe; Caffe semantics kept (ceil pooling, Caffe fillers).\n\
         name: {}\ninput: {}\nlayers:\n",
        path.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
        flow(&Value::String(name.to_string())),
        flow(&serde_yaml::to_value(input)?),
    );
    for l in layers {
        yaml += &format!("  - {}\n", flow(l));
    }
    yaml += &format!("loss: {{type: euclidean, loss_weight: {loss_weight}}}   # EuclideanLoss: sum / (2N)\n");
    Ok(yaml)
}

/// Tops that carry labels: the second bottoms of the losses (and a data layer's
/// second top, which is what they read).
fn label_tops(net: &NetParameter) -> HashSet<String> {
    net.layer
        .iter()
        .filter(|l| l.type_() == "EuclideanLoss")
        .filter_map(|l| l.bottom.get(1).cloned())
        .chain(
            net.layer
                .iter()
                .filter(|l| matches!(l.type_(), "Data" | "HDF5Data"))
                .filter_map(|l| l.top.get(1).cloned()),
        )
        .collect()
}

/// A compute layer, with its bottoms and top as Caffe wires them (written only where
/// they are not simply the layer before).
fn graph_layer(w: &Walk, l: &LayerParameter, at: &str, notes: &mut Vec<String>) -> Result<Mapping> {
    let mut layer = layers::convert(l, at, notes)?;
    if l.bottom.is_empty() {
        bail!("{at}: the layer has no bottom");
    }
    let simple = l.bottom.len() == 1 && w.top.as_ref().is_some_and(|t| w.blob(t) == w.blob(&l.bottom[0]));
    if !simple {
        let names: Vec<Value> = l.bottom.iter().map(|b| w.blob(b).into()).collect();
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
    Ok(layer)
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
    let mut mults: Vec<Value> = params(l, at)?.and_then(|v| v.as_sequence().cloned()).unwrap_or_default();
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
