//! Kernels of fkpnet's own, for the shapes where libtorch's are slow, and one of
//! libtorch's own kernels picked over its default (`onednn`). Each is used only where it
//! applies (it says when) and falls back to libtorch's default otherwise; each is tested
//! against libtorch's result in its file. `FKPNET_KERNELS=libtorch` turns them all off
//! (to compare, or to rule them out).

pub mod conv_grad;
pub mod direct_conv;
pub mod few_rows;
pub mod gemm;
pub mod onednn;
pub mod wide_conv;
pub mod winograd;

use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// Whether fkpnet's own kernels may be used: `FKPNET_KERNELS` unset or `auto`; `libtorch`
/// turns them off. Any other value is named in a warning, once, and read as `auto`.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| match std::env::var("FKPNET_KERNELS").as_deref() {
        Err(_) | Ok("auto") | Ok("") => true,
        Ok("libtorch") => false,
        Ok(other) => {
            eprintln!("warning: FKPNET_KERNELS={other:?} is not one of auto, libtorch; using auto");
            true
        }
    })
}

/// The vector instruction set a kernel runs with. Each kernel has a loop for each: the
/// AVX-512 ones came first (the project's machines of the time); the AVX2 ones are for
/// the CPUs without AVX-512 (AMD before Zen 4, Intel's desktop and laptop CPUs since
/// Alder Lake), where libtorch's batch-1 path ran LeNet at 0.27x onnxruntime's speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 16 floats per register, 32 registers, masked loads and stores.
    Avx512,
    /// AVX2 with FMA: 8 floats per register, 16 registers.
    Avx2,
}

/// The instruction set fkpnet's kernels run with on this CPU (AVX-512F, else AVX2 + FMA;
/// x86-64 only), or `None` where they decline everything and libtorch runs. In a test,
/// `with_isa` picks it for the calling thread.
pub fn isa() -> Option<Isa> {
    #[cfg(test)]
    if let Some(forced) = FORCED_ISA.with(std::cell::Cell::get) {
        return forced;
    }
    detected_isa()
}

fn detected_isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// Whether this CPU has AVX-512F (some choices besides the kernels' depend on it).
pub fn has_avx512() -> bool {
    detected_isa() == Some(Isa::Avx512)
}

#[cfg(test)]
thread_local! {
    /// The instruction set `isa` reports on this thread, where a test picked one.
    static FORCED_ISA: std::cell::Cell<Option<Option<Isa>>> = const { std::cell::Cell::new(None) };
}

/// In a test: runs `f` once with each instruction set this CPU has (the kernels pick it on
/// the calling thread, before any work is shared out), or says on stderr that it has
/// none, so that the skip shows. Both where it has AVX-512: the AVX2 loops are then
/// checked there too.
#[cfg(test)]
fn for_each_isa(f: impl Fn(Isa)) {
    let mut isas: Vec<Isa> = detected_isa().into_iter().collect();
    #[cfg(target_arch = "x86_64")]
    if isas == [Isa::Avx512] && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        isas.push(Isa::Avx2);
    }
    if isas.is_empty() {
        eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 + FMA (fkpnet's kernels decline there; libtorch runs)");
    }
    for isa in isas {
        eprintln!("checking the {isa:?} loops");
        with_isa(Some(isa), || f(isa));
    }
}

/// In a test: `f` with `isa` reporting `forced` on this thread.
#[cfg(test)]
fn with_isa<T>(forced: Option<Isa>, f: impl FnOnce() -> T) -> T {
    let before = FORCED_ISA.with(|c| c.replace(Some(forced)));
    let out = f();
    FORCED_ISA.with(|c| c.set(before));
    out
}

/// What every kernel here needs of a call: no gradient wanted (libtorch's grad mode off,
/// or none of the tensors asks for one) and float32 on the CPU.
fn inference_on_cpu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let wants_grad =
        grad_enabled() && (x.requires_grad() || w.requires_grad() || b.is_some_and(|b| b.requires_grad()));
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    !wants_grad && cpu_f32(x) && cpu_f32(w) && b.is_none_or(cpu_f32)
}

/// libtorch's grad mode (tch has no getter: set it and put it back).
fn grad_enabled() -> bool {
    // SAFETY: plain FFI calls into libtorch's thread-local grad mode.
    unsafe {
        let was = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(was);
        was != 0
    }
}

/// A tensor's f32 elements from its data pointer on, borrowed. The caller has checked
/// that `t` is dense (its `numel` elements lie there, in the order it reads them).
fn data(t: &Tensor) -> &[f32] {
    // SAFETY: per the caller's check `t` holds `numel` f32 elements from its data
    // pointer on; the slice borrows `t`, which outlives it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// Runs `f(0..n)` in parallel on libtorch's own OpenMP threads: the team its operators
/// use, found in the process with `dlsym`. A pool of our own competed with them: after
/// each libtorch operator OpenMP's workers spin for a while on every core, and LeNet's
/// fused conv2 took 6.3 ms beside them against 4.0 ms when they slept
/// (`OMP_WAIT_POLICY=PASSIVE`); spawning threads per call cost 0.4-0.5 ms here. Each
/// thread takes the next index not yet taken (`omp::body`), so callers get no fixed
/// index per thread. Where libtorch has no GNU OpenMP, rayon's pool runs them.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) {
    match omp::team() {
        Some(team) => team.run(n, f),
        None => {
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(f)
        }
    }
}

/// A new `[n, c, h, w]` float32 tensor with channels-last strides, its elements written
/// by `fill` (in NHWC order).
fn channels_last_output(n: i64, c: usize, h: usize, w: usize, fill: impl FnOnce(&mut [f32])) -> Tensor {
    let (c, h, w) = (c as i64, h as i64, w as i64);
    new_output(&[n, c, h, w], &[h * w * c, 1, w * c, c], fill)
}

/// A new float32 CPU tensor of `sizes` and dense `strides`, its elements written by
/// `fill` in storage order: a kernel writes its result in place, where
/// `Tensor::from_slice` of a finished `Vec` cost a copy and three libtorch calls (6-10 us
/// for LeNet's conv5 + pool5 inside a batch-1 pass).
fn new_output(sizes: &[i64], strides: &[i64], fill: impl FnOnce(&mut [f32])) -> Tensor {
    let out = Tensor::empty_strided(sizes, strides, (Kind::Float, Device::Cpu));
    let len = sizes.iter().product::<i64>() as usize;
    // SAFETY: `out` was just allocated with exactly `len` dense f32 elements, and nothing
    // else refers to its storage while `fill` runs.
    fill(unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, len) });
    out
}

/// Each window's maximum over the NHWC conv rows in `conv` (those the pooled row reads,
/// `ow` pixels of `o` channels each), into `out` (`pw * o` floats); windows are clipped
/// at the right edge. Rectified maxima start from 0: max(0, a, b, ...) = relu(max(a, b, ...)).
fn max_pool_row(conv: &[f32], ow: usize, o: usize, pool: direct_conv::Pooling, out: &mut [f32]) {
    let (pk, ps) = (pool.kernel as usize, pool.stride as usize);
    let floor = if pool.rectify { 0.0 } else { f32::NEG_INFINITY };
    for (px, dst) in out.chunks_exact_mut(o).enumerate() {
        dst.fill(floor);
        for line in conv.chunks_exact(ow * o) {
            for ox in px * ps..(px * ps + pk).min(ow) {
                for (d, &v) in dst.iter_mut().zip(&line[ox * o..][..o]) {
                    *d = if v > *d || v.is_nan() { v } else { *d }; // NaN wins, as in libtorch
                }
            }
        }
    }
}

mod omp {
    use std::ffi::{c_uint, c_void};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    type Body = extern "C" fn(*mut c_void);
    /// libgomp's entry for `#pragma omp parallel` (GCC's ABI since 4.9).
    type GompParallel = unsafe extern "C" fn(Body, *mut c_void, c_uint, c_uint);

    pub struct Team {
        parallel: GompParallel,
    }

    /// libgomp's functions, where libtorch loaded it.
    pub fn team() -> Option<&'static Team> {
        static TEAM: OnceLock<Option<Team>> = OnceLock::new();
        TEAM.get_or_init(|| {
            let find = |name: &std::ffi::CStr| {
                // SAFETY: dlsym on the process's global scope with a NUL-terminated name.
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!p.is_null()).then_some(p)
            };
            let parallel = find(c"GOMP_parallel")?;
            // SAFETY: GOMP_parallel is libgomp's documented entry with this signature.
            Some(Team { parallel: unsafe { std::mem::transmute::<*mut c_void, GompParallel>(parallel) } })
        })
        .as_ref()
    }

    struct Job<'a> {
        n: usize,
        f: &'a (dyn Fn(usize) + Sync),
        /// The next index to run.
        next: AtomicUsize,
    }

    /// Each thread of the team takes the next index not yet taken until none is left: a
    /// thread slowed by another tenant of the machine (this VM's cores lose up to half
    /// their time for minutes) then does fewer, where every team-size-th index to each
    /// made the whole loop wait for it. LeNet batch-1 passes alternated in one process:
    /// the least disturbed level (329 / 336 us, 402 / 409), the medians 1.01-1.09x faster.
    extern "C" fn body(data: *mut c_void) {
        // SAFETY: `data` is the `Job` that `run` keeps alive until GOMP_parallel returns.
        let job = unsafe { &*(data as *const Job) };
        loop {
            let i = job.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.n {
                return;
            }
            (job.f)(i);
        }
    }

    impl Team {
        pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            let job = Job { n, f, next: AtomicUsize::new(0) };
            let threads = (n.min(tch::get_num_threads().max(1) as usize)) as c_uint;
            // SAFETY: `body` only reads `job`, which outlives the call; GOMP_parallel
            // returns when every thread of the team has finished.
            unsafe { (self.parallel)(body, &job as *const Job as *mut c_void, threads, 0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parallel_for_runs_every_index_once_on_more_than_one_thread_where_it_can() {
        for n in [0, 1, 2, 3, 7, 64] {
            let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let threads = std::sync::Mutex::new(std::collections::HashSet::new());
            let gave_up = std::sync::atomic::AtomicBool::new(false);
            super::parallel_for(n, &|i| {
                runs[i].fetch_add(1, Ordering::Relaxed);
                threads.lock().unwrap().insert(std::thread::current().id());
                // Indices are handed out as threads ask: wait (up to 2 s, a loaded machine
                // wakes a thread late) for a second thread to take one, where there are two.
                let start = std::time::Instant::now();
                while n >= 2 && threads.lock().unwrap().len() < 2 && !gave_up.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    gave_up.store(start.elapsed().as_secs() >= 2, Ordering::Relaxed);
                }
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "n = {n}");
            let used = threads.lock().unwrap().len();
            if n >= 2 && tch::get_num_threads() >= 2 {
                assert!(used >= 2, "n = {n}: all on one thread");
            }
        }
        assert!(super::omp::team().is_some(), "libtorch's libgomp is loaded (the PyPI wheel's is)");
    }

    #[test]
    fn a_slow_index_leaves_the_others_to_the_other_threads() {
        if tch::get_num_threads() < 2 {
            eprintln!("skipped: libtorch has one thread here");
            return;
        }
        // Index 0 takes 300 ms, the other 19 take 2 ms each: handed out in turn, the thread
        // that runs index 0 would also run 9 of the others after it.
        let n = 20;
        let owner: Vec<std::sync::Mutex<Option<std::thread::ThreadId>>> =
            (0..n).map(|_| std::sync::Mutex::new(None)).collect();
        super::parallel_for(n, &|i| {
            *owner[i].lock().unwrap() = Some(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(if i == 0 { 300 } else { 2 }));
        });
        let owners: Vec<_> = owner.iter().map(|o| o.lock().unwrap().expect("ran")).collect();
        let with_slow = owners.iter().filter(|&&t| t == owners[0]).count();
        assert!(with_slow < n / 2, "the thread with the slow index ran {with_slow} of {n}");
    }
}
