//! `fkpnet time`: like `caffe time`, average forward and backward milliseconds per
//! layer and for the whole net, after warm-up.

use crate::graph::Graph;
use crate::layers::BuildOptions;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

pub struct LayerTime {
    pub name: String,
    pub kind: &'static str,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// The part of `backward_ms` spent in fkpnet's own weight-gradient kernel
    /// (`kernels::conv_grad`), as in training; 0 where the row has none.
    pub kernel_ms: f64,
}

pub struct Timing {
    pub layers: Vec<LayerTime>,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// The part of the whole backward pass spent in fkpnet's weight-gradient kernel.
    pub backward_kernel_ms: f64,
    pub batch: i64,
    /// Layers the whole-net pass runs after the max pool behind them (`Net::forward_t`).
    pub moved_behind_pool: Vec<String>,
    /// Rows timed as one fused kernel, as the training pass runs them: the row that
    /// times it, and the later rows it computes (those read 0).
    pub fused: Vec<(String, Vec<String>)>,
    /// Rows whose parameters' gradients a kernel of fkpnet's own computes, as in training
    /// (`Layer::build_train`; their backward times include it).
    pub own_grads: Vec<String>,
    /// One Adam update of every parameter (what `fkpnet bench` and the shipped solvers
    /// run), timed after a backward pass.
    pub update_ms: f64,
    pub tensors: usize,
}

/// Wait for queued GPU work, so wall-clock timings are real.
pub fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// Mean milliseconds of `f` over `iterations` runs after `warmup` runs.
fn mean_ms(device: Device, warmup: usize, iterations: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    sync(device);
    t.elapsed().as_secs_f64() * 1e3 / iterations.max(1) as f64
}

/// Mean milliseconds of `timed(prepare())` over `iterations` runs after `warmup` runs:
/// only the second part is timed (a backward step, given what its forward made).
fn mean_ms_of<B>(
    device: Device,
    warmup: usize,
    iterations: usize,
    mut prepare: impl FnMut() -> B,
    timed: impl Fn(B),
) -> f64 {
    let mut total = 0.0;
    for k in 0..warmup + iterations {
        let b = prepare();
        sync(device);
        let t = Instant::now();
        timed(b);
        sync(device);
        if k >= warmup {
            total += t.elapsed().as_secs_f64() * 1e3;
        }
    }
    total / iterations.max(1) as f64
}

/// Time each layer on its real input (the output of the layers before it, from a
/// random batch) and the whole net. A layer's backward time is that of its own
/// backward pass (weights and, except for the first layer, its input).
pub fn time_net(graph: &Graph, batch: i64, iterations: usize, device: Device, opts: BuildOptions) -> Timing {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let (net, params) = graph.build(&vs.root(), opts);
    let mut shape = vec![batch];
    shape.extend(&graph.input);
    let input = net.input(&Tensor::rand(shape.as_slice(), (Kind::Float, device)));
    let warmup = 3.min(iterations).max(1);

    let blobs = tch::no_grad(|| net.forward_all(&input, true));
    let mut out = Vec::new();
    let mut fused = Vec::new();
    let mut own_grads = Vec::new();
    let mut inside: Vec<usize> = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if inside.contains(&i) {
            // Computed by the fused kernel of an earlier row, as in the training pass.
            out.push(LayerTime {
                name: node.name.clone(),
                kind: node.kind,
                forward_ms: 0.0,
                backward_ms: 0.0,
                kernel_ms: 0.0,
            });
            continue;
        }
        if let Some((steps, row)) = time_fused(&net, i, &blobs, device, warmup, iterations) {
            let names = steps.iter().map(|&k| graph.nodes[k].name.clone()).collect();
            fused.push((node.name.clone(), names));
            inside = steps;
            out.push(LayerTime { name: node.name.clone(), kind: node.kind, ..row });
            continue;
        }
        // The layer's real inputs, detached; all but the net's input need their gradient.
        let xs: Vec<Tensor> = net
            .bottoms(i)
            .iter()
            .map(|&b| if b == 0 { blobs[0].detach() } else { blobs[b].detach().set_requires_grad(true) })
            .collect();
        if let Some(row) = time_own_train_step(&net, i, &xs, &blobs[i + 1], device, warmup, iterations) {
            own_grads.push(node.name.clone());
            out.push(LayerTime { name: node.name.clone(), kind: node.kind, ..row });
            continue;
        }
        let refs: Vec<&Tensor> = xs.iter().collect();
        let learns = xs.iter().any(|x| x.requires_grad()) || !node.params.is_empty();
        let row = time_layer(&net, i, &refs, &blobs[i + 1], learns, device, warmup, iterations);
        out.push(LayerTime { name: node.name.clone(), kind: node.kind, ..row });
    }
    let forward_ms = mean_ms(device, warmup, iterations, || {
        let _ = net.forward_train(&input);
    });
    let (backward_ms, backward_kernel_ms) = kernel_share(warmup + iterations, || {
        mean_ms_of(
            device,
            warmup,
            iterations,
            || {
                let (y, tape) = net.forward_train(&input);
                (y.sum(Kind::Float), tape)
            },
            |(y, tape)| tape.backward(&y),
        )
    });
    // A rectifier inside a fused kernel is not moved: the kernel applies it itself.
    let in_kernel = |n: &String| fused.iter().any(|(_, inside): &(String, Vec<String>)| inside.contains(n));
    let moved_behind_pool = net
        .moved_behind_pool()
        .iter()
        .map(|&i| graph.nodes[i].name.clone())
        .filter(|n| !in_kernel(n))
        .collect();
    // The solver's share of a step: Adam over every parameter, on the last gradients.
    let yaml = format!(
        "net: x\ndata: {{train: synthetic}}\ntype: Adam\nbase_lr: 0.001\nmomentum: 0.9\nmax_iter: 1\nbatch_size: {batch}\n"
    );
    let cfg: crate::config::SolverConfig = serde_yaml::from_str(&yaml).expect("valid timing solver");
    let mut solver = crate::solver::Solver::new(&cfg, &params);
    let update_ms = mean_ms(device, warmup, iterations, || solver.step(&params, 1e-3));
    let tensors = params.iter().filter(|p| p.learn).count();
    Timing {
        layers: out,
        forward_ms,
        backward_ms,
        backward_kernel_ms,
        batch,
        moved_behind_pool,
        fused,
        own_grads,
        update_ms,
        tensors,
    }
}

/// Row `i` as libtorch runs it on `xs`: the forward, and (where it `learns`: an input or
/// a parameter wants a gradient) the backward given a gradient of its output `out`.
#[allow(clippy::too_many_arguments)]
fn time_layer(
    net: &crate::graph::Net,
    i: usize,
    xs: &[&Tensor],
    out: &Tensor,
    learns: bool,
    device: Device,
    warmup: usize,
    iterations: usize,
) -> LayerTime {
    let forward_ms = mean_ms(device, warmup, iterations, || {
        let _ = net.apply(i, xs, true);
    });
    let backward_ms = if learns {
        // The layer gets a gradient in its output's own layout, as in training:
        // `y.sum().backward()` would hand it a stride-0 gradient, which sends
        // channels-last kernels down slow generic paths (BatchNorm's backward 3x).
        // tch has no backward(gradient), so the gradient comes from `(y * g).sum()`,
        // and that product's own backward, timed alone, is taken off.
        let g = out.rand_like();
        let timed = |f: &dyn Fn() -> Tensor| {
            mean_ms_of(device, warmup, iterations, || (f() * &g).sum(Kind::Float), |y| y.backward())
        };
        let feed = out.detach().set_requires_grad(true);
        let feed_ms = timed(&|| feed.shallow_clone());
        (timed(&|| net.apply(i, xs, true)) - feed_ms).max(0.0)
    } else {
        0.0
    };
    LayerTime { name: String::new(), kind: "", forward_ms, backward_ms, kernel_ms: 0.0 }
}

/// Row `i` as the training pass runs it where a kernel of fkpnet's own computes its
/// parameters' gradients (`Layer::build_train`): the forward, and autograd's backward
/// (the input's gradient, and the kernel's through its hook), the gradient `(y * g).sum()` feeds
/// taken off as for the other rows.
fn time_own_train_step(
    net: &crate::graph::Net,
    i: usize,
    xs: &[Tensor],
    out: &Tensor,
    device: Device,
    warmup: usize,
    iterations: usize,
) -> Option<LayerTime> {
    let x = xs.first().filter(|_| xs.len() == 1)?;
    let _probe = net.own_train_step(i, x)?;
    let forward_ms = mean_ms(device, warmup, iterations, || {
        let _ = net.own_train_step(i, x);
    });
    let g = out.rand_like();
    let prepare = || (net.own_train_step(i, x).expect("took it above") * &g).sum(Kind::Float);
    let backward = |loss: Tensor| loss.backward();
    let feed = out.detach().set_requires_grad(true);
    let feed_ms = mean_ms_of(
        device,
        warmup,
        iterations,
        || (feed.shallow_clone() * &g).sum(Kind::Float),
        |y| y.backward(),
    );
    let (backward_ms, kernel_ms) =
        kernel_share(warmup + iterations, || mean_ms_of(device, warmup, iterations, prepare, backward));
    let backward_ms = (backward_ms - feed_ms).max(0.0);
    Some(LayerTime { name: String::new(), kind: "", forward_ms, backward_ms, kernel_ms })
}

/// Row `i` through the fused training kernel, where the training pass runs it so (a
/// net's first conv and its max pool): its forward, and its own backward step given a
/// gradient of the pooled map; with the later steps it computes.
fn time_fused(
    net: &crate::graph::Net,
    i: usize,
    blobs: &[Tensor],
    device: Device,
    warmup: usize,
    iterations: usize,
) -> Option<(Vec<usize>, LayerTime)> {
    // As in training: only the net's input needs no gradient (the training kernel takes
    // a net's first layer only).
    let b = net.bottoms(i)[0];
    let x = if b == 0 { blobs[0].detach() } else { blobs[b].detach().set_requires_grad(true) };
    let (steps, y, _) = net.fused_train(i, &x)?;
    let forward_ms = mean_ms(device, warmup, iterations, || {
        let _ = net.fused_train(i, &x);
    });
    let g = y.rand_like();
    let prepare = || net.fused_train(i, &x).expect("took it above").2;
    let backward_ms = mean_ms_of(device, warmup, iterations, prepare, |backward| backward(&g));
    Some((steps, LayerTime { name: String::new(), kind: "", forward_ms, backward_ms, kernel_ms: 0.0 }))
}

/// `time()`'s result, and the milliseconds per run spent in fkpnet's weight-gradient
/// kernel meanwhile (over `runs` runs, warm-up included: the kernel's calls cost alike).
fn kernel_share(runs: usize, time: impl FnOnce() -> f64) -> (f64, f64) {
    let before = crate::kernels::conv_grad::time_spent();
    let ms = time();
    let spent = crate::kernels::conv_grad::time_spent() - before;
    (ms, spent.as_secs_f64() * 1e3 / runs.max(1) as f64)
}

impl Timing {
    pub fn table(&self) -> String {
        let w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
        // The kernel's column only where a row has the kernel (CPUs with AVX2, no AVX-512).
        let kernel = !self.own_grads.is_empty();
        let mut s = format!("{:<w$}  {:<8}  {:>12}  {:>12}", "layer", "type", "forward ms", "backward ms");
        s += if kernel { "  of it wgrad ms\n" } else { "\n" };
        for l in &self.layers {
            s += &format!("{:<w$}  {:<8}  {:>12.3}  {:>12.3}", l.name, l.kind, l.forward_ms, l.backward_ms);
            s += &match (kernel, l.kernel_ms > 0.0) {
                (true, true) => format!("  {:>14.3}\n", l.kernel_ms),
                _ => "\n".into(),
            };
        }
        if !self.moved_behind_pool.is_empty() {
            s += &format!(
                "({} timed above where the config puts them; the whole-net passes below rectify \
                 the pooled map instead: max pooling first, same results.)\n",
                self.moved_behind_pool.join(", ")
            );
        }
        for (row, inside) in &self.fused {
            s += &format!(
                "({} run inside {row}'s kernel, as in training: {row}'s row times them all.)\n",
                inside.join(", ")
            );
        }
        if !self.own_grads.is_empty() {
            s += &format!(
                "({}: weight gradients by fkpnet's own kernel, as in training; \"of it wgrad ms\" is its \
                 share of the backward time, the rest autograd's: the input's gradient.)\n",
                self.own_grads.join(", ")
            );
        }
        let step = self.forward_ms + self.backward_ms;
        s += &format!(
            "Average Forward pass: {:.3} ms.\nAverage Backward pass: {:.3} ms.\nAverage Forward-Backward: {:.3} ms \
             ({:.1} images/s at batch {}).\n",
            self.forward_ms,
            self.backward_ms,
            step,
            self.batch as f64 * 1e3 / step,
            self.batch
        );
        s + &self.breakdown()
    }

    /// Where a training step's time goes: the layer rows against the whole passes
    /// (the difference is what happens between layers: autograd's bookkeeping, layout
    /// conversions, allocation, and the rectifiers moved behind their pools; rows are
    /// timed one layer at a time, so it can come out below zero by their noise), and
    /// the solver update.
    pub fn breakdown(&self) -> String {
        let fwd: f64 = self.layers.iter().map(|l| l.forward_ms).sum();
        let bwd: f64 = self.layers.iter().map(|l| l.backward_ms).sum();
        let train = self.forward_ms + self.backward_ms + self.update_ms;
        let pct = |x: f64| 100.0 * x / train;
        let kernel = match self.backward_kernel_ms {
            ms if ms > 0.0 => format!("; fkpnet's weight-gradient kernel {ms:.3} of it"),
            _ => String::new(),
        };
        format!(
            "A training step, {train:.3} ms:\n  \
             forward  {:>9.3} ms ({:>4.1}%): layer rows {fwd:.3}, between layers {:.3}\n  \
             backward {:>9.3} ms ({:>4.1}%): layer rows {bwd:.3}, between layers {:.3}{kernel}\n  \
             update   {:>9.3} ms ({:>4.1}%): Adam over {} tensors\n",
            self.forward_ms,
            pct(self.forward_ms),
            self.forward_ms - fwd,
            self.backward_ms,
            pct(self.backward_ms),
            self.backward_ms - bwd,
            self.update_ms,
            pct(self.update_ms),
            self.tensors
        )
    }
}
