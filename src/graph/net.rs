//! The built net: one forward function per layer over numbered blobs (0 = the
//! input), blobs freed after their last reader, and its weights saved as safetensors.

use super::Param;
use crate::layers::{BuildOptions, MergeFn};
use anyhow::Result;
use tch::{nn, Tensor};

pub(super) enum Op {
    One(nn::FuncT<'static>),
    Merge(MergeFn),
}

/// One layer of the built net: which blobs it reads and its forward function.
pub(super) struct Step {
    pub(super) bottoms: Vec<usize>,
    pub(super) op: Op,
    /// Blobs no later step reads, freed after this one (keeps eval memory flat).
    pub(super) frees: Vec<usize>,
    /// In `forward_t`: this monotone layer is applied by the max pool right after it
    /// (its blob holds its input until then).
    pub(super) deferred: bool,
}

/// The built net: one forward function per layer over numbered blobs (0 = input).
pub struct Net {
    pub(super) steps: Vec<Step>,
    pub opts: BuildOptions,
}

impl Net {
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run layer `i` on `bottoms` (its input blobs, in its order).
    pub fn apply(&self, i: usize, bottoms: &[&Tensor], train: bool) -> Tensor {
        use tch::nn::ModuleT;
        match &self.steps[i].op {
            Op::One(f) => f.forward_t(bottoms[0], train),
            Op::Merge(f) => f(bottoms),
        }
    }

    /// The blobs layer `i` reads.
    pub fn bottoms(&self, i: usize) -> &[usize] {
        &self.steps[i].bottoms
    }

    /// The layers `forward_t` applies after the max pool that follows them, rather
    /// than before it (same outputs and gradients; the layer reads the smaller map).
    pub fn moved_behind_pool(&self) -> Vec<usize> {
        (0..self.steps.len()).filter(|&i| self.steps[i].deferred).collect()
    }

    /// Every blob of a forward pass (index 0 the input in the net's layout, k + 1 the
    /// output of layer k), for histograms and per-layer timing; each layer exactly
    /// where the config puts it.
    pub fn forward_all(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut blobs = vec![self.input(xs)];
        for i in 0..self.steps.len() {
            let ins: Vec<&Tensor> = self.steps[i].bottoms.iter().map(|&b| &blobs[b]).collect();
            let y = self.apply(i, &ins, train);
            blobs.push(y);
        }
        blobs
    }

    /// Outputs in float32 whatever the precision; the input is put into the net's
    /// layout first (a no-op when it already is).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.run(xs, train, None).0
    }

    /// `forward_t`, also returning blob `keep` (as computed, e.g. the heatmaps a
    /// soft_argmax reads) without keeping every other blob alive as `forward_all` does.
    pub fn forward_keeping(&self, xs: &Tensor, train: bool, keep: usize) -> (Tensor, Tensor) {
        assert!(keep == 0 || !self.steps[keep - 1].deferred, "blob {keep} is computed later, by a pool");
        let (y, kept) = self.run(xs, train, Some(keep));
        (y, kept.expect("kept blob"))
    }

    fn run(&self, xs: &Tensor, train: bool, keep: Option<usize>) -> (Tensor, Option<Tensor>) {
        let mut blobs: Vec<Option<Tensor>> = vec![Some(self.input(xs))];
        for (i, step) in self.steps.iter().enumerate() {
            let y = {
                let ins: Vec<&Tensor> =
                    step.bottoms.iter().map(|&b| blobs[b].as_ref().expect("read before freed")).collect();
                if step.deferred {
                    ins[0].shallow_clone()
                } else {
                    let y = self.apply(i, &ins, train);
                    if i > 0 && self.steps[i - 1].deferred {
                        self.apply(i - 1, &[&y], train)
                    } else {
                        y
                    }
                }
            };
            for &b in step.frees.iter().filter(|&&b| Some(b) != keep) {
                blobs[b] = None;
            }
            blobs.push(Some(y));
        }
        let kept = keep.map(|k| blobs[k].as_ref().expect("kept blob").shallow_clone());
        let y = blobs.pop().flatten().expect("the last layer's output");
        (y.to_kind(tch::Kind::Float), kept)
    }

    /// A batch in the layout the net computes in.
    pub fn input(&self, xs: &Tensor) -> Tensor {
        if self.opts.channels_last && !crate::layers::is_channels_last(xs) {
            crate::layers::channels_last(xs)
        } else {
            xs.shallow_clone()
        }
    }
}

/// Save params as safetensors: contiguous float32 CPU copies (the net may compute in
/// channels-last or on a GPU; files are always plain NCHW, as PyTorch expects).
pub fn save_weights(params: &[Param], path: &std::path::Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = params
        .iter()
        .map(|p| (p.name.clone(), p.tensor.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
