use super::filler::{deserialize_filler, Filler};
use super::{positive, Layer, ParamDef, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's InnerProduct: flattens all trailing axes itself, weight is (num_output, inputs).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    pub num_output: i64,
    #[serde(default = "yes")]
    pub bias_term: bool,
    #[serde(default = "Filler::xavier", deserialize_with = "deserialize_filler")]
    pub weight_filler: Filler,
    #[serde(default, deserialize_with = "deserialize_filler")]
    pub bias_filler: Filler,
}

fn yes() -> bool {
    true
}

impl Layer for Dense {
    fn output_shape(&self, _input: &[i64]) -> Result<Shape, String> {
        positive("num_output", self.num_output)?;
        self.weight_filler.validate()?;
        self.bias_filler.validate()?;
        Ok(vec![self.num_output])
    }

    fn params(&self, input: &[i64]) -> Vec<ParamDef> {
        let inputs: i64 = input.iter().product();
        let mut p = vec![ParamDef {
            suffix: "weight",
            shape: vec![self.num_output, inputs],
            filler: self.weight_filler.clone(),
            learn: true,
        }];
        if self.bias_term {
            p.push(ParamDef {
                suffix: "bias",
                shape: vec![self.num_output],
                filler: self.bias_filler.clone(),
                learn: true,
            });
        }
        p
    }

    fn flops(&self, input: &[i64], _output: &[i64]) -> i64 {
        let inputs: i64 = input.iter().product();
        self.num_output * (2 * inputs + self.bias_term as i64)
    }

    fn details(&self) -> String {
        let mut s = format!("w:{}", self.weight_filler.describe());
        if self.bias_term {
            s += &format!(" b:{}", self.bias_filler.describe());
        }
        s
    }

    fn build(
        &self,
        _input: &[i64],
        params: Vec<tch::Tensor>,
        opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let mut it = params.into_iter();
        let w = it.next().expect("dense weight");
        let b = it.next();
        let o = *opts;
        nn::func_t(move |xs, _| {
            let bias = b.as_ref().map(|b| super::compute_kind(b, &o));
            super::compute_kind(&xs.flatten(1, -1), &o).linear(&super::compute_kind(&w, &o), bias.as_ref())
        })
    }

    /// nn.Linear does not flatten by itself: the exporter puts an nn.Flatten before it.
    fn pytorch(&self, input: &[i64]) -> String {
        let inputs: i64 = input.iter().product();
        format!(
            "nn.Linear({inputs}, {}, bias={})",
            self.num_output,
            if self.bias_term { "True" } else { "False" }
        )
    }
}
