use super::{chw, Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Soft-argmax (integral regression, Sun et al. 2018; DSNT, Nibali et al. 2018): each
/// input channel is one keypoint's heatmap. A softmax over the map's positions makes
/// it a distribution, and its expected position is the keypoint: CxHxW -> 2C values
/// (x, y per channel, in the targets' units: the image spans -1..1). Unlike a dense
/// head it has no weights, keeps the conv layers' translation equivariance, and stays
/// differentiable, so the net learns where to put the mass from the coordinate loss.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SoftArgmax {
    /// Multiplies the maps before the softmax: larger = sharper distributions.
    #[serde(default = "one")]
    pub beta: f64,
}

fn one() -> f64 {
    1.0
}

/// The maps times beta, each flattened (NxCx(H*W)): the logits of the per-map softmax,
/// shared by the forward pass and heatmap losses. Float math whatever the net computes
/// in: the softmax sums h*w exponentials.
fn logits(xs: &Tensor, beta: f64) -> Tensor {
    (xs.to_kind(Kind::Float) * beta).flatten(2, -1)
}

/// Cell centres of an axis of `n` cells across the image, in target units.
pub fn centres(n: i64, device: tch::Device) -> Tensor {
    (Tensor::arange(n, (Kind::Float, device)) + 0.5) * (2.0 / n as f64) - 1.0
}

impl Layer for SoftArgmax {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        let (c, _, _) = chw(input, "soft_argmax")?;
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(format!("beta must be a number > 0, got {}", self.beta));
        }
        Ok(vec![2 * c])
    }

    /// Per map value: scale, exp, sum, divide, and a multiply-add for each of x and y.
    fn flops(&self, input: &[i64], _output: &[i64]) -> i64 {
        8 * input.iter().product::<i64>()
    }

    fn details(&self) -> String {
        format!("beta {}", self.beta)
    }

    fn build(&self, _input: &[i64], _params: Vec<Tensor>, _opts: &super::BuildOptions) -> nn::FuncT<'static> {
        let beta = self.beta;
        nn::func_t(move |xs, _| {
            let (n, c, h, w) = xs.size4().expect("checked by output_shape");
            let p = logits(xs, beta).softmax(-1, Kind::Float).view([n, c, h, w]);
            let x = p.sum_dim_intlist(2, false, Kind::Float).matmul(&centres(w, xs.device()));
            let y = p.sum_dim_intlist(3, false, Kind::Float).matmul(&centres(h, xs.device()));
            // x0, y0, x1, y1, ...: Kaggle's column order when channel k is keypoint k.
            Tensor::stack(&[x, y], 2).view([n, 2 * c])
        })
    }

    fn reads_heatmaps(&self) -> bool {
        true
    }

    fn heatmap_log_probs(&self, xs: &Tensor) -> Option<Tensor> {
        let (n, c, h, w) = xs.size4().ok()?;
        Some(logits(xs, self.beta).log_softmax(-1, Kind::Float).view([n, c, h, w]))
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        format!("SoftArgmax({})", self.beta)
    }

    fn pytorch_class(&self) -> Option<&'static str> {
        Some(
            "class SoftArgmax(nn.Module):\n    \
             \"\"\"Each channel's expected (x, y) under a softmax over its map, image = -1..1.\"\"\"\n    \
             def __init__(self, beta):\n        super().__init__()\n        self.beta = beta\n\n    \
             def forward(self, x):\n        n, c, h, w = x.shape\n        \
             p = torch.softmax(x.float().flatten(2) * self.beta, -1).view(n, c, h, w)\n        \
             gx = (torch.arange(w, device=x.device) + 0.5) * (2 / w) - 1\n        \
             gy = (torch.arange(h, device=x.device) + 0.5) * (2 / h) - 1\n        \
             return torch.stack([p.sum(2) @ gx, p.sum(3) @ gy], 2).flatten(1)\n",
        )
    }
}
