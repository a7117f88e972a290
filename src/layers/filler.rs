//! Caffe's fillers: how a layer's weights and biases start out.
//! `weight_filler: xavier` is shorthand for `weight_filler: {type: xavier}`.

use serde::{Deserialize, Deserializer, Serialize};
use tch::nn::Init;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum VarianceNorm {
    #[default]
    FanIn,
    FanOut,
    Average,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Filler {
    /// Every value `value` (Caffe's default when a filler is omitted: 0).
    Constant {
        #[serde(default)]
        value: f64,
    },
    /// U(min, max).
    Uniform {
        #[serde(default)]
        min: f64,
        #[serde(default = "one")]
        max: f64,
    },
    /// N(mean, std).
    Gaussian {
        #[serde(default)]
        mean: f64,
        #[serde(default = "one")]
        std: f64,
    },
    /// Caffe's xavier: U(-s, s), s = sqrt(3 / n) (not PyTorch's xavier_uniform_).
    Xavier {
        #[serde(default)]
        variance_norm: VarianceNorm,
    },
    /// Caffe's msra: N(0, sqrt(2 / n)).
    Msra {
        #[serde(default)]
        variance_norm: VarianceNorm,
    },
}

fn one() -> f64 {
    1.0
}

impl Default for Filler {
    fn default() -> Self {
        Filler::Constant { value: 0.0 }
    }
}

impl Filler {
    /// Default weight filler of fkpnet's conv and dense layers. Caffe's omitted filler
    /// is constant 0, which never trains; xavier is what Caffe users write.
    pub fn xavier() -> Self {
        Filler::Xavier { variance_norm: VarianceNorm::FanIn }
    }

    /// The libtorch initialiser for a parameter of `shape` (out, in, kh, kw) or (out, in).
    pub fn init(&self, shape: &[i64]) -> Init {
        let n = || {
            let count: i64 = shape.iter().product();
            let fan_in = count / shape[0].max(1);
            let fan_out = if shape.len() > 1 { count / shape[1].max(1) } else { count };
            let n = match self {
                Filler::Xavier { variance_norm } | Filler::Msra { variance_norm } => match variance_norm {
                    VarianceNorm::FanIn => fan_in as f64,
                    VarianceNorm::FanOut => fan_out as f64,
                    VarianceNorm::Average => (fan_in + fan_out) as f64 / 2.0,
                },
                _ => 1.0,
            };
            n.max(1.0)
        };
        match *self {
            Filler::Constant { value } => Init::Const(value),
            Filler::Uniform { min, max } => Init::Uniform { lo: min, up: max },
            Filler::Gaussian { mean, std } => Init::Randn { mean, stdev: std },
            Filler::Xavier { .. } => {
                let s = (3.0 / n()).sqrt();
                Init::Uniform { lo: -s, up: s }
            }
            Filler::Msra { .. } => Init::Randn { mean: 0.0, stdev: (2.0 / n()).sqrt() },
        }
    }

    /// Short text for `summary`, e.g. `xavier(fan_in)`.
    pub fn describe(&self) -> String {
        match self {
            Filler::Constant { value } => format!("constant({value})"),
            Filler::Uniform { min, max } => format!("uniform({min},{max})"),
            Filler::Gaussian { mean, std } => format!("gaussian({mean},{std})"),
            Filler::Xavier { variance_norm } => format!("xavier({})", norm_name(*variance_norm)),
            Filler::Msra { variance_norm } => format!("msra({})", norm_name(*variance_norm)),
        }
    }

    /// Check the filler's numbers before any tensor is made.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Filler::Uniform { min, max } if min > max => {
                Err(format!("uniform filler needs min <= max, got min {min} > max {max}"))
            }
            Filler::Gaussian { std, .. } if std < 0.0 => {
                Err(format!("gaussian filler needs std >= 0, got {std}"))
            }
            _ => Ok(()),
        }
    }
}

fn norm_name(v: VarianceNorm) -> &'static str {
    match v {
        VarianceNorm::FanIn => "fan_in",
        VarianceNorm::FanOut => "fan_out",
        VarianceNorm::Average => "average",
    }
}

/// Accepts `xavier` as well as `{type: xavier, ...}`.
pub fn deserialize_filler<'de, D: Deserializer<'de>>(d: D) -> Result<Filler, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    let v = match v {
        serde_yaml::Value::String(s) => {
            let mut m = serde_yaml::Mapping::new();
            m.insert("type".into(), s.into());
            serde_yaml::Value::Mapping(m)
        }
        other => other,
    };
    serde_yaml::from_value(v).map_err(serde::de::Error::custom)
}
