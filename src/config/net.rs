//! The net file: input shape, layers (parsed per kind by the layer registry), loss.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Shown in summaries and used in default run names.
    pub name: String,
    /// Per-sample input shape, `[C, H, W]` (the faces are `[1, 96, 96]`).
    pub input: Vec<i64>,
    /// The layers in order; each a mapping with `type:` and that kind's params.
    pub layers: Vec<serde_yaml::Value>,
    pub loss: LossConfig,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Caffe's EuclideanLoss: sum over batch and outputs of (a - b)^2, divided by 2N.
    Euclidean,
    /// Mean squared error over all (present) values, as Keras/PyTorch/TensorFlow.
    Mse,
    /// Mean absolute error over present values.
    L1,
    /// PyTorch's smooth L1 (Huber with `beta`), mean over present values.
    #[serde(rename = "smooth_l1")]
    SmoothL1,
    /// The Wing loss for facial landmarks (Feng et al., CVPR 2018): logarithmic for small
    /// errors (below `w` pixels), L1 beyond; mean over present values.
    Wing,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    #[serde(rename = "type")]
    pub kind: LossKind,
    /// Scales the loss (and so its gradients), as Caffe's loss_weight.
    #[serde(default = "one")]
    pub loss_weight: f64,
    /// Where smooth_l1 turns from quadratic to linear (in normalised units: 1 = 48 px).
    #[serde(default = "one")]
    pub beta: f64,
    /// Wing only: the width of the logarithmic part, in pixels (the paper's 10).
    #[serde(default = "wing_w")]
    pub w: f64,
    /// Wing only: its curvature, in pixels (the paper's 2; smaller = sharper near 0).
    #[serde(default = "wing_epsilon")]
    pub epsilon: f64,
    /// DSNT's heatmap regulariser (nets ending in soft_argmax): pulls each keypoint's
    /// map towards a Gaussian at the true position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub js_reg: Option<JsReg>,
}

/// Jensen-Shannon divergence between each heatmap's distribution and a normal
/// distribution of `sigma` map cells around the target (Nibali et al. 2018, "Numerical
/// coordinate regression with convolutional neural networks", their best variant:
/// sigma 1, weight 1), averaged over present keypoints and added to the loss.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsReg {
    /// Multiplies the divergence (in nats, 0..ln 2) before it joins the loss.
    #[serde(default = "one")]
    pub loss_weight: f64,
    /// Standard deviation of the target Gaussian, in heatmap cells.
    #[serde(default = "one")]
    pub sigma: f64,
}

impl LossConfig {
    /// A loss of this kind with every other key at its default.
    pub fn of(kind: LossKind) -> LossConfig {
        LossConfig { kind, loss_weight: 1.0, beta: 1.0, w: wing_w(), epsilon: wing_epsilon(), js_reg: None }
    }

    /// Each kind-specific key set only for its kind, every value in range.
    pub fn check(&self) -> Result<(), String> {
        let d = LossConfig::of(self.kind);
        // The names as a config writes them (smooth_l1, wing).
        let name = |k: LossKind| serde_yaml::to_value(k).ok().and_then(|v| v.as_str().map(str::to_owned));
        let name = |k| name(k).unwrap_or_default();
        let own: [(&str, f64, f64, LossKind); 3] = [
            ("beta", self.beta, d.beta, LossKind::SmoothL1),
            ("w", self.w, d.w, LossKind::Wing),
            ("epsilon", self.epsilon, d.epsilon, LossKind::Wing),
        ];
        for (key, value, default, kind) in own {
            if self.kind != kind && value != default {
                return Err(format!("loss `{key}` applies to {} only, not {}", name(kind), name(self.kind)));
            }
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!("loss `{key}` must be a finite number > 0, not {value}"));
            }
        }
        if !self.loss_weight.is_finite() {
            return Err(format!("loss `loss_weight` must be finite, not {}", self.loss_weight));
        }
        if let Some(r) = &self.js_reg {
            if !(r.loss_weight >= 0.0 && r.loss_weight.is_finite()) {
                return Err(format!(
                    "loss `js_reg.loss_weight` must be a finite number >= 0, not {}",
                    r.loss_weight
                ));
            }
            if !(r.sigma > 0.0 && r.sigma.is_finite()) {
                return Err(format!(
                    "loss `js_reg.sigma` must be a finite number > 0 (map cells), not {}",
                    r.sigma
                ));
            }
        }
        Ok(())
    }
}

fn one() -> f64 {
    1.0
}

fn wing_w() -> f64 {
    10.0
}

fn wing_epsilon() -> f64 {
    2.0
}

/// Keys every layer may have besides its kind's params.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LayerCommon {
    /// The layer kind, one of the registry's (`fkpnet layers` lists them).
    #[serde(rename = "type")]
    pub kind: String,
    /// Names the layer's tensors (`conv1.weight`); default: type + running number.
    #[serde(default)]
    pub name: Option<String>,
    /// Per learnable blob (weight, bias): Caffe's `param { lr_mult decay_mult }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub param: Vec<ParamMult>,
    /// The input(s), by layer name or `top` name (`data` = the net's input), as Caffe's
    /// `bottom`; one name or a list. Default: the layer before.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub bottom: Vec<String>,
    /// Another name for this layer's output, as Caffe's `top` (a later layer with the
    /// same `top` takes the name over, so in-place Caffe layers read as they do there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<String>,
}

/// `bottom: conv1` or `bottom: [conv1, pool2]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParamMult {
    #[serde(default = "one")]
    pub lr_mult: f64,
    #[serde(default = "one")]
    pub decay_mult: f64,
}

impl Default for ParamMult {
    fn default() -> Self {
        ParamMult { lr_mult: 1.0, decay_mult: 1.0 }
    }
}

/// Each layer's name: its `name:` or, if absent, the layer before's name and its
/// type (`conv1_relu`; `data_...` for a first layer), as the graph, the tensors and
/// `--set layers.NAME.key` see it. Inserting a layer renames only the unnamed layers
/// right after it, never the rest of the net (a running number per type would).
pub fn layer_names(layers: &[serde_yaml::Value]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for l in layers {
        let name = match l.get("name").and_then(|n| n.as_str()) {
            Some(name) => name.to_string(),
            None => {
                let kind = l.get("type").and_then(|t| t.as_str()).unwrap_or("layer");
                let kind = crate::layers::kind(kind).map_or(kind, |k| k.name);
                let prev = names.last().map_or("data", String::as_str);
                let base = format!("{prev}_{kind}");
                let mut name = base.clone();
                let mut n = 2;
                while names.contains(&name) {
                    name = format!("{base}_{n}");
                    n += 1;
                }
                name
            }
        };
        names.push(name);
    }
    names
}

/// 1-based line of each item of the first `layers:` list in a YAML text, so errors
/// about layer i can name its line. Block style only; flow style gives no lines.
pub fn layer_lines(text: &str) -> Vec<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| {
        let t = l.trim();
        t == "layers:" || (t.starts_with("layers:") && t[7..].trim_start().starts_with('#'))
    }) else {
        return Vec::new();
    };
    let key_indent = indent(lines[start]);
    let mut item_indent = None;
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        let is_item = t.starts_with("- ") || t == "-";
        match item_indent {
            None if is_item && ind >= key_indent => {
                item_indent = Some(ind);
                out.push(i + 1);
            }
            None => break,
            Some(ii) if ind == ii && is_item => out.push(i + 1),
            Some(ii) if ind < ii || (ind == ii && !is_item) => break,
            Some(_) => {}
        }
    }
    out
}
