//! `fkpnet export`: a frozen model for use outside fkpnet: `model.safetensors`
//! (float32; names and layouts as PyTorch's nn.Conv2d / nn.Linear keep them), the
//! resolved `net.yaml`, and a README with the PyTorch code that loads it.

use super::model::Model;
use crate::data::framing::Fitted;
use crate::graph::Graph;
use crate::run::write_text;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// PyTorch code building the same net with the same parameter names: an
/// `nn.Sequential` for a chain of layers, an `nn.Module` with a `forward` for nets with
/// skip connections.
pub fn pytorch_code(model: &Model) -> String {
    let g = &model.graph;
    let net = if g.is_sequential() { sequential(g) } else { module(g) };
    // Classes for the kinds torch.nn lacks, each once.
    let mut classes: Vec<&str> = g.nodes.iter().filter_map(|n| n.layer.pytorch_class()).collect();
    classes.sort();
    classes.dedup();
    let classes: String = classes.iter().map(|c| format!("\n{c}\n")).collect();
    format!(
        "# needs: pip install torch safetensors\nimport torch\nimport torch.nn as nn\nfrom collections import OrderedDict\n\
         from safetensors.torch import load_file\n{classes}\n\
         {net}\
         model.load_state_dict(load_file(\"model.safetensors\"))\nmodel.eval()\n\n\
         # faces: float tensor (N, {c}, {h}, {w}) with {colour} values / 255\n\
         # keypoints in pixels of the face image ({k} x, y in the set's order): model(faces) * {half} + {half}\n",
        c = g.input[0],
        h = g.input[1],
        w = g.input[2],
        colour = if g.input[0] == 3 { "RGB" } else { "grey" },
        k = model.spec.keypoints.len(),
        half = model.spec.half()
    )
}

fn sequential(g: &Graph) -> String {
    let mut items = Vec::new();
    for n in &g.nodes {
        // nn.Linear does not flatten; a parameter-free Flatten before it keeps names.
        if n.layer.pytorch_flattens_first(n.input()) {
            items.push(format!("    (\"flatten_{}\", nn.Flatten()),", n.name));
        }
        items.push(format!("    (\"{}\", {}),", n.name, n.layer.pytorch(n.input())));
    }
    format!("model = nn.Sequential(OrderedDict([\n{}\n]))\n", items.join("\n"))
}

/// Modules are registered under the layer names (any string), so the state dict's keys
/// are fkpnet's tensor names; blobs are local variables `b0` (input), `b1`, ...
fn module(g: &Graph) -> String {
    let mut init = Vec::new();
    let mut forward = vec!["        b0 = x".to_string()];
    for (i, n) in g.nodes.iter().enumerate() {
        let args: Vec<String> = n.bottoms.iter().map(|b| format!("b{b}")).collect();
        let expr = match n.layer.merge() {
            Some(m) if args.len() > 1 => m.pytorch_merge(&args),
            _ => {
                init.push(format!("        self.add_module({:?}, {})", n.name, n.layer.pytorch(n.input())));
                let x = if n.layer.pytorch_flattens_first(n.input()) {
                    format!("torch.flatten({}, 1)", args[0])
                } else {
                    args[0].clone()
                };
                format!("self._modules[{:?}]({x})", n.name)
            }
        };
        forward.push(format!("        b{} = {expr}  # {}", i + 1, n.name));
    }
    format!(
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n{}\n\n    \
         def forward(self, x):\n{}\n        return b{}\n\n\nmodel = Net()\n",
        init.join("\n"),
        forward.join("\n"),
        g.nodes.len()
    )
}

/// What the model's faces are, for `fkpnet predict EXPORT` and other readers: the
/// run's data format, keypoint set (written out in full) and crop; no data files.
fn data_yaml(model: &Model) -> Result<String> {
    let mut data = match &model.run {
        Some(r) => r.solver.data.clone(),
        None => crate::config::DataConfig::of("export".into()),
    };
    data.train = "export".into();
    data.images = None;
    data.split_group = None;
    let mut v = serde_yaml::to_value(&data)?;
    if let serde_yaml::Value::Mapping(m) = &mut v {
        m.insert("keypoints".into(), model.spec.keypoints.to_value());
        for k in ["split", "labels", "seed", "synthetic", "augment"] {
            m.remove(k);
        }
    }
    Ok(format!(
        "# The faces this model takes and the keypoints it predicts (the training run's data\n\
         # section without its files). fkpnet predict reads it.\n{}",
        serde_yaml::to_string(&v)?
    ))
}

/// What `fkpnet export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// model.safetensors + net.yaml + data.yaml + README.md with the PyTorch code
    Fkpnet,
    /// Caffe's deploy.prototxt + model.caffemodel (+ data.yaml, README.md)
    Caffe,
    /// model.onnx (opset 13, dynamic batch; + data.yaml, README.md), or -o FILE.onnx alone
    Onnx,
}

/// The model's framing for photos (`data::framing`), or None with a note where it
/// cannot be had: the export then predicts on boxed or cut-out faces only.
fn framing(model: &Model) -> Option<Fitted> {
    model
        .framing()
        .map_err(|e| {
            eprintln!("note: the export carries no framing for faces found in photos: {e:#}");
        })
        .ok()
}

pub fn export(model: &Model, dir: &Path, format: Format) -> Result<()> {
    // -o FILE.onnx: one file, as runtimes take it.
    let one_file = format == Format::Onnx && dir.extension().is_some_and(|e| e == "onnx");
    if one_file && dir.exists() {
        bail!("{} exists; choose a new file (nothing is overwritten)", dir.display());
    }
    if !one_file && dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty; choose a new directory (nothing is overwritten)", dir.display());
    }
    // Converted before anything is written or the framing fitted: a net that cannot be
    // exported leaves nothing.
    let converted = match format {
        Format::Onnx => Some(super::onnx::convert(model)?),
        _ => None,
    };
    if format == Format::Caffe {
        crate::caffe::model::deploy(&model.graph, &model.params, false)?;
    }
    let framing = framing(model);
    let onnx = converted.map(|c| super::onnx::model_bytes(c, model, framing.as_ref())).transpose()?;
    if let (true, Some(bytes)) = (one_file, &onnx) {
        return std::fs::write(dir, bytes).with_context(|| format!("cannot write {}", dir.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(f) = &framing {
        write_text(&dir.join(Fitted::FILE), &f.to_yaml())?;
    }
    match (format, onnx) {
        (Format::Caffe, _) => return export_caffe(model, dir),
        (Format::Onnx, Some(bytes)) => return export_onnx(model, dir, &bytes),
        _ => {}
    }
    crate::graph::save_weights(&model.params, &dir.join("model.safetensors"))
        .with_context(|| format!("cannot write {}", dir.join("model.safetensors").display()))?;
    write_text(&dir.join("net.yaml"), &serde_yaml::to_string(&model.graph.resolved())?)?;
    write_text(&dir.join("data.yaml"), &data_yaml(model)?)?;
    let readme = format!(
        "# {name}: a frozen fkpnet model\n\n\
         - `model.safetensors`: float32 weights from `{w}`; tensor names are the layer names\n  \
         (`conv1.weight` has nn.Conv2d's layout (out, in, kh, kw), `fc1.weight` nn.Linear's (out, in)).\n\
         - `net.yaml`: the resolved net; `fkpnet summary net.yaml` shows it, and\n  \
         `fkpnet predict {dir} face.png` runs it.\n\
         - `data.yaml`: the faces it takes (format, keypoint set with names and mirror pairs, crop).\n\
         - `framing.yaml` (where fkpnet could fit it): how the training faces sit in the face\n  \
         detector's boxes, so `fkpnet predict` cuts the faces it finds in photos as they were.\n\n\
         Inputs are {s}x{s} {colour} faces scaled to [0, 1]{crop}; outputs are the {k} keypoints' x, y\n\
         in the set's order ({names}), normalised as (xy - {half}) / {half}.\n\n\
         ## In PyTorch\n\n```python\n{code}```\n",
        name = model.graph.name,
        w = model.weights.display(),
        dir = dir.display(),
        s = model.spec.width,
        colour = if model.spec.channels == 3 { "RGB" } else { "grey" },
        crop = match model.spec.format {
            crate::data::DataFormat::Kaggle => String::new(),
            _ => format!(
                " (cut out of their images: crop from {}, margin {})",
                crate::config::name_of(&model.spec.crop.from),
                model.spec.crop.margin
            ),
        },
        k = model.spec.keypoints.len(),
        names = if model.spec.format == crate::data::DataFormat::Kaggle {
            "Kaggle's column order".to_string()
        } else {
            "see data.yaml".into()
        },
        half = model.spec.half(),
        code = pytorch_code(model)
    );
    write_text(&dir.join("README.md"), &readme)
}

fn export_caffe(model: &Model, dir: &Path) -> Result<()> {
    crate::caffe::model::write(&model.graph, &model.params, dir)?;
    write_text(&dir.join("data.yaml"), &data_yaml(model)?)?;
    let readme = format!(
        "# {name}: a trained fkpnet model for Caffe\n\n\
         - `deploy.prototxt`: the net with an `Input` of 1x{c}x{s}x{s} (Caffe reshapes the batch).\n\
         - `model.caffemodel`: its weights from `{w}` (float32 blobs by layer name; a\n  \
         batchnorm is Caffe's BatchNorm with its statistics and a Scale `NAME_scale`).\n\
         - `data.yaml`: the faces it takes; `fkpnet predict` reads it.\n\n\
         ```\ncaffe test -model deploy.prototxt -weights model.caffemodel\n```\n\n\
         In Python: `net = caffe.Net(\"deploy.prototxt\", \"model.caffemodel\", caffe.TEST)`;\n\
         inputs are {colour} faces scaled to [0, 1]; outputs the {k} keypoints' x, y normalised\n\
         as (xy - {half}) / {half}.\n",
        name = model.graph.name,
        c = model.graph.input[0],
        s = model.spec.width,
        w = model.weights.display(),
        colour = if model.spec.channels == 3 { "RGB" } else { "grey" },
        k = model.spec.keypoints.len(),
        half = model.spec.half(),
    );
    write_text(&dir.join("README.md"), &readme)
}

fn export_onnx(model: &Model, dir: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(dir.join("model.onnx"), bytes)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    write_text(&dir.join("data.yaml"), &data_yaml(model)?)?;
    let readme = format!(
        "# {name}: a trained fkpnet model as ONNX\n\n\
         - `model.onnx`: opset {opset}, IR 7, input `data` (N x {c} x {s} x {s}, {colour} pixels / 255, any\n  \
         batch), output `keypoints` (N x {k2}: x0, y0, x1, y1, ... as (xy - {half}) / {half}); the same\n  \
         in the model's metadata, with the keypoint names.\n\
         - `data.yaml`: the faces it takes (format, keypoint set, crop); `framing.yaml` and the\n  \
         metadata's `framing`: how the training faces sit in the face detector's boxes.\n\n\
         The run's test-time views (test.flip, shift, ...) are not in the model: it predicts one view.\n\n\
         ```python\n# needs: pip install onnxruntime numpy\nimport onnxruntime as ort\n\
         session = ort.InferenceSession(\"model.onnx\")\n\
         keypoints = session.run([\"keypoints\"], {{\"data\": faces}})[0] * {half} + {half}\n```\n",
        name = model.graph.name,
        opset = super::onnx::OPSET,
        c = model.graph.input[0],
        s = model.spec.width,
        colour = if model.spec.channels == 3 { "RGB" } else { "grey" },
        k2 = 2 * model.spec.keypoints.len(),
        half = model.spec.half(),
    );
    write_text(&dir.join("README.md"), &readme)
}
