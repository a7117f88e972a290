//! The CPU's peak arithmetic rate, measured rather than computed from a data sheet:
//! every thread runs independent chains of vector fused multiply-adds (fp32) and
//! bfloat16 dot products (AVX-512 BF16's VDPBF16PS) at once, so `fkpnet bench` can
//! say what share of the machine a training step uses. Why measured: a VM's nominal
//! clock (2.1-2.3 GHz here) is not what the cores run at (about 2.7 GHz under load),
//! and the bf16 instructions' rate is not the fp32 rate (half of it on this CPU), so
//! "cores x clock x FLOPs per cycle" from a table misleads in both directions.

use serde::Serialize;
use std::sync::Barrier;
use std::time::Instant;

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// All threads together, fp32 fused multiply-add (2 FLOP per lane).
    pub fp32_gflop_per_s: f64,
    /// bfloat16 dot products accumulating in fp32 (4 FLOP per lane); None without
    /// AVX-512 BF16, or where AMX would be the faster bf16 unit (not measured here).
    pub bf16_gflop_per_s: Option<f64>,
    pub threads: usize,
    /// The vector instructions measured: "avx512" (VFMADD231PS zmm, VDPBF16PS) or
    /// "avx2" (VFMADD231PS ymm).
    pub isa: &'static str,
}

/// A kernel: runs `iters` rounds on one thread and returns FLOPs done (and a value that
/// keeps the optimiser from dropping the work).
type Kernel = fn(u64) -> (f64, f32);

/// Measures the peak of `threads` threads running together; None where no vector FMA
/// kernel exists for this CPU (not x86-64, or without AVX2/FMA).
pub fn measure(threads: usize) -> Option<Peak> {
    let threads = threads.max(1);
    let (isa, fp32, bf16) = kernels()?;
    let bf16 = bf16.filter(|_| !has_amx()).map(|k| rate(k, threads));
    Some(Peak { fp32_gflop_per_s: rate(fp32, threads), bf16_gflop_per_s: bf16, threads, isa })
}

/// GFLOP/s of `kernel` on `threads` threads started together; the best of a few short
/// rounds, each sized to take about 0.1 s, so a busy moment does not set the peak.
fn rate(kernel: Kernel, threads: usize) -> f64 {
    let t = Instant::now();
    let probe = 200_000;
    std::hint::black_box(kernel(probe));
    let per_s = probe as f64 / t.elapsed().as_secs_f64().max(1e-6);
    let iters = ((per_s * 0.1) as u64).max(probe);
    (0..3).map(|_| round(kernel, iters, threads)).fold(0.0, f64::max)
}

fn round(kernel: Kernel, iters: u64, threads: usize) -> f64 {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    std::hint::black_box(kernel(iters)).0
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        let flops: f64 = workers.into_iter().map(|w| w.join().expect("peak kernel thread")).sum();
        flops / t.elapsed().as_secs_f64() / 1e9
    })
}

#[cfg(target_arch = "x86_64")]
fn kernels() -> Option<(&'static str, Kernel, Option<Kernel>)> {
    if is_x86_feature_detected!("avx512f") {
        let bf16: Option<Kernel> = is_x86_feature_detected!("avx512bf16").then_some(x86::bf16_512 as Kernel);
        Some(("avx512", x86::fp32_512, bf16))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(("avx2", x86::fp32_256, None))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernels() -> Option<(&'static str, Kernel, Option<Kernel>)> {
    None
}

/// AMX tiles (Sapphire Rapids and later, when the hypervisor passes them through) do
/// bf16 far faster than VDPBF16PS; this module does not drive them, so it says nothing
/// rather than a peak that AMX would beat.
fn has_amx() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "amx_bf16"))
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Independent accumulator chains: enough to cover the FMA latency (4 cycles) on two
    /// ports, few enough to stay in registers (24 spilled to the stack here).
    const CHAINS: usize = 12;

    pub fn fp32_512(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only after is_x86_feature_detected!("avx512f").
        let s = unsafe { fma512(iters) };
        ((iters * CHAINS as u64 * 16 * 2) as f64, s)
    }

    pub fn fp32_256(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only after avx2 and fma were detected.
        let s = unsafe { fma256(iters) };
        ((iters * CHAINS as u64 * 8 * 2) as f64, s)
    }

    pub fn bf16_512(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only after avx512f and avx512bf16 were detected.
        let s = unsafe { dpbf16(iters) };
        ((iters * CHAINS as u64 * 16 * 4) as f64, s)
    }

    #[target_feature(enable = "avx512f")]
    fn fma512(iters: u64) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(1e-9));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(a, a, *r);
            }
        }
        acc.iter().map(|r| _mm512_reduce_add_ps(*r)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    fn fma256(iters: u64) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(1e-9));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(a, a, *r);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|r| {
                // SAFETY: lanes holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *r) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dpbf16(iters: u64) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(1e-9));
        let b = _mm512_cvtne2ps_pbh(a, a);
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_dpbf16_ps(*r, b, b);
            }
        }
        acc.iter().map(|r| _mm512_reduce_add_ps(*r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_count_their_flops_and_measure_a_rate() {
        // No assertion on the machine's speed: the FLOPs a kernel reports grow with its
        // rounds, the rate is a real positive number, and bf16 is measured exactly when
        // the CPU has VDPBF16PS and no AMX.
        let Some((isa, fp32, bf16)) = kernels() else { return assert!(measure(1).is_none()) };
        assert_eq!(fp32(3000).0, 3.0 * fp32(1000).0);
        let p = measure(1).unwrap();
        assert_eq!(p.isa, isa);
        assert!(p.fp32_gflop_per_s.is_finite() && p.fp32_gflop_per_s > 0.1, "{p:?}");
        assert_eq!(p.bf16_gflop_per_s.is_some(), bf16.is_some() && !has_amx(), "{p:?}");
        if let Some(b) = p.bf16_gflop_per_s {
            assert!(b.is_finite() && b > 0.1, "{p:?}");
        }
    }
}
