use super::{shape_str, Layer, Merge, MergeFn, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Sum,
    Prod,
    Max,
}

/// Caffe's Eltwise: element-wise sum (with optional coefficients), product or max of
/// bottoms of one shape; `sum` makes a residual connection.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Eltwise {
    #[serde(default = "sum")]
    pub operation: Operation,
    /// One factor per bottom (sum only); default all 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coeff: Vec<f64>,
}

fn sum() -> Operation {
    Operation::Sum
}

impl Eltwise {
    fn coeffs(&self, n: usize) -> Vec<f64> {
        if self.coeff.is_empty() {
            vec![1.0; n]
        } else {
            self.coeff.clone()
        }
    }
}

impl Layer for Eltwise {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        self.merge_shape(&[input.to_vec()])
    }

    fn flops(&self, input: &[i64], output: &[i64]) -> i64 {
        self.merge_flops(&[input.to_vec()], output)
    }

    fn details(&self) -> String {
        let op = crate::config::name_of(&self.operation);
        if self.coeff.is_empty() {
            op
        } else {
            format!("{op} coeff {:?}", self.coeff)
        }
    }

    fn build(
        &self,
        input: &[i64],
        _params: Vec<tch::Tensor>,
        opts: &super::BuildOptions,
    ) -> nn::FuncT<'static> {
        let f = self.build_merge(&[input.to_vec()], opts);
        nn::func_t(move |xs, _| f(&[xs]))
    }

    fn pytorch(&self, _input: &[i64]) -> String {
        "nn.Identity()".into()
    }

    fn merge(&self) -> Option<&dyn Merge> {
        Some(self)
    }
}

impl Merge for Eltwise {
    fn merge_shape(&self, inputs: &[Shape]) -> Result<Shape, String> {
        if !self.coeff.is_empty() && self.operation != Operation::Sum {
            return Err("coeff applies to operation: sum only".into());
        }
        if !self.coeff.is_empty() && self.coeff.len() != inputs.len() {
            return Err(format!(
                "{} coeff values for {} bottoms; give one per bottom",
                self.coeff.len(),
                inputs.len()
            ));
        }
        if inputs.iter().any(|s| s != &inputs[0]) {
            let all: Vec<String> = inputs.iter().map(|s| shape_str(s)).collect();
            return Err(format!("bottoms {} differ; eltwise needs one shape", all.join(", ")));
        }
        Ok(inputs[0].clone())
    }

    fn merge_flops(&self, inputs: &[Shape], output: &[i64]) -> i64 {
        let n = output.iter().product::<i64>();
        let scaled = self.coeff.iter().filter(|c| **c != 1.0).count() as i64;
        n * (inputs.len() as i64 - 1 + scaled)
    }

    fn build_merge(&self, inputs: &[Shape], _opts: &super::BuildOptions) -> MergeFn {
        let (op, coeff) = (self.operation, self.coeffs(inputs.len()));
        Box::new(move |xs| {
            let kind = xs[0].kind();
            let term = |i: usize| {
                let x = xs[i].to_kind(kind);
                if coeff[i] == 1.0 {
                    x
                } else {
                    x * coeff[i]
                }
            };
            let mut acc = if op == Operation::Sum { term(0) } else { xs[0].shallow_clone() };
            for (i, x) in xs.iter().enumerate().skip(1) {
                acc = match op {
                    Operation::Sum => acc + term(i),
                    Operation::Prod => acc * x.to_kind(kind),
                    Operation::Max => acc.maximum(&x.to_kind(kind)),
                };
            }
            acc
        })
    }

    fn pytorch_merge(&self, args: &[String]) -> String {
        match self.operation {
            Operation::Sum => {
                let c = self.coeffs(args.len());
                let terms: Vec<String> = args
                    .iter()
                    .zip(&c)
                    .map(|(a, c)| if *c == 1.0 { a.clone() } else { format!("{c} * {a}") })
                    .collect();
                terms.join(" + ")
            }
            Operation::Prod => args.join(" * "),
            Operation::Max => {
                args.iter().skip(1).fold(args[0].clone(), |acc, a| format!("torch.maximum({acc}, {a})"))
            }
        }
    }
}
