use super::{Layer, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's Flatten: CxHxW -> C*H*W. (Dense flattens by itself; this is for clarity.)
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Layer for Flatten {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        Ok(vec![input.iter().product()])
    }

    fn flops(&self, _input: &[i64], _output: &[i64]) -> i64 {
        0
    }

    fn build(
        &self,
        _input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        nn::func_t(|xs, _| xs.flatten(1, -1))
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        "nn.Flatten()".into()
    }
}
