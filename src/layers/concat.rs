use super::{shape_str, Layer, Merge, MergeFn, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Caffe's Concat: joins its bottoms along `axis` (counted with the batch axis, as in
/// Caffe: 1 = channels); all other sizes must agree.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Concat {
    #[serde(default = "channels")]
    pub axis: i64,
}

fn channels() -> i64 {
    1
}

impl Layer for Concat {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        self.merge_shape(&[input.to_vec()])
    }

    fn flops(&self, _input: &[i64], _output: &[i64]) -> i64 {
        0
    }

    fn details(&self) -> String {
        format!("axis {}", self.axis)
    }

    fn build(
        &self,
        _input: &[i64],
        _params: Vec<tch::Tensor>,
        _opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        nn::func_t(|xs, _| xs.shallow_clone())
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        "nn.Identity()".into()
    }

    fn merge(&self) -> Option<&dyn Merge> {
        Some(self)
    }
}

impl Merge for Concat {
    fn merge_shape(&self, inputs: &[Shape]) -> Result<Shape, String> {
        let rank = inputs[0].len() as i64;
        if self.axis < 1 || self.axis > rank {
            return Err(format!(
                "axis {} is outside 1..={rank} (axis counts the batch as 0, as in Caffe: 1 = channels)",
                self.axis
            ));
        }
        let a = (self.axis - 1) as usize;
        let mut out = inputs[0].clone();
        for s in &inputs[1..] {
            let fits =
                s.len() == out.len() && s.iter().zip(&out).enumerate().all(|(i, (x, y))| i == a || x == y);
            if !fits {
                let all: Vec<String> = inputs.iter().map(|s| shape_str(s)).collect();
                return Err(format!(
                    "bottoms {} differ outside axis {}; all other sizes must agree",
                    all.join(", "),
                    self.axis
                ));
            }
            out[a] += s[a];
        }
        Ok(out)
    }

    fn merge_flops(&self, _inputs: &[Shape], _output: &[i64]) -> i64 {
        0
    }

    fn build_merge(&self, _inputs: &[Shape], _opts: &super::BuildOptions) -> MergeFn {
        let axis = self.axis;
        Box::new(move |xs| {
            // Bottoms may differ in precision (a bf16 conv next to a float32 pool).
            let kind = xs[0].kind();
            let same: Vec<tch::Tensor> = xs.iter().map(|x| x.to_kind(kind)).collect();
            tch::Tensor::cat(&same, axis)
        })
    }

    fn pytorch_merge(&self, args: &[String]) -> String {
        format!("torch.cat([{}], {})", args.join(", "), self.axis)
    }
}
