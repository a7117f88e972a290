use super::filler::{deserialize_filler, Filler};
use super::{Layer, ParamDef, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's PReLU: max(0, x) + a * min(0, x) with a learned slope a per channel (or one
/// shared slope), starting at 0.25.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Prelu {
    #[serde(default)]
    pub channel_shared: bool,
    #[serde(default = "quarter", deserialize_with = "deserialize_filler")]
    pub filler: Filler,
}

fn quarter() -> Filler {
    Filler::Constant { value: 0.25 }
}

impl Layer for Prelu {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        self.filler.validate()?;
        Ok(input.to_vec())
    }

    fn params(&self, input: &[i64]) -> Vec<ParamDef> {
        let n = if self.channel_shared { 1 } else { input[0] };
        vec![ParamDef { suffix: "weight", shape: vec![n], filler: self.filler.clone(), learn: true }]
    }

    fn flops(&self, _input: &[i64], output: &[i64]) -> i64 {
        2 * output.iter().product::<i64>()
    }

    fn details(&self) -> String {
        format!("{} a:{}", if self.channel_shared { "shared" } else { "per channel" }, self.filler.describe())
    }

    fn build(
        &self,
        _input: &[i64],
        params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let a = params.into_iter().next().expect("prelu weight");
        // Slopes stay float32; a bf16 activation is compared in its own precision.
        nn::func_t(move |xs, _| xs.prelu(&a.to_kind(xs.kind())))
    }

    fn pytorch(&self, input: &[i64]) -> String {
        format!("nn.PReLU({})", if self.channel_shared { 1 } else { input[0] })
    }
}
