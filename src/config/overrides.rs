//! `--set KEY=VALUE` overrides: parsed with YAML's typing, checked against the schema
//! (a key that does not exist is an error naming what would), and applied to a solver,
//! a net (`layers.NAME.KEY`, `loss.KEY`) or the test-time views of a trained run.

use super::load::{absolute, PATH_KEYS};
use super::net::{layer_names, LayerCommon, LossConfig, NetConfig};
use super::schema::{struct_fields, unknown_key_message};
use super::solver::{DataConfig, SolverConfig, SyntheticConfig, TestConfig};
use crate::data::augment::Augment;
use anyhow::{anyhow, bail, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// One `--set KEY=VALUE`.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: Vec<String>,
    pub value: Value,
    pub raw: String,
}

pub fn parse_sets(sets: &[String]) -> Result<Vec<Override>> {
    sets.iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--set {s}: expected KEY=VALUE, e.g. --set base_lr=3e-4"))?;
            let key: Vec<String> = k.trim().split('.').map(str::to_string).collect();
            if key.iter().any(|p| p.is_empty()) {
                bail!("--set {s}: empty key segment");
            }
            // YAML typing: 3e-4 is a number, true a bool, [1,96,96] a list, else a string.
            let mut value = serde_yaml::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
            super::schema::integral_floats(&mut value);
            Ok(Override { key, value, raw: s.clone() })
        })
        .collect()
}

pub(super) fn is_net_key(key: &[String]) -> bool {
    (key[0] == "net" && key.len() > 1) || struct_fields::<NetConfig>().contains(&key[0].as_str())
}

pub(super) fn check(key: &str, where_: &str, fields: &[&str]) -> Result<(), String> {
    if fields.contains(&key) {
        Ok(())
    } else {
        Err(unknown_key_message(key, where_, fields))
    }
}

pub(super) fn mapping(v: &mut Value) -> &mut Mapping {
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut().expect("just made a mapping")
}

pub(super) fn set_solver_key(doc: &mut Value, o: &Override, cwd: &Path) -> Result<(), String> {
    let k: Vec<&str> = o.key.iter().map(String::as_str).collect();
    let mut solver_keys: Vec<&str> = struct_fields::<SolverConfig>().to_vec();
    solver_keys.extend(struct_fields::<NetConfig>().iter().map(|f| *f));
    check(k[0], "the solver (or net)", &solver_keys)?;
    let mut value = o.value.clone();
    if PATH_KEYS.contains(&k.as_slice()) {
        if let Value::String(s) = &value {
            if s != crate::data::SYNTHETIC {
                value = Value::String(absolute(cwd, s));
            }
        }
    }
    let top = mapping(doc);
    match k.as_slice() {
        [key] => {
            top.insert((*key).into(), value);
        }
        ["data", key] => {
            check(key, "data", struct_fields::<DataConfig>())?;
            mapping(top.entry("data".into()).or_insert(Value::Null)).insert((*key).into(), value);
        }
        ["test", key] => {
            check(key, "test", struct_fields::<TestConfig>())?;
            mapping(top.entry("test".into()).or_insert(Value::Null)).insert((*key).into(), value);
        }
        ["data", sub @ ("synthetic" | "augment" | "crop" | "columns"), key] => {
            let fields = match *sub {
                "synthetic" => struct_fields::<SyntheticConfig>(),
                "crop" => struct_fields::<crate::config::solver::CropConfig>(),
                "columns" => struct_fields::<crate::config::solver::Columns>(),
                _ => struct_fields::<Augment>(),
            };
            check(key, &format!("data.{sub}"), fields)?;
            let data = mapping(top.entry("data".into()).or_insert(Value::Null));
            mapping(data.entry((*sub).into()).or_insert(Value::Null)).insert((*key).into(), value);
        }
        _ => return Err(format!("`{}` has no sub-keys", k[..k.len() - 1].join("."))),
    }
    Ok(())
}

/// A trained run's test-time settings with `--set test.KEY=VALUE` applied (`fkpnet
/// test`, `predict`, `submit`): only `test.*` can change after training.
pub fn set_test(test: &TestConfig, sets: &[Override]) -> Result<TestConfig> {
    let mut doc = serde_yaml::to_value(test)?;
    for o in sets {
        let k: Vec<&str> = o.key.iter().map(String::as_str).collect();
        let key = match k.as_slice() {
            ["test", key] => key,
            _ => bail!(
                "--set {}: only test-time keys can change after training: test.{}",
                o.raw,
                struct_fields::<TestConfig>().join(", test.")
            ),
        };
        check(key, "test", struct_fields::<TestConfig>()).map_err(|e| anyhow!("--set {}: {e}", o.raw))?;
        mapping(&mut doc).insert((*key).into(), o.value.clone());
    }
    let test: TestConfig = serde_yaml::from_value(doc).map_err(|e| anyhow!("--set test.*: {e}"))?;
    test.validate().map_err(|e| anyhow!("--set {e}"))?;
    Ok(test)
}

pub(super) fn set_net_key(doc: &mut Value, o: &Override) -> Result<(), String> {
    let k: Vec<&str> = o.key.iter().map(String::as_str).collect();
    if k.is_empty() {
        return Err("expected a net key after `net.`".into());
    }
    check(k[0], "the net", struct_fields::<NetConfig>())?;
    let value = o.value.clone();
    let top = mapping(doc);
    match k.as_slice() {
        [key] => {
            top.insert((*key).into(), value);
        }
        ["loss", key] => {
            check(key, "loss", struct_fields::<LossConfig>())?;
            mapping(top.entry("loss".into()).or_insert(Value::Null)).insert((*key).into(), value);
        }
        ["loss", "js_reg", key] => {
            check(key, "loss.js_reg", struct_fields::<crate::config::net::JsReg>())?;
            let loss = mapping(top.entry("loss".into()).or_insert(Value::Null));
            mapping(loss.entry("js_reg".into()).or_insert(Value::Null)).insert((*key).into(), value);
        }
        ["layers", which, key] => {
            let layers =
                top.get_mut("layers").and_then(Value::as_sequence_mut).ok_or("the net has no layers list")?;
            let names = layer_names(layers);
            let i = names
                .iter()
                .position(|n| n == which)
                .or_else(|| which.parse::<usize>().ok().filter(|i| *i < layers.len()))
                .ok_or_else(|| format!("no layer `{which}`; layers are: {}", names.join(", ")))?;
            let kind_name = layers[i].get("type").and_then(Value::as_str).unwrap_or("").to_string();
            let kind = crate::layers::kind(&kind_name)
                .ok_or_else(|| format!("layer `{which}` has unknown type `{kind_name}`"))?;
            let mut fields: Vec<&str> = struct_fields::<LayerCommon>().to_vec();
            fields.extend((kind.fields)());
            check(key, &format!("layer `{which}` ({kind_name})"), &fields)?;
            mapping(&mut layers[i]).insert((*key).into(), value);
            crate::graph::parse_layer(&layers[i]).map_err(|e| format!("layer `{which}`: {e}"))?;
        }
        _ => {
            return Err(format!(
                "cannot set `{}` (try layers.NAME.KEY, loss.KEY or loss.js_reg.KEY)",
                k.join(".")
            ))
        }
    }
    Ok(())
}
