use super::filler::{deserialize_filler, Filler};
use super::{chw, positive, Layer, ParamDef, Shape};
use serde::{Deserialize, Serialize};
use tch::nn;

mod kernels;
use kernels::{own_conv, weight_and_bias, Packings};

/// Caffe's Convolution. Output size rounds down: (H + 2 pad - dilation (k - 1) - 1) / stride + 1.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Conv {
    pub num_output: i64,
    pub kernel_size: i64,
    #[serde(default = "one")]
    pub stride: i64,
    #[serde(default)]
    pub pad: i64,
    #[serde(default = "one")]
    pub dilation: i64,
    #[serde(default = "one")]
    pub group: i64,
    #[serde(default = "yes")]
    pub bias_term: bool,
    #[serde(default = "Filler::xavier", deserialize_with = "deserialize_filler")]
    pub weight_filler: Filler,
    #[serde(default, deserialize_with = "deserialize_filler")]
    pub bias_filler: Filler,
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}

impl Layer for Conv {
    fn output_shape(&self, input: &[i64]) -> Result<Shape, String> {
        let (c, h, w) = chw(input, "conv")?;
        positive("num_output", self.num_output)?;
        positive("kernel_size", self.kernel_size)?;
        positive("stride", self.stride)?;
        positive("dilation", self.dilation)?;
        positive("group", self.group)?;
        if self.pad < 0 {
            return Err(format!("pad must be >= 0, got {}", self.pad));
        }
        if c % self.group != 0 || self.num_output % self.group != 0 {
            return Err(format!(
                "group {} must divide the input channels ({c}) and num_output ({})",
                self.group, self.num_output
            ));
        }
        self.weight_filler.validate()?;
        self.bias_filler.validate()?;
        let extent = self.dilation * (self.kernel_size - 1) + 1;
        let size = |x: i64| (x + 2 * self.pad - extent) / self.stride + 1;
        if h + 2 * self.pad < extent || w + 2 * self.pad < extent {
            return Err(format!(
                "kernel {k}x{k} is larger than its padded input {}x{} ({})",
                h + 2 * self.pad,
                w + 2 * self.pad,
                super::shape_str(input),
                k = extent
            ));
        }
        Ok(vec![self.num_output, size(h), size(w)])
    }

    fn params(&self, input: &[i64]) -> Vec<ParamDef> {
        let c = input[0] / self.group;
        let mut p = vec![ParamDef {
            suffix: "weight",
            shape: vec![self.num_output, c, self.kernel_size, self.kernel_size],
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

    fn flops(&self, input: &[i64], output: &[i64]) -> i64 {
        let per_out = 2 * (input[0] / self.group) * self.kernel_size * self.kernel_size;
        let outs: i64 = output.iter().product();
        outs * (per_out + self.bias_term as i64)
    }

    fn details(&self) -> String {
        let mut s = format!("k{} s{} p{}", self.kernel_size, self.stride, self.pad);
        if self.dilation != 1 {
            s += &format!(" d{}", self.dilation);
        }
        if self.group != 1 {
            s += &format!(" g{}", self.group);
        }
        s += &format!(" w:{}", self.weight_filler.describe());
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
        let w = it.next().expect("conv weight");
        let b = it.next();
        let (s, p, d, g) = (self.stride, self.pad, self.dilation, self.group);
        let o = *opts;
        // A prediction whose output has a few pixels: fkpnet's own kernel, where it takes it.
        let few_rows = g == 1 && o.own_kernels();
        let packed = Packings::default();
        let geometry = self.geometry();
        // Casts are differentiable: in bf16, gradients flow back to the float32 weights.
        nn::func_t(move |xs, _| {
            if let Some(y) =
                few_rows.then(|| own_conv(xs, &w, b.as_ref(), geometry, false, &packed)).flatten()
            {
                return y;
            }
            let bias = b.as_ref().map(|b| super::compute_kind(b, &o));
            super::compute_kind(xs, &o).conv2d(
                &super::compute_kind(&w, &o),
                bias.as_ref(),
                [s, s],
                [p, p],
                [d, d],
                g,
            )
        })
    }

    fn prefers_channels_last(&self) -> bool {
        true
    }

    /// With a max pool after it, fkpnet's own kernels compute both for predictions: the
    /// direct one for 1-16 input channels (a net's first convs; oneDNN's first-layer kernel
    /// and the pool over its full-size output took 6.6 ms of LeNet's 22 at batch 64), the
    /// wide one for more channels at batch 1-4, any batch on CPUs without AVX-512
    /// (libtorch's pool of LeNet's conv3 took as long as half the conv). The kernels' files say more.
    fn build_pooled(
        &self,
        input: &[i64],
        params: &[tch::Tensor],
        pool: super::Pooling,
        opts: &super::BuildOptions,
    ) -> Option<super::PooledFn> {
        use crate::kernels::{direct_conv, few_rows, wide_conv, winograd};
        if self.group != 1 || !opts.own_kernels() {
            return None;
        }
        let (w, b) = weight_and_bias(params);
        let g = self.geometry();
        let packed = Packings::default();
        if input[0] <= direct_conv::MAX_CHANNELS {
            // 8 or 16 channels of one image: Winograd's transforms (AVX2) where they apply.
            return Some(Box::new(move |xs| {
                winograd::conv_max_pool(xs, &w, b.as_ref(), g, pool, &packed.winograd)
                    .or_else(|| direct_conv::conv_max_pool(xs, &w, b.as_ref(), g, pool))
            }));
        }
        // A conv output of a few pixels (LeNet's conv5 at batch 1) is a product of a few
        // rows, which few_rows computes faster than wide_conv's tiles; a 3x3 conv of 32 or
        // more channels on an AVX2 CPU goes through Winograd's transforms.
        Some(Box::new(move |xs| {
            winograd::conv_max_pool(xs, &w, b.as_ref(), g, pool, &packed.winograd)
                .or_else(|| wide_conv::conv_max_pool(xs, &w, b.as_ref(), g, pool, &packed.wide))
                .or_else(|| few_rows::conv_max_pool(xs, &w, b.as_ref(), g, pool))
        }))
    }

    /// A prediction of a few faces: fkpnet's own kernels apply the ReLU as they store.
    fn build_rectified(
        &self,
        _input: &[i64],
        params: &[tch::Tensor],
        opts: &super::BuildOptions,
    ) -> Option<super::PooledFn> {
        if self.group != 1 || !opts.own_kernels() {
            return None;
        }
        let (w, b) = weight_and_bias(params);
        let g = self.geometry();
        let packed = Packings::default();
        Some(Box::new(move |xs| own_conv(xs, &w, b.as_ref(), g, true, &packed)))
    }

    /// A net's first conv with 1-16 input channels and its 2x2 max pool in training steps:
    /// fkpnet's direct kernel forward, and backward only the pooled outputs' winners'
    /// share of the weight gradient (libtorch's pair took a fifth of LeNet's step;
    /// `kernels::direct_conv::train` says more).
    fn build_pooled_train(
        &self,
        input: &[i64],
        params: &[tch::Tensor],
        pool: super::Pooling,
        opts: &super::BuildOptions,
    ) -> Option<super::PooledTrainFn> {
        use crate::kernels::direct_conv;
        if self.group != 1 || input[0] > direct_conv::MAX_CHANNELS || !opts.own_kernels() {
            return None;
        }
        let (w, b) = weight_and_bias(params);
        let g = self.geometry();
        Some(Box::new(move |xs| {
            let trained = direct_conv::conv_max_pool_train(xs, &w, b.as_ref(), g, pool)?;
            let (w, b) = (w.shallow_clone(), b.as_ref().map(|b| b.shallow_clone()));
            let y = trained.y.shallow_clone();
            let backward = move |dy: &tch::Tensor| {
                let (dw, db) = trained.weight_grad(dy);
                let mut grads = vec![(&w, dw)];
                grads.extend(b.as_ref().map(|b| (b, db)));
                super::add_gradients(&grads);
            };
            Some((y, Box::new(backward) as super::PooledBackward))
        }))
    }

    /// On CPUs with AVX2 and no AVX-512, the weight gradient by fkpnet's own kernels
    /// (oneDNN's for channels-last convs there ran at a third to two thirds of the
    /// forward's rate): Winograd's transforms for 3x3 convs of 32 or more channels
    /// (`kernels::winograd::weight_grad`: VGG's convs 1.65-2.2x faster than `conv_grad`
    /// alone at batch 64, LeNet's conv3 and conv4 1.6x), else `kernels::conv_grad`; VGG's
    /// convs forward by Winograd's transforms too (`kernels::trained` says how). A conv
    /// of the net's input (nothing before it needs a gradient) is left to libtorch.
    fn build_train(
        &self,
        input: &[i64],
        params: &[tch::Tensor],
        opts: &super::BuildOptions,
    ) -> Option<super::TrainFn> {
        if self.group != 1 || !opts.own_kernels() || !opts.channels_last || input[0] % 8 != 0 {
            return None;
        }
        let (w, b) = weight_and_bias(params);
        let (g, o, k) = (self.geometry(), self.num_output, self.kernel_size);
        let packed = crate::kernels::winograd::Packed::default();
        Some(Box::new(move |x| kernels::trained(x, &w, b.as_ref(), o, k, g, &packed)))
    }

    fn pytorch(&self, input: &[i64]) -> String {
        format!(
            "nn.Conv2d({}, {}, {}, stride={}, padding={}, dilation={}, groups={}, bias={})",
            input[0],
            self.num_output,
            self.kernel_size,
            self.stride,
            self.pad,
            self.dilation,
            self.group,
            if self.bias_term { "True" } else { "False" }
        )
    }
}

impl Conv {
    /// The stride, padding and dilation fkpnet's kernels take.
    fn geometry(&self) -> crate::kernels::direct_conv::Geometry {
        crate::kernels::direct_conv::Geometry { stride: self.stride, pad: self.pad, dilation: self.dilation }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use tch::{Kind, Tensor};

    #[test]
    fn conv_shapes_flops_and_a_hand_computed_output() {
        let l = check::layer("{type: conv, num_output: 4, kernel_size: 3, stride: 2, pad: 1}");
        // (7 + 2 - 3) / 2 + 1 = 4, rounding down as Caffe does.
        assert_eq!(l.output_shape(&[2, 7, 7]).unwrap(), vec![4, 4, 4]);
        let p = l.params(&[2, 7, 7]);
        assert_eq!((p[0].shape.clone(), p[1].shape.clone()), (vec![4, 2, 3, 3], vec![4]));
        assert_eq!(l.flops(&[2, 7, 7], &[4, 4, 4]), 4 * 4 * 4 * (2 * 2 * 9 + 1));
        let dil = check::layer("{type: conv, num_output: 2, kernel_size: 3, dilation: 2}");
        assert_eq!(dil.output_shape(&[1, 9, 9]).unwrap(), vec![2, 5, 5], "a dilated 3x3 spans 5");
        let e = check::layer("{type: conv, num_output: 3, kernel_size: 3, group: 2}")
            .output_shape(&[4, 8, 8])
            .unwrap_err();
        assert!(e.contains("group 2 must divide"), "{e}");
        assert!(check::layer("{type: conv, num_output: 2, kernel_size: 5}")
            .output_shape(&[1, 3, 3])
            .unwrap_err()
            .contains("larger than"));
        // A 1-channel 3x3 input, a 2x2 kernel of ones and bias 1: each output is the sum
        // of its window plus 1.
        let one = check::layer("{type: conv, num_output: 1, kernel_size: 2, weight_filler: {type: constant, value: 1}, bias_filler: {type: constant, value: 1}}");
        let params = check::params(one.as_ref(), &[1, 3, 3]);
        let x = Tensor::arange(9, (Kind::Float, tch::Device::Cpu)).view([1, 1, 3, 3]);
        let y = check::forward(one.as_ref(), &[1, 3, 3], &x, &params, true);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![9.0, 13.0, 21.0, 25.0]);
        let x = Tensor::randn([2, 2, 7, 7], (Kind::Float, tch::Device::Cpu));
        let params = check::params(l.as_ref(), &[2, 7, 7]);
        check::gradients(
            &|xs: &[Tensor]| check::forward(l.as_ref(), &[2, 7, 7], &xs[0], &xs[1..], true),
            &[x, params[0].copy(), params[1].copy()],
        );
        assert_eq!(
            l.pytorch(&[2, 7, 7]),
            "nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, groups=1, bias=True)"
        );
    }
}
