//! oneDNN's matrix product, for predictions through dense layers with long rows (the
//! baseline's fc1, 9216 inputs; VGG's fc1, 16384), on AMD CPUs with AVX-512.
//!
//! Why: libtorch's `linear` runs MKL's sgemm, and MKL takes its AVX2 code on AMD
//! processors (here `MKL_ENABLE_INSTRUCTIONS=AVX512` made no difference; `=SSE4_2` made
//! it slower, so the default is AVX2). oneDNN, in the same libtorch, uses AVX-512 there.
//! Measured on this project's 2-core AMD EPYC, batch 64, 500 outputs, same process,
//! three alternated rounds, the copies into oneDNN's format and back included:
//! 9216 inputs 116-124 -> 139-151 GFLOP/s, 2048 inputs 119-121 -> 144-158, 1024 inputs
//! 97-116 -> 112-139, but 512 inputs 137-142 -> 115-128 and 256 inputs 90-110 -> 69-74
//! (there the copies cost more than the product gains): hence `MIN_INPUTS`. On Intel
//! CPUs MKL has its AVX-512 code; unmeasured there, so libtorch's default stays.
//!
//! The weights are copied into oneDNN's format once and again only when the tensor
//! changes (libtorch's version counter). Results differ from MKL's in the last bits.

use std::sync::Mutex;
use tch::Tensor;

/// The fewest inputs per row where oneDNN's product beat MKL's here.
pub const MIN_INPUTS: i64 = 1024;

/// The data pointers and versions of the tensors a copy was made from.
type Key = Vec<(usize, i64)>;

/// A dense layer's weights in oneDNN's format, kept between calls.
#[derive(Default)]
pub struct Linear {
    /// The weight's and the bias's copies, with what they were made from.
    cache: Mutex<Option<(Key, Tensor, Option<Tensor>)>>,
}

impl Linear {
    /// `x.linear(w, b)` through oneDNN; `None` where this does not apply (the caller then
    /// uses libtorch): a gradient wanted, not float32 on the CPU, not an AMD CPU with
    /// AVX-512, fewer than `MIN_INPUTS` inputs, or tensors that are not contiguous.
    pub fn forward(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Option<Tensor> {
        if !mkl_lacks_avx512() || !super::inference_on_cpu(x, w, b) {
            return None;
        }
        let (xs, ws) = (x.size(), w.size());
        if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] || xs[1] < MIN_INPUTS || xs[0] == 0 {
            return None;
        }
        let bias_fits = |b: &Tensor| b.size() == [ws[0]] && b.is_contiguous();
        if !x.is_contiguous() || !w.is_contiguous() || !b.is_none_or(bias_fits) {
            return None;
        }
        let key: Key = [Some(w), b]
            .into_iter()
            .flatten()
            .map(|t| (t.data_ptr() as usize, t.internal_version()))
            .collect();
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.as_ref().is_none_or(|(k, _, _)| *k != key) {
            *cache = Some((key, w.to_mkldnn(), b.map(Tensor::to_mkldnn)));
        }
        let (_, wm, bm) = cache.as_ref().expect("just filled");
        Some(x.to_mkldnn().mkldnn_linear(wm, bm.as_ref()).to_dense(None, false))
    }
}

/// An AMD CPU with AVX-512, where MKL runs its AVX2 code and oneDNN its AVX-512 code.
fn mkl_lacks_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let amd = *AMD.get_or_init(|| {
            let v = std::arch::x86_64::__cpuid(0); // leaf 0: the vendor string
            [v.ebx, v.edx, v.ecx].map(u32::to_le_bytes).concat() == *b"AuthenticAMD"
        });
        amd && super::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn agrees_with_libtorchs_linear_follows_updates_and_declines_short_rows() {
        let r = |s: &[i64]| Tensor::randn(s, (Kind::Float, Device::Cpu));
        let (x, w, b) = (r(&[6, 2048]), r(&[40, 2048]), r(&[40]));
        let lin = Linear::default();
        let _g = tch::no_grad_guard();
        if !mkl_lacks_avx512() {
            assert!(lin.forward(&x, &w, Some(&b)).is_none());
            return eprintln!("skipped: not an AMD CPU with AVX-512 (libtorch's MKL runs)");
        }
        for bias in [Some(&b), None] {
            let got = lin.forward(&x, &w, bias).expect("takes it");
            let want = x.linear(&w, bias);
            assert_eq!(got.size(), [6, 40]);
            assert!((&got - &want).abs().max().double_value(&[]) < 1e-3, "bias {}", bias.is_some());
        }
        let _ = w.shallow_clone().g_add_scalar_(1.0); // the solver updates in place
        let again = lin.forward(&x, &w, Some(&b)).unwrap();
        assert!((&again - x.linear(&w, Some(&b))).abs().max().double_value(&[]) < 1e-3, "stale copy");
        assert!(lin.forward(&r(&[6, 512]), &r(&[40, 512]), None).is_none(), "rows below MIN_INPUTS");
        assert!(lin.forward(&x.tr().contiguous().tr(), &w, None).is_none(), "a strided input");
        drop(_g);
        assert!(lin.forward(&x, &w.set_requires_grad(true), None).is_none(), "a gradient wanted");
    }
}
