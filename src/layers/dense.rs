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
        // A prediction of a few faces: fkpnet's own kernel, where it takes the call.
        let kernels = o.own_kernels();
        // More faces on CPUs with AVX2 and no AVX-512: fkpnet's own product (MKL's ran
        // its AVX2 code at 3/4 of the kernel's rate there).
        let packed = crate::kernels::gemm::Packed::default();
        // Larger batches with long rows: oneDNN's product where it beats MKL's (AMD CPUs).
        let onednn = crate::kernels::onednn::Linear::default();
        nn::func_t(move |xs, _| {
            let x = xs.flatten(1, -1);
            if let Some(y) =
                kernels.then(|| crate::kernels::few_rows::linear(&x, &w, b.as_ref(), false)).flatten()
            {
                return y;
            }
            if let Some(y) =
                kernels.then(|| crate::kernels::gemm::linear(&x, &w, b.as_ref(), false, &packed)).flatten()
            {
                return y;
            }
            if let Some(y) = kernels.then(|| onednn.forward(&x, &w, b.as_ref())).flatten() {
                return y;
            }
            let bias = b.as_ref().map(|b| super::compute_kind(b, &o));
            super::compute_kind(&x, &o).linear(&super::compute_kind(&w, &o), bias.as_ref())
        })
    }

    /// A prediction: the few-rows kernel (1-4 faces) or the product kernel (more faces,
    /// AVX2 CPUs) applies the ReLU as it writes.
    fn build_rectified(
        &self,
        _input: &[i64],
        params: &[tch::Tensor],
        opts: &super::BuildOptions,
    ) -> Option<super::PooledFn> {
        if !opts.own_kernels() {
            return None;
        }
        let (w, b) = (params[0].shallow_clone(), params.get(1).map(|b| b.shallow_clone()));
        let packed = crate::kernels::gemm::Packed::default();
        Some(Box::new(move |xs| {
            let x = xs.flatten(1, -1);
            crate::kernels::few_rows::linear(&x, &w, b.as_ref(), true)
                .or_else(|| crate::kernels::gemm::linear(&x, &w, b.as_ref(), true, &packed))
        }))
    }

    fn pytorch_flattens_first(&self, input: &[i64]) -> bool {
        input.len() > 1
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

#[cfg(test)]
mod tests {
    use super::super::check;
    use tch::{Kind, Tensor};

    #[test]
    fn dense_flattens_then_computes_w_x_plus_b() {
        let l = check::layer("{type: dense, num_output: 3, bias_filler: {type: constant, value: 0.5}}");
        let input = [2i64, 2, 2];
        assert_eq!(l.output_shape(&input).unwrap(), vec![3]);
        let p = l.params(&input);
        assert_eq!(
            (p[0].shape.clone(), p[1].shape.clone()),
            (vec![3, 8], vec![3]),
            "Caffe's (num_output, inputs)"
        );
        assert_eq!(l.flops(&input, &[3]), 3 * (2 * 8 + 1), "a multiply-add counts 2, plus the bias");
        let params = check::params(l.as_ref(), &input);
        assert!(params[1].equal(&Tensor::full([3], 0.5, (Kind::Float, tch::Device::Cpu))), "the bias filler");
        let x = Tensor::randn([4, 2, 2, 2], (Kind::Float, tch::Device::Cpu));
        let y = check::forward(l.as_ref(), &input, &x, &params, true);
        let want = x.view([4, 8]).matmul(&params[0].tr()) + &params[1];
        assert!(y.allclose(&want, 1e-6, 1e-6, false));
        check::gradients(
            &|xs: &[Tensor]| check::forward(l.as_ref(), &input, &xs[0], &xs[1..], true),
            &[x.copy(), params[0].copy(), params[1].copy()],
        );
        let no_bias = check::layer("{type: dense, num_output: 3, bias_term: false}");
        assert_eq!((no_bias.params(&input).len(), no_bias.flops(&input, &[3])), (1, 3 * 16));
        assert!(check::layer("{type: dense, num_output: 0}")
            .output_shape(&input)
            .unwrap_err()
            .contains("num_output"));
        assert_eq!(l.pytorch(&input), "nn.Linear(8, 3, bias=True)");
    }
}
