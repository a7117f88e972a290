use super::{chw, positive, Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Max,
    Ave,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoundMode {
    /// Caffe's default: a partial window at the edge still produces an output.
    #[default]
    Ceil,
    /// PyTorch's and TensorFlow's default (and the study's nets).
    Floor,
}

/// Caffe's Pooling. Note Caffe's defaults: stride 1, round_mode ceil.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default)]
    pub pool: Method,
    /// Required unless `global_pooling`.
    #[serde(default)]
    pub kernel_size: Option<i64>,
    #[serde(default = "one")]
    pub stride: i64,
    #[serde(default)]
    pub pad: i64,
    #[serde(default)]
    pub global_pooling: bool,
    #[serde(default)]
    pub round_mode: RoundMode,
}

fn one() -> i64 {
    1
}

/// The geometry in force for a given input: (kernel, stride, pad) per axis.
struct Geometry {
    kh: i64,
    kw: i64,
    stride: i64,
    pad: i64,
}

impl Pool {
    fn geometry(&self, h: i64, w: i64) -> Result<Geometry, String> {
        if self.global_pooling {
            return Ok(Geometry { kh: h, kw: w, stride: 1, pad: 0 });
        }
        let k = self.kernel_size.ok_or("pool needs kernel_size (or global_pooling: true)")?;
        positive("kernel_size", k)?;
        positive("stride", self.stride)?;
        if self.pad < 0 || self.pad > k / 2 {
            return Err(format!("pad must be between 0 and kernel_size/2 = {}, got {}", k / 2, self.pad));
        }
        Ok(Geometry { kh: k, kw: k, stride: self.stride, pad: self.pad })
    }

    /// Caffe's rule: ceil((x + 2p - k) / s) + 1, minus one if the last window would
    /// start in the padding past the input; floor mode rounds down.
    fn size(&self, x: i64, k: i64, s: i64, p: i64) -> i64 {
        let span = x + 2 * p - k;
        match self.round_mode {
            RoundMode::Floor => span / s + 1,
            RoundMode::Ceil => {
                let mut out = (span + s - 1) / s + 1;
                if p > 0 && (out - 1) * s >= x + p {
                    out -= 1;
                }
                out
            }
        }
    }
}

impl Layer for Pool {
    fn is_max_pool(&self) -> bool {
        self.pool == Method::Max
    }

    fn max_pool_window(&self, input: &[i64]) -> Option<super::Pooling> {
        let g = self.geometry(input[1], input[2]).ok()?;
        let out = self.output_shape(input).ok()?;
        let square = g.kh == g.kw;
        (self.pool == Method::Max && g.pad == 0 && square).then_some(super::Pooling {
            kernel: g.kh,
            stride: g.stride,
            out_h: out[1],
            out_w: out[2],
            rectify: false,
        })
    }

    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        let (c, h, w) = chw(input, "pool")?;
        let g = self.geometry(h, w)?;
        if h + 2 * g.pad < g.kh || w + 2 * g.pad < g.kw {
            return Err(format!(
                "kernel {}x{} is larger than its input {}",
                g.kh,
                g.kw,
                super::shape_str(input)
            ));
        }
        Ok(vec![c, self.size(h, g.kh, g.stride, g.pad), self.size(w, g.kw, g.stride, g.pad)])
    }

    fn flops(&self, input: &[i64], output: &[i64]) -> i64 {
        let g = self.geometry(input[1], input[2]).expect("checked by output_shape");
        output.iter().product::<i64>() * g.kh * g.kw
    }

    fn details(&self) -> String {
        let m = match self.pool {
            Method::Max => "max",
            Method::Ave => "ave",
        };
        if self.global_pooling {
            return format!("{m} global");
        }
        let r = match self.round_mode {
            RoundMode::Ceil => "ceil",
            RoundMode::Floor => "floor",
        };
        format!("{m} k{} s{} p{} {r}", self.kernel_size.unwrap_or(0), self.stride, self.pad)
    }

    fn build(
        &self,
        input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let g = self.geometry(input[1], input[2]).expect("checked by output_shape");
        let ceil = self.round_mode == RoundMode::Ceil;
        let (k, s, p) = ([g.kh, g.kw], [g.stride, g.stride], [g.pad, g.pad]);
        match self.pool {
            Method::Max => nn::func_t(move |xs, _| xs.max_pool2d(k, s, p, [1, 1], ceil)),
            // count_include_pad = true divides by the window clipped to H + pad, as Caffe does.
            Method::Ave => nn::func_t(move |xs, _| xs.avg_pool2d(k, s, p, ceil, true, None::<i64>)),
        }
    }

    fn pytorch(&self, input: &[i64]) -> String {
        let g = self.geometry(input[1], input[2]).expect("checked by output_shape");
        let ceil = if self.round_mode == RoundMode::Ceil { "True" } else { "False" };
        let k = if g.kh == g.kw { g.kh.to_string() } else { format!("({}, {})", g.kh, g.kw) };
        match self.pool {
            Method::Max => {
                format!("nn.MaxPool2d({k}, stride={}, padding={}, ceil_mode={ceil})", g.stride, g.pad)
            }
            Method::Ave => format!(
                "nn.AvgPool2d({k}, stride={}, padding={}, ceil_mode={ceil}, count_include_pad=True)",
                g.stride, g.pad
            ),
        }
    }
}
