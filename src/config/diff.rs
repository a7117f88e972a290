//! What changed between two resolved configs, in user terms: solver keys as they
//! are, net keys without `net.`, layers by name. `fkpnet diff` prints it; a resume
//! from a snapshot checks it against the snapshot's run.

use serde_yaml::Value;
use std::collections::BTreeMap;

fn scalar(v: &Value) -> String {
    match v {
        Value::Mapping(_) | Value::Sequence(_) => {
            serde_yaml::to_string(v).unwrap_or_default().trim().replace('\n', " ").replace("- ", "")
        }
        _ => serde_yaml::to_string(v).unwrap_or_default().trim().to_string(),
    }
}

/// Flatten a resolved config into `key: value` in user terms: solver keys as they
/// are, net keys without `net.`, layers by name (`layers.fc1.dropout_ratio`).
fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let k = k.as_str().unwrap_or_default();
                let key = match (prefix, k) {
                    ("", "net") => {
                        flatten(val, "", out);
                        continue;
                    }
                    ("", _) => k.to_string(),
                    _ => format!("{prefix}.{k}"),
                };
                if key == "layers" {
                    for layer in val.as_sequence().into_iter().flatten() {
                        let name = layer["name"].as_str().unwrap_or("?");
                        flatten(layer, &format!("layers.{name}"), out);
                    }
                } else {
                    flatten(val, &key, out);
                }
            }
        }
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

/// The config differences from `a` to `b`, one line each; empty when equal.
pub fn config_diff(a: &Value, b: &Value) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(a, "", &mut fa);
    flatten(b, "", &mut fb);
    let layer_of = |k: &str| k.strip_prefix("layers.").and_then(|r| r.split('.').next()).map(str::to_string);
    // `layers.NAME.type` (not a filler's `layers.NAME.weight_filler.type`).
    let is_layer_type =
        |k: &str| k.starts_with("layers.") && k.split('.').count() == 3 && k.ends_with(".type");
    let mut out = Vec::new();
    let mut skip_layers = std::collections::HashSet::new();
    for (k, v) in &fb {
        if is_layer_type(k) && !fa.contains_key(k) {
            if let Some(l) = layer_of(k) {
                out.push(format!("layer {l} ({v}) added"));
                skip_layers.insert(l);
            }
        }
    }
    for (k, v) in &fa {
        if is_layer_type(k) && !fb.contains_key(k) {
            if let Some(l) = layer_of(k) {
                out.push(format!("layer {l} ({v}) removed"));
                skip_layers.insert(l);
            }
        }
    }
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for k in keys {
        if layer_of(k).is_some_and(|l| skip_layers.contains(&l)) {
            continue;
        }
        let (x, y) = (fa.get(k), fb.get(k));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            out.push(format!("{k}: {} -> {}", show(x), show(y)));
        }
    }
    out
}
