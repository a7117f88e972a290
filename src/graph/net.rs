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
    /// In `forward_t` without gradients: this layer and the steps up to `last_step` (its
    /// max pool, or its plain ReLU) in one kernel, where it takes the call.
    pub(super) fused: Option<Fused>,
    /// In a training step: the layer with its parameters' gradients by a kernel of
    /// fkpnet's own (`Layer::build_train`), where it takes the call.
    pub(super) train: Option<crate::layers::TrainFn>,
}

/// A layer fused with the max pool after it, for predictions (and, where the kind has
/// such a kernel, training steps); or with the plain ReLU after it (`last_step` the
/// next step and `rectified`: `Layer::build_rectified`), for predictions.
pub(super) struct Fused {
    pub(super) f: crate::layers::PooledFn,
    pub(super) train: Option<crate::layers::PooledTrainFn>,
    /// The last step `f` computes: the pool's (the next step, or the one after a
    /// monotone layer), or the ReLU's.
    pub(super) last_step: usize,
    /// Whether `f` applies that monotone layer too (a plain ReLU, `Pooling::rectify`).
    pub(super) rectified: bool,
}

/// The backward steps a training pass owes the kernels that ran in it: a net's first
/// conv and its max pool (`Layer::build_pooled_train`), whose output enters autograd's
/// graph as a leaf. `backward` runs autograd from the loss, then each step from the
/// gradient that reached its leaf. Layers whose parameters' gradients a kernel computes
/// inside autograd's pass (`Layer::build_train`) need no step; the tape counts them.
#[derive(Default)]
pub struct Tape {
    steps: Vec<(Tensor, crate::layers::PooledBackward)>,
    hooked: usize,
}

impl Tape {
    /// `loss.backward()`, then the fused kernels' own backward steps: every parameter's
    /// gradient, as autograd alone would give it for the unfused layers.
    pub fn backward(self, loss: &Tensor) {
        loss.backward();
        for (leaf, step) in self.steps {
            let g = leaf.grad();
            if g.defined() {
                step(&g);
            }
        }
    }

    /// How many kernels' backward steps it holds or that run inside autograd's pass.
    pub fn len(&self) -> usize {
        self.steps.len() + self.hooked
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    /// The (layer, max pool) pairs `forward_t` runs as one kernel when no gradient is
    /// wanted (`Layer::build_pooled`; none where this CPU or build has no such kernel).
    pub fn fused_with_pool(&self) -> Vec<(usize, usize)> {
        let steps = self.steps.iter().enumerate();
        let pools = steps.filter_map(|(i, s)| s.fused.as_ref().map(|p| (i, p)));
        pools.filter(|(i, p)| !(p.rectified && p.last_step == i + 1)).map(|(i, p)| (i, p.last_step)).collect()
    }

    /// The layers whose plain ReLU after them `forward_t` applies inside their own kernel
    /// when no gradient is wanted (`Layer::build_rectified`), where it takes the call.
    pub fn fused_with_relu(&self) -> Vec<usize> {
        let steps = self.steps.iter().enumerate();
        steps
            .filter(|(i, s)| s.fused.as_ref().is_some_and(|p| p.rectified && p.last_step == i + 1))
            .map(|(i, _)| i)
            .collect()
    }

    /// Step `i` as the training pass runs it where a kernel computes its parameters'
    /// gradients (`Layer::build_train`) and takes `x`: its output, whose backward pass
    /// adds them. For `fkpnet time`'s rows.
    pub fn own_train_step(&self, i: usize, x: &Tensor) -> Option<Tensor> {
        (self.steps[i].train.as_ref()?)(x)
    }

    /// Step `i` through the fused kernel the training pass runs it with, where it has one
    /// that takes `x` (`Layer::build_pooled_train`): the later steps the kernel computes
    /// too (its max pool, and the ReLU between where it applies it), the pooled map and
    /// the backward step that adds the parameters' gradients. For `fkpnet time`'s rows.
    pub fn fused_train(
        &self,
        i: usize,
        x: &Tensor,
    ) -> Option<(Vec<usize>, Tensor, crate::layers::PooledBackward)> {
        let fused = self.steps[i].fused.as_ref()?;
        let (y, backward) = (fused.train.as_ref()?)(x)?;
        let first = if fused.rectified { i + 1 } else { fused.last_step };
        Some(((first..=fused.last_step).collect(), y, backward))
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
        self.run(xs, train, None, None).0
    }

    /// `forward_t(xs, true)` for a training step that ends in `Tape::backward`: where the
    /// net's first layer and its max pool have a training kernel, it runs, and the tape
    /// holds its backward step. Gradients through `loss.backward()` alone would miss that
    /// layer's parameters.
    pub fn forward_train(&self, xs: &Tensor) -> (Tensor, Tape) {
        let mut tape = Tape::default();
        let y = self.run(xs, true, None, Some(&mut tape)).0;
        (y, tape)
    }

    /// `forward_train`, also returning blob `keep` (as `forward_keeping`).
    pub fn forward_train_keeping(&self, xs: &Tensor, keep: usize) -> (Tensor, Tensor, Tape) {
        assert!(keep == 0 || !self.steps[keep - 1].deferred, "blob {keep} is computed later, by a pool");
        let mut tape = Tape::default();
        let (y, kept) = self.run(xs, true, Some(keep), Some(&mut tape));
        (y, kept.expect("kept blob"), tape)
    }

    /// `forward_t`, also returning blob `keep` (as computed, e.g. the heatmaps a
    /// soft_argmax reads) without keeping every other blob alive as `forward_all` does.
    pub fn forward_keeping(&self, xs: &Tensor, train: bool, keep: usize) -> (Tensor, Tensor) {
        assert!(keep == 0 || !self.steps[keep - 1].deferred, "blob {keep} is computed later, by a pool");
        let (y, kept) = self.run(xs, train, Some(keep), None);
        (y, kept.expect("kept blob"))
    }

    fn run(
        &self,
        xs: &Tensor,
        train: bool,
        keep: Option<usize>,
        mut tape: Option<&mut Tape>,
    ) -> (Tensor, Option<Tensor>) {
        let mut blobs: Vec<Option<Tensor>> = vec![Some(self.input(xs))];
        let mut fused_until = None;
        for (i, step) in self.steps.iter().enumerate() {
            if fused_until.is_some_and(|j| i <= j) {
                continue; // computed by the fused kernel at the step that started it
            }
            if let Some(y) = self.fused(i, &blobs, train, keep, tape.as_deref_mut()) {
                let j = step.fused.as_ref().expect("fused").last_step;
                fused_until = Some(j);
                // The blobs in between are never made; the pool's is.
                blobs.resize_with(j + 1, || None);
                blobs.push(Some(y));
                for k in i..=j {
                    for &b in self.steps[k].frees.iter().filter(|&&b| Some(b) != keep) {
                        blobs[b] = None;
                    }
                }
                continue;
            }
            let y = {
                let ins: Vec<&Tensor> =
                    step.bottoms.iter().map(|&b| blobs[b].as_ref().expect("read before freed")).collect();
                // Not where a deferred layer is to be applied after this one (a pool's step).
                let plain = !step.deferred && !(i > 0 && self.steps[i - 1].deferred);
                let own = tape.as_deref_mut().zip(step.train.as_ref()).filter(|_| plain);
                let trained = own.and_then(|(tape, f)| Some((tape, f(ins[0])?)));
                if let Some((tape, y)) = trained {
                    tape.hooked += 1;
                    y
                } else if step.deferred {
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

    /// Step `i` and its max pool through the fused kernel, where it has one that takes
    /// this call and no blob in between is to be kept: the pool's output, with a
    /// monotone layer between the two applied after it (it commutes with the pool), by the
    /// kernel itself where it is a plain ReLU. With a `tape` (a training step), the
    /// training kernel where it takes the call; its output is a leaf of autograd's graph.
    fn fused(
        &self,
        i: usize,
        blobs: &[Option<Tensor>],
        train: bool,
        keep: Option<usize>,
        tape: Option<&mut Tape>,
    ) -> Option<Tensor> {
        let fused = self.steps[i].fused.as_ref()?;
        if keep.is_some_and(|k| k > i && k <= fused.last_step) {
            return None;
        }
        let x = blobs[self.steps[i].bottoms[0]].as_ref().expect("read before freed");
        let trained = tape.zip(fused.train.as_ref()).and_then(|(tape, f)| Some((tape, f(x)?)));
        let y = match trained {
            Some((tape, (y, backward))) => {
                let leaf = y.set_requires_grad(true);
                tape.steps.push((leaf.shallow_clone(), backward));
                leaf
            }
            None => (fused.f)(x)?,
        };
        let layer_between = fused.last_step == i + 2 && !fused.rectified;
        Some(if layer_between { self.apply(i + 1, &[&y], train) } else { y })
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
