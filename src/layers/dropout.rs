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

#[cfg(test)]
mod tests {
    use super::super::check;
    use tch::{Kind, Tensor};

    #[test]
    fn dropout_zeroes_and_rescales_in_training_and_is_the_identity_in_tests() {
        let l = check::layer("{type: dropout, dropout_ratio: 0.25}");
        assert_eq!(
            (l.output_shape(&[8, 2, 2]).unwrap(), l.flops(&[32], &[32]), l.params(&[32]).len()),
            (vec![8, 2, 2], 32, 0)
        );
        assert!(check::layer("{type: dropout}").details().contains("p 0.5"), "Caffe's default ratio");
        let e = check::layer("{type: dropout, dropout_ratio: 1.0}").output_shape(&[4]).unwrap_err();
        assert!(e.contains("[0, 1)"), "{e}");
        let x = Tensor::ones([64, 1000], (Kind::Float, tch::Device::Cpu));
        tch::manual_seed(1);
        let y = check::forward(l.as_ref(), &[1000], &x, &[], true);
        let kept = y.ne(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((kept - 0.75).abs() < 0.01, "kept {kept} of the values, 0.75 expected");
        // Kept values are scaled by 1 / (1 - p), so the mean stays.
        let kept_values = y.masked_select(&y.ne(0.0));
        assert!(kept_values.allclose(&Tensor::full_like(&kept_values, 1.0 / 0.75), 1e-6, 1e-6, false));
        assert!(check::forward(l.as_ref(), &[1000], &x, &[], false).equal(&x), "identity at test time");
        assert_eq!(l.pytorch(&[1000]), "nn.Dropout(0.25)");
    }
}
