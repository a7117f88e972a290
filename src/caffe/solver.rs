//! A Caffe solver prototxt into fkpnet's solver keys (Caffe's names and formulas are
//! fkpnet's: base_lr, lr_policy, momentum, delta, ...).

use super::proto::caffe::{solver_parameter, SolverParameter};
use crate::config::solver::{DataConfig, LrPolicy, Regularization};
use crate::config::{SolverConfig, SolverType};
use anyhow::{anyhow, bail, Result};
use serde_yaml::Value;
use std::path::Path;

/// Caffe's snapshot_prefix is a path (`snapshots/lenet`); fkpnet's snapshots live in
/// the run dir, so only its file name part stays, and the user is told. As in Caffe
/// (caffe.proto, UpgradeSnapshotPrefixProperty), an unset prefix is the solver file's
/// name without extension, and a prefix ending in `/` gets that name appended.
fn snapshot_prefix(prefix: &str, solver: &Path, notes: &mut Vec<String>) -> String {
    let stem = solver.file_stem().and_then(|n| n.to_str()).filter(|n| !n.is_empty()).unwrap_or("snapshot");
    let name = if prefix.is_empty() || prefix.ends_with('/') {
        stem
    } else {
        Path::new(prefix).file_name().and_then(|n| n.to_str()).unwrap_or(stem)
    };
    if !prefix.is_empty() && name != prefix {
        notes.push(format!(
            "{}: snapshot_prefix \"{prefix}\" becomes `{name}`: fkpnet writes snapshots into the run's directory",
            solver.display()
        ));
    }
    name.to_string()
}

pub fn convert_solver(
    path: &Path,
    net_file: &str,
    data: DataConfig,
    batch: i64,
    test_batch: Option<i64>,
    notes: &mut Vec<String>,
) -> Result<String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    let s: SolverParameter = protobuf::text_format::parse_from_str(&text)
        .map_err(|e| anyhow!("{file}:{e} (caffe SolverParameter)"))?;
    let solver_type = if s.type_.is_none() && s.solver_type.is_some() {
        use solver_parameter::SolverType as T;
        match s.solver_type() {
            T::SGD => SolverType::SGD,
            T::NESTEROV => SolverType::Nesterov,
            T::ADAGRAD => SolverType::AdaGrad,
            T::RMSPROP => SolverType::RMSProp,
            T::ADADELTA => SolverType::AdaDelta,
            T::ADAM => SolverType::Adam,
        }
    } else {
        serde_yaml::from_value(Value::String(s.type_().into())).map_err(|_| {
            anyhow!(
                "{file}: type \"{}\": expected SGD, Nesterov, AdaGrad, RMSProp, AdaDelta or Adam",
                s.type_()
            )
        })?
    };
    let lr_policy: LrPolicy =
        serde_yaml::from_value(Value::String(s.lr_policy().to_lowercase())).map_err(|_| {
            anyhow!(
                "{file}: lr_policy \"{}\": expected fixed, step, exp, inv, multistep, poly or sigmoid",
                s.lr_policy()
            )
        })?;
    let regularization_type = match s.regularization_type() {
        "L2" => Regularization::L2,
        "L1" => Regularization::L1,
        other => bail!("{file}: regularization_type \"{other}\": expected L1 or L2"),
    };
    let f = |v: f32| super::layers::num(v as f64).as_f64().unwrap_or(v as f64);
    let cfg = SolverConfig {
        net: Value::String(net_file.into()),
        data,
        solver_type,
        flavor: Default::default(),
        base_lr: f(s.base_lr()),
        lr_policy,
        gamma: s.gamma.map(f),
        power: s.power.map(f),
        stepsize: s.stepsize.map(|v| v as i64),
        stepvalue: s.stepvalue.iter().map(|v| *v as i64).collect(),
        max_iter: s.max_iter() as i64,
        warmup_iter: 0,
        patience: None,
        early_stop: 0,
        momentum: f(s.momentum()),
        momentum2: f(s.momentum2()),
        delta: f(s.delta()),
        rms_decay: f(s.rms_decay()),
        weight_decay: f(s.weight_decay()),
        ema_decay: 0.0,
        regularization_type,
        clip_gradients: f(s.clip_gradients()),
        iter_size: s.iter_size() as i64,
        batch_size: batch,
        test_interval: s.test_interval() as i64,
        // fkpnet's test_iter counts batches of batch_size: keep the number of faces.
        test_iter: s.test_iter.first().map_or(0, |t| {
            let faces = *t as i64 * test_batch.unwrap_or(batch);
            (faces + batch - 1) / batch
        }),
        test_initialization: s.test_initialization(),
        display: s.display() as i64,
        average_loss: s.average_loss() as i64,
        snapshot: s.snapshot() as i64,
        snapshot_prefix: snapshot_prefix(s.snapshot_prefix(), path, notes),
        random_seed: s.random_seed(),
        device: match s.solver_mode() {
            solver_parameter::SolverMode::CPU => "cpu".into(),
            solver_parameter::SolverMode::GPU => "auto".into(),
        },
        histograms: true,
        test: Default::default(),
        on_nan: Default::default(),
        precision: Default::default(),
        layout: Default::default(),
    };
    cfg.validate().map_err(|e| anyhow!("{file}: {e}"))?;
    Ok(format!(
        "# Imported from {} by fkpnet import-caffe. data.train: Kaggle's training.csv, or synthetic.\n{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
        serde_yaml::to_string(&cfg)?
    ))
}

#[cfg(test)]
mod tests {
    use super::snapshot_prefix;
    use std::path::Path;

    #[test]
    fn snapshot_prefix_follows_caffe_defaults() {
        let solver = Path::new("models/lenet_solver.prototxt");
        let mut notes = Vec::new();
        assert_eq!(snapshot_prefix("", solver, &mut notes), "lenet_solver");
        assert_eq!(snapshot_prefix("lenet", solver, &mut notes), "lenet");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(snapshot_prefix("snapshots/", solver, &mut notes), "lenet_solver");
        assert_eq!(snapshot_prefix("snapshots/adam", solver, &mut notes), "adam");
        assert_eq!(notes.len(), 2);
        assert!(notes[1].contains("\"snapshots/adam\" becomes `adam`"), "{}", notes[1]);
    }
}
