//! `fkpnet export`: a frozen model for use outside fkpnet: `model.safetensors`
//! (float32; names and layouts as PyTorch's nn.Conv2d / nn.Linear keep them), the
//! resolved `net.yaml`, and a README with the PyTorch code that loads it.

use super::model::Model;
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
        "import torch\nimport torch.nn as nn\nfrom collections import OrderedDict\n\
         from safetensors.torch import load_file\n{classes}\n\
         {net}\
         model.load_state_dict(load_file(\"model.safetensors\"))\nmodel.eval()\n\n\
         # faces: float tensor (N, {}, {}, {}) with grey values / 255\n\
         # keypoints in pixels (Kaggle's column order): model(faces) * 48 + 48\n",
        g.input[0], g.input[1], g.input[2]
    )
}

fn sequential(g: &Graph) -> String {
    let mut items = Vec::new();
    for n in &g.nodes {
        // nn.Linear does not flatten; a parameter-free Flatten before it keeps names.
        if n.kind == "dense" && n.input().len() > 1 {
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
                let x = if n.kind == "dense" && n.input().len() > 1 {
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

pub fn export(model: &Model, dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty; choose a new directory (nothing is overwritten)", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::copy(&model.weights, dir.join("model.safetensors"))
        .with_context(|| format!("cannot copy {}", model.weights.display()))?;
    write_text(&dir.join("net.yaml"), &serde_yaml::to_string(&model.graph.resolved())?)?;
    let readme = format!(
        "# {name}: a frozen fkpnet model\n\n\
         - `model.safetensors`: float32 weights from `{w}`; tensor names are the layer names\n  \
         (`conv1.weight` has nn.Conv2d's layout (out, in, kh, kw), `fc1.weight` nn.Linear's (out, in)).\n\
         - `net.yaml`: the resolved net; `fkpnet summary net.yaml` shows it, and\n  \
         `fkpnet predict {dir} face.png` runs it.\n\n\
         Inputs are 96x96 grey faces scaled to [0, 1]; outputs are the 15 keypoints' x, y in\n\
         Kaggle's column order, normalised as (xy - 48) / 48.\n\n\
         ## In PyTorch\n\n```python\n{code}```\n",
        name = model.graph.name,
        w = model.weights.display(),
        dir = dir.display(),
        code = pytorch_code(model)
    );
    write_text(&dir.join("README.md"), &readme)
}
