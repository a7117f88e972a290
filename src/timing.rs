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
}

pub struct Timing {
    pub layers: Vec<LayerTime>,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub batch: i64,
    /// Layers the whole-net pass runs after the max pool behind them (`Net::forward_t`).
    pub moved_behind_pool: Vec<String>,
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

/// Time each layer on its real input (the output of the layers before it, from a
/// random batch) and the whole net. A layer's backward time is that of its own
/// backward pass (weights and, except for the first layer, its input).
pub fn time_net(graph: &Graph, batch: i64, iterations: usize, device: Device, opts: BuildOptions) -> Timing {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let (net, _params) = graph.build(&vs.root(), opts);
    let mut shape = vec![batch];
    shape.extend(&graph.input);
    let input = net.input(&Tensor::rand(shape.as_slice(), (Kind::Float, device)));
    let warmup = 3.min(iterations).max(1);

    let blobs = tch::no_grad(|| net.forward_all(&input, true));
    let mut out = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        // The layer's real inputs, detached; all but the net's input need their gradient.
        let xs: Vec<Tensor> = net
            .bottoms(i)
            .iter()
            .map(|&b| if b == 0 { blobs[0].detach() } else { blobs[b].detach().set_requires_grad(true) })
            .collect();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let forward_ms = mean_ms(device, warmup, iterations, || {
            let _ = net.apply(i, &refs, true);
        });
        let backward_ms = if xs.iter().any(|x| x.requires_grad()) || !node.params.is_empty() {
            // The layer gets a gradient in its output's own layout, as in training:
            // `y.sum().backward()` would hand it a stride-0 gradient, which sends
            // channels-last kernels down slow generic paths (BatchNorm's backward 3x).
            // tch has no backward(gradient), so the gradient comes from `(y * g).sum()`,
            // and that product's own backward, timed alone, is taken off.
            let g = blobs[i + 1].rand_like();
            let timed = |f: &dyn Fn() -> Tensor| {
                for _ in 0..warmup {
                    (f() * &g).sum(Kind::Float).backward();
                }
                let mut total = 0.0;
                for _ in 0..iterations {
                    let y = (f() * &g).sum(Kind::Float);
                    sync(device);
                    let t = Instant::now();
                    y.backward();
                    sync(device);
                    total += t.elapsed().as_secs_f64() * 1e3;
                }
                total / iterations.max(1) as f64
            };
            let feed = blobs[i + 1].detach().set_requires_grad(true);
            let feed_ms = timed(&|| feed.shallow_clone());
            (timed(&|| net.apply(i, &refs, true)) - feed_ms).max(0.0)
        } else {
            0.0
        };
        out.push(LayerTime { name: node.name.clone(), kind: node.kind, forward_ms, backward_ms });
    }
    let forward_ms = mean_ms(device, warmup, iterations, || {
        let _ = net.forward_t(&input, true);
    });
    let mut backward_total = 0.0;
    for k in 0..warmup + iterations {
        let y = net.forward_t(&input, true).sum(Kind::Float);
        sync(device);
        let t = Instant::now();
        y.backward();
        sync(device);
        if k >= warmup {
            backward_total += t.elapsed().as_secs_f64() * 1e3;
        }
    }
    let moved_behind_pool = net.moved_behind_pool().iter().map(|&i| graph.nodes[i].name.clone()).collect();
    Timing {
        layers: out,
        forward_ms,
        backward_ms: backward_total / iterations.max(1) as f64,
        batch,
        moved_behind_pool,
    }
}

impl Timing {
    pub fn table(&self) -> String {
        let w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
        let mut s = format!("{:<w$}  {:<8}  {:>12}  {:>12}\n", "layer", "type", "forward ms", "backward ms");
        for l in &self.layers {
            s += &format!("{:<w$}  {:<8}  {:>12.3}  {:>12.3}\n", l.name, l.kind, l.forward_ms, l.backward_ms);
        }
        if !self.moved_behind_pool.is_empty() {
            s += &format!(
                "({} timed above where the config puts them; the whole-net passes below rectify \
                 the pooled map instead: max pooling first, same results.)\n",
                self.moved_behind_pool.join(", ")
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
        s
    }
}
