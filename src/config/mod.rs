//! Config: the typed schema (solver, data, net), loading with file/line errors,
//! path resolution and `--set` overrides.

pub mod data;
pub mod diff;
mod load;
pub mod net;
mod overrides;
pub mod schema;
pub mod solver;
mod test_time;

pub(crate) use load::absolute;
pub use load::{load_net, load_solver, parse_sets, set_test, NetSource, Override, Resolved};
pub use net::{LossConfig, LossKind, NetConfig, ParamMult};
pub use solver::{DataConfig, Labels, SolverConfig, SolverType};

/// Every documented config key, as `section.key`, straight from the schema structs
/// and the layer registry (used by the docs test and `fkpnet keys`).
pub fn all_keys() -> Vec<String> {
    use schema::struct_fields;
    let mut keys = Vec::new();
    let mut add = |section: &str, fields: &[&str]| {
        keys.extend(fields.iter().map(|f| format!("{section}.{f}")));
    };
    add("solver", struct_fields::<SolverConfig>());
    add("data", struct_fields::<DataConfig>());
    add("data.synthetic", struct_fields::<solver::SyntheticConfig>());
    add("net", struct_fields::<NetConfig>());
    add("loss", struct_fields::<LossConfig>());
    add("loss.js_reg", struct_fields::<net::JsReg>());
    add("layer", struct_fields::<net::LayerCommon>());
    add("param", struct_fields::<ParamMult>());
    for k in crate::layers::KINDS {
        add(k.name, (k.fields)());
    }
    keys
}

/// A closed choice's config spelling (`euclidean`, `channels_last`, `SGD`): what its
/// serde name is, so every place that prints one agrees with what the config reads.
pub fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_yaml::to_value(v) {
        Ok(serde_yaml::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}
