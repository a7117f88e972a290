use super::{Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's Dropout: zero with probability dropout_ratio and scale by 1/(1-p) while
/// training; identity at test time.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    #[serde(default = "half")]
    pub dropout_ratio: f64,
}

fn half() -> f64 {
    0.5
}

impl Layer for Dropout {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        if !(0.0..1.0).contains(&self.dropout_ratio) {
            return Err(format!("dropout_ratio must be in [0, 1), got {}", self.dropout_ratio));
        }
        Ok(input.to_vec())
    }

    fn flops(&self, _input: &[i64], output: &[i64]) -> i64 {
        output.iter().product()
    }

    fn details(&self) -> String {
        format!("p {}", self.dropout_ratio)
    }

    fn build(
        &self,
        _input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let p = self.dropout_ratio;
        nn::func_t(move |xs, train| xs.dropout(p, train))
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        format!("nn.Dropout({})", self.dropout_ratio)
    }
}
