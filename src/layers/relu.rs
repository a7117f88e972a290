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

    fn is_plain_relu(&self) -> bool {
        self.negative_slope == 0.0
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
            // x if x > 0 else slope * x: Caffe's formula for every slope, and what the
            // exported nn.LeakyReLU computes (max(x, slope * x) is it only for slope <= 1).
            nn::func_t(move |xs, _| xs.where_self(&xs.gt(0.0), &(xs * slope)))
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

#[cfg(test)]
mod tests {
    use super::super::check;
    use tch::Tensor;

    #[test]
    fn relu_is_caffes_formula_for_every_slope() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.25, 1.5]).view([1, 4]);
        for s in [0.0, 0.1, -0.3, 2.0] {
            let l = check::layer(&format!("{{type: relu, negative_slope: {s}}}"));
            assert_eq!(
                (l.output_shape(&[4]).unwrap(), l.flops(&[4], &[4]), l.params(&[4]).len()),
                (vec![4], 4, 0)
            );
            let y =
                Vec::<f32>::try_from(check::forward(l.as_ref(), &[4], &x, &[], true).flatten(0, -1)).unwrap();
            let want: Vec<f32> =
                [-2.0f32, -0.5, 0.25, 1.5].iter().map(|&v| v.max(0.0) + s as f32 * v.min(0.0)).collect();
            assert_eq!(y, want, "slope {s}");
            // Away from the kink at 0, autograd agrees with finite differences.
            check::gradients(
                &|xs: &[Tensor]| check::forward(l.as_ref(), &[4], &xs[0], &[], true),
                &[x.copy()],
            );
            // The export computes the same: nn.LeakyReLU(s) is x if x > 0 else s * x.
            let want_export = if s == 0.0 { "nn.ReLU()".to_string() } else { format!("nn.LeakyReLU({s})") };
            assert_eq!(l.pytorch(&[4]), want_export);
            assert_eq!(l.monotone(), s >= 0.0, "only a non-decreasing rectifier commutes with max pooling");
        }
    }
}
