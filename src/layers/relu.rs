use super::{Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's ReLU: max(0, x) + negative_slope * min(0, x).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Relu {
    #[serde(default)]
    pub negative_slope: f64,
}

impl Layer for Relu {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        Ok(input.to_vec())
    }

    fn flops(&self, _input: &[i64], output: &[i64]) -> i64 {
        output.iter().product()
    }

    fn monotone(&self) -> bool {
        self.negative_slope >= 0.0
    }

    fn details(&self) -> String {
        if self.negative_slope != 0.0 {
            format!("slope {}", self.negative_slope)
        } else {
            String::new()
        }
    }

    fn build(
        &self,
        _input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let slope = self.negative_slope;
        if slope == 0.0 {
            nn::func_t(|xs, _| xs.relu())
        } else {
            nn::func_t(move |xs, _| xs.maximum(&(xs * slope)))
        }
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        if self.negative_slope == 0.0 {
            "nn.ReLU()".into()
        } else {
            format!("nn.LeakyReLU({})", self.negative_slope)
        }
    }
}
