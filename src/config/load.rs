use super::net::{layer_names, NetConfig};
use super::schema::{explain, yaml_error};
use super::solver::SolverConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

use super::overrides::{is_net_key, mapping, set_net_key, set_solver_key};
pub use super::overrides::{parse_sets, set_test, Override};

/// Where a net came from, so errors can name its file and a layer's line.
#[derive(Debug, Clone, Default)]
pub struct NetSource {
    pub path: PathBuf,
    pub text: String,
    /// The `--set layers.NAME.KEY=V` overrides, by the index of the layer they set:
    /// an error in that layer names the override, not only the file's line.
    pub sets: Vec<(usize, String)>,
}

/// A solver with its net and data resolved: paths absolute, overrides applied,
/// everything type-checked. The net is not compiled yet (see `graph`).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub solver: SolverConfig,
    pub net: NetConfig,
    pub net_source: NetSource,
    pub solver_path: PathBuf,
}

/// Whether `doc` is a valid `T`. Where it is not and the file is a single text (no
/// `base:`), the text is parsed again so the error names its line and column.
fn check_typed<T: serde::de::DeserializeOwned>(doc: &Value, file: &str, text: Option<&str>) -> Result<()> {
    let Err(e) = serde_yaml::from_value::<T>(doc.clone()) else { return Ok(()) };
    // Parsed straight from the text, serde_yaml says where; that text has `1e3` as a
    // float still, so its error is used only where it is the same error.
    let same = |l: &serde_yaml::Error| l.to_string().contains(&e.to_string());
    if let Some(text) = text {
        // Whole floats at an integer key are taken; make them integers in the text
        // too, one place at a time, until the error is the one `doc` has.
        let mut text = text.to_string();
        for _ in 0..64 {
            let Err(located) = serde_yaml::from_str::<T>(&text) else { break };
            let Some(loc) = located.location() else { break };
            if same(&located) {
                bail!(yaml_error(file, Some(&text), &located));
            }
            if !located.to_string().contains("invalid type: floating point")
                || !integer_at(&mut text, loc.index())
            {
                break;
            }
        }
    }
    bail!("{file}: {}", explain(&e.to_string()))
}

/// Replace the whole-number float that starts at byte `at` of `text` (`1e3`) by its
/// integer (`1000`); false if there is none there.
fn integer_at(text: &mut String, at: usize) -> bool {
    let end =
        text[at..].find(|c: char| c.is_whitespace() || ",]}#".contains(c)).map_or(text.len(), |e| at + e);
    match text[at..end].parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            // Same length is not needed: only later positions move, and they are re-read.
            text.replace_range(at..end, &(f as i64).to_string());
            true
        }
        _ => false,
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `base/p` made absolute, with `.` and `..` folded away lexically (the file need not
/// exist yet), so run configs show plain paths.
pub(crate) fn absolute(base: &Path, p: &str) -> String {
    use std::path::Component;
    let joined = base.join(p);
    let abs = std::path::absolute(&joined).unwrap_or(joined);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

fn dir_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Load a solver file, apply `--set` overrides (solver, data and net keys) and load
/// its net. Paths in the file are relative to the file; paths in `--set`, to the
/// current directory.
pub fn load_solver(path: &Path, sets: &[Override]) -> Result<Resolved> {
    let text = read(path)?;
    let file = path.display();
    let (mut doc, inherited) = load_with_base(path, &text, &mut Vec::new(), true)?;
    check_typed::<SolverConfig>(&doc, &file.to_string(), (!inherited).then_some(text.as_str()))?;

    let cwd = std::env::current_dir()?;
    let (net_sets, solver_sets): (Vec<&Override>, Vec<&Override>) =
        sets.iter().partition(|o| is_net_key(&o.key));
    for o in solver_sets {
        set_solver_key(&mut doc, o, &cwd).map_err(|e| anyhow!("--set {}: {e}", o.raw))?;
        serde_yaml::from_value::<SolverConfig>(doc.clone())
            .map_err(|e| anyhow!("--set {}: {}", o.raw, explain(&e.to_string())))?;
    }
    let mut solver: SolverConfig = serde_yaml::from_value(doc)?;
    solver.validate().map_err(|e| anyhow!("{file}: {e}"))?;

    let net_sets: Vec<Override> = net_sets
        .into_iter()
        .map(|o| Override {
            key: if o.key[0] == "net" { o.key[1..].to_vec() } else { o.key.clone() },
            ..o.clone()
        })
        .collect();
    let (net, net_source) = match &solver.net {
        Value::String(p) => load_net(Path::new(p), &net_sets)?,
        Value::Mapping(_) => {
            let mut src = NetSource { path: path.to_path_buf(), text, sets: vec![] };
            let net = net_from_value(solver.net.clone(), &src, &net_sets)?;
            src.sets = layer_sets(&net, &net_sets);
            (net, src)
        }
        other => {
            bail!("{file}: `net` must be a path to a net file or a net mapping, got {other:?}")
        }
    };
    solver.net = Value::Null;
    Ok(Resolved { solver, net, net_source, solver_path: path.to_path_buf() })
}

/// Load a net file and apply net overrides (`layers.fc1.num_output=64`, `loss.type=mse`).
pub fn load_net(path: &Path, sets: &[Override]) -> Result<(NetConfig, NetSource)> {
    let text = read(path)?;
    let (doc, inherited) = load_with_base(path, &text, &mut Vec::new(), false)?;
    check_typed::<NetConfig>(&doc, &path.display().to_string(), (!inherited).then_some(text.as_str()))?;
    // An inherited net's layers come from several files: no single text gives their lines.
    let mut src = NetSource {
        path: path.to_path_buf(),
        text: if inherited { String::new() } else { text },
        sets: vec![],
    };
    let net = net_from_value(doc, &src, sets)?;
    src.sets = layer_sets(&net, sets);
    Ok((net, src))
}

/// Which layer each `layers.NAME.KEY` override set (by name or index).
fn layer_sets(net: &NetConfig, sets: &[Override]) -> Vec<(usize, String)> {
    let names = crate::config::net::layer_names(&net.layers);
    sets.iter()
        .filter_map(|o| match o.key.as_slice() {
            [l, which, _] if l == "layers" => names
                .iter()
                .position(|n| n == which)
                .or_else(|| which.parse().ok())
                .map(|i| (i, o.raw.clone())),
            _ => None,
        })
        .collect()
}

/// Parse a config file, resolve its paths against its folder and, if it says
/// `base: other.yaml`, merge it over that file (recursively). Returns whether any
/// base was involved.
fn load_with_base(path: &Path, text: &str, seen: &mut Vec<PathBuf>, solver: bool) -> Result<(Value, bool)> {
    let file = path.display();
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| anyhow!(yaml_error(&file.to_string(), Some(text), &e)))?;
    super::schema::integral_floats(&mut doc);
    if !doc.is_mapping() {
        bail!("{file}: expected a mapping of keys (see docs/config.md)");
    }
    if solver {
        resolve_paths(&mut doc, &dir_of(path));
    }
    let Some(base) = doc.as_mapping_mut().and_then(|m| m.remove("base")) else {
        return Ok((doc, false));
    };
    let Value::String(base) = base else { bail!("{file}: `base` must be the path of another config file") };
    let base_path = PathBuf::from(absolute(&dir_of(path), &base));
    let me = PathBuf::from(absolute(Path::new("."), &path.display().to_string()));
    if seen.contains(&me) {
        bail!("{file}: `base` files include each other in a loop");
    }
    seen.push(me);
    let base_text = read(&base_path).with_context(|| format!("{file}: base"))?;
    let (mut merged, _) = load_with_base(&base_path, &base_text, seen, solver)?;
    merge(&mut merged, doc).map_err(|e| anyhow!("{file}: {e}"))?;
    Ok((merged, true))
}

/// Deep-merge `over` into `base`: mappings key by key; a net's `layers` by layer
/// name (each item patches the base layer of that name); anything else replaces.
fn merge(base: &mut Value, over: Value) -> Result<(), String> {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let is_layers = k.as_str() == Some("layers");
                match b.get_mut(&k) {
                    Some(Value::Sequence(layers)) if is_layers => merge_layers(layers, v)?,
                    Some(existing) if v.is_mapping() && existing.is_mapping() => merge(existing, v)?,
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
            Ok(())
        }
        (b, o) => {
            *b = o;
            Ok(())
        }
    }
}

/// A variant's `layers:` items, in order, each on the base's layers by name: a patch
/// (`{name: drop1, dropout_ratio: 0.3}`), a new layer placed with `after: NAME` or
/// `before: NAME`, or `{name: X, remove: true}`.
fn merge_layers(layers: &mut Vec<Value>, patches: Value) -> Result<(), String> {
    let Value::Sequence(patches) = patches else { return Err("`layers` must be a list".into()) };
    for mut p in patches {
        let names = layer_names(layers);
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or("each item of `layers` in a file with `base` names the base layer it patches, removes, or adds")?
            .to_string();
        let map = mapping(&mut p);
        let (after, before) = (map.remove("after"), map.remove("before"));
        let remove = map.remove("remove");
        let find = |n: &str, what: &str| {
            names.iter().position(|x| x == n).ok_or_else(|| {
                format!("{what}: no layer `{n}` in the base net; its layers are: {}", names.join(", "))
            })
        };
        let place = match (&after, &before) {
            (Some(a), None) => Some((a.clone(), 1)),
            (None, Some(b)) => Some((b.clone(), 0)),
            (None, None) => None,
            _ => return Err(format!("`{name}`: give after or before, not both")),
        };
        match (place, remove) {
            (None, Some(Value::Bool(true))) => {
                let i = find(&name, &format!("`{name}` remove"))?;
                layers.remove(i);
            }
            (None, Some(other)) => return Err(format!("`{name}`: remove must be true, got {other:?}")),
            (Some((at, offset)), None) => {
                let target =
                    at.as_str().ok_or_else(|| format!("`{name}`: after/before takes a layer name"))?;
                if names.contains(&name) {
                    return Err(format!(
                        "`{name}` is already a layer of the base net: patch it without after/before"
                    ));
                }
                let i = find(target, &format!("`{name}`"))?;
                layers.insert(i + offset, p);
            }
            (None, None) => {
                let i = names.iter().position(|n| *n == name).ok_or_else(|| {
                    format!(
                        "no layer `{name}` in the base net to patch (to add it, give `after: NAME` or \
                         `before: NAME`; to drop one, `remove: true`); its layers are: {}",
                        names.join(", ")
                    )
                })?;
                merge(&mut layers[i], p)?;
            }
            (Some(_), Some(_)) => return Err(format!("`{name}`: remove takes no after/before")),
        }
    }
    Ok(())
}

fn net_from_value(mut doc: Value, src: &NetSource, sets: &[Override]) -> Result<NetConfig> {
    for o in sets {
        set_net_key(&mut doc, o).map_err(|e| anyhow!("--set {}: {e}", o.raw))?;
        serde_yaml::from_value::<NetConfig>(doc.clone())
            .map_err(|e| anyhow!("--set {}: {}", o.raw, explain(&e.to_string())))?;
    }
    serde_yaml::from_value(doc).map_err(|e| anyhow!("{}: {}", src.path.display(), explain(&e.to_string())))
}

/// The keys whose values are paths, made absolute against the file (or, in a `--set`,
/// the working directory) that gives them.
pub(super) const PATH_KEYS: &[&[&str]] =
    &[&["net"], &["data", "train"], &["data", "images"], &["data", "val"]];

fn resolve_paths(doc: &mut Value, base: &Path) {
    for keys in PATH_KEYS {
        if let Some(Value::String(s)) = get_mut(doc, keys) {
            if s != crate::data::SYNTHETIC {
                *s = absolute(base, s);
            }
        }
    }
}

fn get_mut<'a>(doc: &'a mut Value, keys: &[&str]) -> Option<&'a mut Value> {
    keys.iter().try_fold(doc, |v, k| v.get_mut(*k))
}
