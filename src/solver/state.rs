//! Snapshots: `<prefix>_iter_<N>.safetensors` (weights, as Caffe's .caffemodel) and
//! `<prefix>_iter_<N>.solverstate` (everything else needed to resume exactly: the
//! iteration, every history buffer, the best val result so far). Shuffling and
//! dropout are seeded from (random_seed, iteration), so no RNG stream needs saving.

use super::Solver;
use crate::graph::Param;
use crate::run::atomic_write;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The weights file that belongs to a solverstate (same stem).
pub fn weights_of(state: &Path) -> PathBuf {
    state.with_extension("safetensors")
}

/// A tensor as a file stores it: on the CPU and contiguous. Buffers follow their
/// param's layout (channels-last conv weights have NHWC strides), which safetensors
/// cannot write; `load` copies them back into the layout the resumed run computes in.
fn to_file(t: &Tensor) -> Tensor {
    t.to_device(tch::Device::Cpu).contiguous()
}

/// `extra` are the train loop's own named entries (its display window, smoothed
/// loss, best val result: `train::LoopState`), stored as they are and handed back by
/// `load` with every other entry.
pub fn save(path: &Path, solver: &Solver, params: &[Param], extra: Vec<(String, Tensor)>) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vec![
        ("fkpnet.iter".into(), Tensor::from_slice(&[solver.iter])),
        ("fkpnet.type".into(), Tensor::from_slice(format!("{:?}", solver.kind).as_bytes())),
    ];
    named.extend(extra);
    for (p, hist) in params.iter().zip(&solver.history) {
        for (k, h) in hist.iter().enumerate() {
            named.push((format!("history.{}.{k}", p.name), to_file(h)));
        }
    }
    if let Some(ema) = &solver.ema {
        for (p, s) in params.iter().zip(&ema.shadow) {
            if let Some(s) = s {
                named.push((format!("ema.{}", p.name), to_file(s)));
            }
        }
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    atomic_write(path, |tmp| {
        Tensor::write_safetensors(&refs, tmp).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Fail before a run dir is made when a solverstate cannot resume this solver type.
pub fn check_kind(path: &Path, kind: crate::config::SolverType) -> Result<()> {
    let file = path.display();
    let tensors =
        Tensor::read_safetensors(path).map_err(|e| anyhow!("{file}: not a readable solverstate ({e})"))?;
    let t = tensors
        .iter()
        .find(|(n, _)| n == "fkpnet.type")
        .ok_or_else(|| anyhow!("{file}: no `fkpnet.type` entry; not an fkpnet solverstate"))?;
    let written = String::from_utf8(Vec::<u8>::try_from(&t.1)?).unwrap_or_default();
    if written != format!("{kind:?}") {
        bail!("{file} was written by a {written} solver, but the solver config says type: {kind:?}");
    }
    Ok(())
}

/// Restore `solver` from a solverstate; returns all its entries (the loop's own among
/// them).
pub fn load(path: &Path, solver: &mut Solver, params: &[Param]) -> Result<HashMap<String, Tensor>> {
    let file = path.display();
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| anyhow!("{file}: not a readable solverstate ({e})"))?
        .into_iter()
        .collect();
    let get =
        |n: &str| tensors.get(n).ok_or_else(|| anyhow!("{file}: no `{n}` entry; not an fkpnet solverstate"));
    let kind = String::from_utf8(Vec::<u8>::try_from(get("fkpnet.type")?)?).unwrap_or_default();
    if kind != format!("{:?}", solver.kind) {
        bail!("{file} was written by a {kind} solver, but the solver config says type: {:?}", solver.kind);
    }
    solver.iter = get("fkpnet.iter")?.int64_value(&[0]);
    tch::no_grad(|| -> Result<()> {
        for (p, hist) in params.iter().zip(solver.history.iter_mut()) {
            for (k, h) in hist.iter_mut().enumerate() {
                let name = format!("history.{}.{k}", p.name);
                let t = get(&name)?;
                if t.size() != h.size() {
                    bail!("{file}: `{name}` has shape {:?}, the net needs {:?}", t.size(), h.size());
                }
                h.copy_(t);
            }
        }
        if let Some(ema) = &mut solver.ema {
            for (p, s) in params.iter().zip(ema.shadow.iter_mut()) {
                if let Some(s) = s {
                    let name = format!("ema.{}", p.name);
                    let t = tensors.get(&name).ok_or_else(|| {
                        anyhow!(
                            "{file}: no `{name}`: the run it resumes had no ema_decay; resume without \
                             ema_decay, or start a new run"
                        )
                    })?;
                    if t.size() != s.size() {
                        bail!("{file}: `{name}` has shape {:?}, the net needs {:?}", t.size(), s.size());
                    }
                    s.copy_(t);
                }
            }
        }
        Ok(())
    })?;
    Ok(tensors)
}

/// Copy weights from a safetensors file (or Caffe's `.caffemodel`, its blobs under
/// fkpnet's names: `caffe::model::read`) into the net's params, by name.
/// `strict` (resume): every param must be present. Otherwise (finetune, Caffe's
/// --weights): params missing from the file keep their fillers, tensors the net does
/// not have are ignored; both are reported. A shape mismatch is always an error.
pub fn load_weights(path: &Path, params: &[Param], strict: bool) -> Result<Vec<String>> {
    let file = path.display();
    let (tensors, mut notes): (HashMap<String, Tensor>, Vec<String>) =
        if crate::caffe::model::is_caffemodel(path) {
            crate::caffe::model::read(path)?
        } else {
            let t =
                Tensor::read_safetensors(path).map_err(|e| anyhow!("{file}: cannot read weights ({e})"))?;
            (t.into_iter().collect(), Vec::new())
        };
    tch::no_grad(|| -> Result<()> {
        for p in params {
            match tensors.get(&p.name) {
                Some(t) if t.size() != p.tensor.size() => bail!(
                    "{file}: tensor `{}` has shape {:?}, but the net's is {:?}",
                    p.name,
                    t.size(),
                    p.tensor.size()
                ),
                Some(t) => {
                    p.tensor.shallow_clone().copy_(t);
                }
                None if strict => bail!("{file}: no tensor `{}`; it does not belong to this net", p.name),
                None => notes.push(format!("`{}` not in {file}: keeps its filler", p.name)),
            }
        }
        Ok(())
    })?;
    for name in tensors.keys() {
        if !params.iter().any(|p| &p.name == name) {
            notes.push(format!("`{name}` in {file} is not a tensor of this net: ignored"));
        }
    }
    notes.sort();
    Ok(notes)
}
