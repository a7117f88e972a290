use super::{chw, positive, Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each value repeated over a scale_factor x scale_factor block.
    #[default]
    Nearest,
    /// Interpolated between the four nearest inputs (align_corners false, as PyTorch's
    /// default): smooth maps, e.g. to add a coarse block to a finer one.
    Bilinear,
}

/// Enlarges the map by an integer factor (PyTorch's nn.Upsample; Caffe writes this as
/// a Deconvolution with fixed weights). With `eltwise` or `concat` it brings a coarse,
/// deep block back to a finer one's size, as in U-Net and feature pyramids.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Upsample {
    #[serde(default = "two")]
    pub scale_factor: i64,
    #[serde(default)]
    pub mode: Mode,
}

impl Mode {
    /// The name in configs and in PyTorch's `mode=`.
    fn name(self) -> &'static str {
        match self {
            Mode::Nearest => "nearest",
            Mode::Bilinear => "bilinear",
        }
    }
}

fn two() -> i64 {
    2
}

impl Layer for Upsample {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        let (c, h, w) = chw(input, "upsample")?;
        positive("scale_factor", self.scale_factor)?;
        let s = self.scale_factor;
        // A map this layer makes must still fit in memory many times over.
        match (h.checked_mul(s), w.checked_mul(s)) {
            (Some(oh), Some(ow)) if c.saturating_mul(oh).saturating_mul(ow) <= 1 << 31 => Ok(vec![c, oh, ow]),
            _ => Err(format!("scale_factor {s} makes a {c}x{h}x{w} map larger than 2^31 values per face")),
        }
    }

    /// Nearest copies one value per output; bilinear weighs four (a multiply-add each).
    fn flops(&self, _input: &[i64], output: &[i64]) -> i64 {
        let per_value = match self.mode {
            Mode::Nearest => 1,
            Mode::Bilinear => 8,
        };
        per_value * output.iter().product::<i64>()
    }

    fn details(&self) -> String {
        format!("x{} {}", self.scale_factor, self.mode.name())
    }

    fn build(
        &self,
        input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let out = [input[1] * self.scale_factor, input[2] * self.scale_factor];
        let mode = self.mode;
        nn::func_t(move |xs, _| match mode {
            Mode::Nearest => xs.upsample_nearest2d(out, None, None),
            Mode::Bilinear => xs.upsample_bilinear2d(out, false, None, None),
        })
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        format!("nn.Upsample(scale_factor={}, mode=\"{}\")", self.scale_factor, self.mode.name())
    }
}
