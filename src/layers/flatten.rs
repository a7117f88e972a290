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

#[cfg(test)]
mod tests {
    use super::super::check;
    use tch::{Kind, Tensor};

    #[test]
    fn flatten_keeps_the_batch_and_joins_the_rest_in_chw_order() {
        let l = check::layer("{type: flatten}");
        assert_eq!(
            (l.output_shape(&[3, 4, 5]).unwrap(), l.flops(&[3, 4, 5], &[60]), l.params(&[60]).len()),
            (vec![60], 0, 0)
        );
        let x = Tensor::arange(2 * 60, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
        let y = check::forward(l.as_ref(), &[3, 4, 5], &x, &[], true);
        assert_eq!(y.size(), [2, 60]);
        assert_eq!(y.double_value(&[1, 59]), 119.0, "CxHxW order, as Caffe and PyTorch flatten");
        check::gradients(
            &|xs: &[Tensor]| check::forward(l.as_ref(), &[3, 4, 5], &xs[0], &[], true),
            &[x.copy() / 10.0],
        );
        assert_eq!(l.pytorch(&[3, 4, 5]), "nn.Flatten()");
    }
}
