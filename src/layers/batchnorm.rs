use super::filler::Filler;
use super::{Layer, ParamDef, Shape};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Caffe's BatchNorm, with Caffe's Scale (gamma, beta) folded in as `affine`.
///
/// Running statistics follow Caffe exactly: Caffe keeps sums weighted by
/// `moving_average_fraction` f and a scale factor `1 + f + f^2 + ...`, i.e. after t
/// batches the estimate is an average with weight `(1 - f) / (1 - f^t)` on the newest
/// batch (the first batch counts fully, so early tests are not biased to zero). That is
/// libtorch's running update with that momentum, so the state is PyTorch's
/// (`running_mean`, `running_var` with the unbiased batch variance, `num_batches_tracked`)
/// and exports load into `nn.BatchNorm2d` as they are.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Weight of the old running estimate per batch (Caffe's default 0.999;
    /// PyTorch's momentum=0.1 is 0.9).
    #[serde(default = "fraction")]
    pub moving_average_fraction: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    /// Normalise with the running statistics in training too (Caffe's option; for
    /// finetuning with frozen statistics). Default: batch statistics while training.
    #[serde(default)]
    pub use_global_stats: bool,
    /// Learned per-channel scale and shift after normalising (Caffe: a Scale layer with
    /// bias_term, PyTorch: affine=True).
    #[serde(default = "yes")]
    pub affine: bool,
}

fn fraction() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl Layer for BatchNorm {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        if !(0.0..1.0).contains(&self.moving_average_fraction) {
            return Err(format!(
                "moving_average_fraction must be in [0, 1), got {}",
                self.moving_average_fraction
            ));
        }
        if !(self.eps > 0.0) {
            return Err(format!("eps must be > 0, got {}", self.eps));
        }
        if input.len() != 3 && input.len() != 1 {
            return Err(format!("needs CxHxW or a vector, got {}", super::shape_str(input)));
        }
        Ok(input.to_vec())
    }

    fn params(&self, input: &[i64]) -> Vec<ParamDef> {
        let c = vec![input[0]];
        let constant = |value| Filler::Constant { value };
        let mut p = Vec::new();
        if self.affine {
            p.push(ParamDef { suffix: "weight", shape: c.clone(), filler: constant(1.0), learn: true });
            p.push(ParamDef { suffix: "bias", shape: c.clone(), filler: constant(0.0), learn: true });
        }
        p.push(ParamDef { suffix: "running_mean", shape: c.clone(), filler: constant(0.0), learn: false });
        p.push(ParamDef { suffix: "running_var", shape: c, filler: constant(1.0), learn: false });
        p.push(ParamDef {
            suffix: "num_batches_tracked",
            shape: vec![],
            filler: constant(0.0),
            learn: false,
        });
        p
    }

    fn flops(&self, _input: &[i64], output: &[i64]) -> i64 {
        // At inference it folds into one multiply-add per value.
        2 * output.iter().product::<i64>()
    }

    fn details(&self) -> String {
        format!(
            "f {}{}{}",
            self.moving_average_fraction,
            if self.affine { " affine" } else { "" },
            if self.use_global_stats { " global stats" } else { "" }
        )
    }

    fn build(&self, _input: &[i64], params: Vec<Tensor>, _opts: &super::BuildOptions) -> nn::FuncT<'static> {
        let mut it = params.into_iter();
        let (gamma, beta) = if self.affine { (it.next(), it.next()) } else { (None, None) };
        let (mean, var, count) =
            (it.next().expect("mean"), it.next().expect("var"), it.next().expect("count"));
        let (f, eps, global) = (self.moving_average_fraction, self.eps, self.use_global_stats);
        // The batch count on the host, read from the buffer once (after any weights or
        // snapshot were loaded into it) and counted here from then on: reading the buffer
        // every step would stall a GPU once per layer per step.
        let host_count = std::cell::Cell::new(None::<f64>);
        nn::func_t(move |xs, train| {
            let batch_stats = train && !global;
            let momentum = if batch_stats {
                let t = tch::no_grad(|| {
                    let before = host_count.get().unwrap_or_else(|| count.double_value(&[]));
                    let mut c = count.shallow_clone();
                    let _ = c.g_add_scalar_(1.0);
                    host_count.set(Some(before + 1.0));
                    before + 1.0
                });
                if f == 0.0 {
                    1.0
                } else {
                    (1.0 - f) / (1.0 - f.powf(t))
                }
            } else {
                0.0
            };
            // Statistics and their update in float32 whatever the compute precision.
            let kind = xs.kind();
            let x = if kind == Kind::Float { xs.shallow_clone() } else { xs.to_kind(Kind::Float) };
            let y = x.batch_norm(
                gamma.as_ref(),
                beta.as_ref(),
                Some(&mean),
                Some(&var),
                batch_stats,
                momentum,
                eps,
                false,
            );
            if kind == Kind::Float {
                y
            } else {
                y.to_kind(kind)
            }
        })
    }

    fn pytorch(&self, input: &[i64]) -> String {
        format!(
            "nn.BatchNorm{}d({}, eps={}, momentum={}, affine={})",
            if input.len() == 3 { 2 } else { 1 },
            input[0],
            self.eps,
            1.0 - self.moving_average_fraction,
            if self.affine { "True" } else { "False" }
        )
    }
}
