//! The passes of a training step beside the update: the training forward pass (with
//! the heatmap regulariser), the search for the first non-finite gradient, the
//! tensors TensorBoard's histograms show; and what a run will write to disk.

use crate::graph::{Graph, Net, Tape};
use crate::loss;
use tch::Tensor;

/// The training forward pass: the predictions, and with `js_reg` the heatmap
/// regulariser's loss (read off the maps the last layer, a soft_argmax, takes in); the
/// step's backward pass goes through the tape (`Tape::backward`).
pub fn train_forward(net: &Net, graph: &Graph, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>, Tape) {
    let Some(r) = &graph.loss.js_reg else {
        let (pred, tape) = net.forward_train(x);
        return (pred, None, tape);
    };
    let last = graph.nodes.len() - 1;
    let (pred, maps, tape) = net.forward_train_keeping(x, net.bottoms(last)[0]);
    let log_p = graph.nodes[last].layer.heatmap_log_probs(&maps).expect("checked by Graph::compile");
    let (sum, count) = loss::js_divergence(&log_p, y, r.sigma);
    let reg = sum / count.clamp_min(1.0) * r.loss_weight;
    (pred, Some(reg), tape)
}

/// About how many bytes a run writes: float32 weights (final, best, each snapshot),
/// each snapshot's solver history, and a margin for logs and event files.
pub fn run_bytes(graph: &Graph, cfg: &crate::config::SolverConfig) -> u64 {
    let weights =
        4 * graph.nodes.iter().flat_map(|n| &n.params).map(|p| p.shape.iter().product::<i64>()).sum::<i64>()
            as u64;
    let snapshots = if cfg.snapshot > 0 { (cfg.max_iter / cfg.snapshot) as u64 } else { 0 };
    let history = cfg.solver_type.history_buffers() as u64;
    weights * (2 + snapshots * (1 + history)) + (1 << 20)
}

/// The name of the first parameter whose gradient holds a NaN or infinity.
pub fn first_non_finite_grad(params: &[crate::graph::Param]) -> Option<String> {
    tch::no_grad(|| {
        params.iter().find(|p| {
            let g = p.tensor.grad();
            g.defined() && g.isfinite().all().int64_value(&[]) == 0
        })
    })
    .map(|p| p.name.clone())
}

/// Weights, biases and activations (of up to 64 val faces) for TensorBoard.
pub fn histogram_tensors(
    graph: &Graph,
    net: &Net,
    params: &[crate::graph::Param],
    val_x: &Tensor,
) -> Vec<(String, Tensor)> {
    let _guard = tch::no_grad_guard();
    // Copies: the weights may be swapped with their moving average right after.
    let mut out: Vec<(String, Tensor)> = params.iter().map(|p| (p.name.clone(), p.tensor.copy())).collect();
    let blobs = net.forward_all(&val_x.narrow(0, 0, val_x.size()[0].min(64)), false);
    for (node, x) in graph.nodes.iter().zip(&blobs[1..]) {
        out.push((format!("activations/{}", node.name), x.shallow_clone()));
    }
    out
}
