//! The solver file: which net, which data, and how to train (Caffe's SolverParameter
//! names and defaults where Caffe has them).

use serde::{Deserialize, Serialize};

// The data section lives in config/data.rs; its types are named from here as before.
pub use super::data::{Columns, CropConfig, CropFrom, DataConfig, DataFormat, Labels, SyntheticConfig};
// The test section (test-time views) lives in config/test_time.rs.
pub use super::test_time::TestConfig;

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SolverConfig {
    /// Path of the net file (relative to this file), or the net itself inline.
    pub net: serde_yaml::Value,
    pub data: DataConfig,
    /// Update rule: SGD (Caffe's default), Nesterov, AdaGrad, RMSProp, AdaDelta, Adam,
    /// AdamW (Adam with decoupled weight decay, Loshchilov & Hutter 2019; not in Caffe).
    #[serde(rename = "type", default)]
    pub solver_type: SolverType,
    /// Caffe, or PyTorch's variants of the update rules (see docs/config.md).
    #[serde(default)]
    pub flavor: Flavor,
    pub base_lr: f64,
    /// fixed, step, exp, inv, multistep, poly, sigmoid: computed every iteration.
    #[serde(default)]
    pub lr_policy: LrPolicy,
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub power: Option<f64>,
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub stepsize: Option<i64>,
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_empty")]
    pub stepvalue: Vec<i64>,
    /// Number of updates to run.
    pub max_iter: i64,
    /// Ramp the rate linearly from base/warmup_iter up over the first warmup_iter iterations.
    #[serde(default)]
    pub warmup_iter: i64,
    /// Tests without val improvement before lr_policy plateau multiplies by gamma.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_none")]
    pub patience: Option<i64>,
    /// Stop when the val loss has not improved for this many tests (0 = off); the
    /// best weights are in best.safetensors.
    #[serde(default)]
    pub early_stop: i64,
    /// SGD/Nesterov momentum, Adam's beta1, AdaDelta's rho.
    #[serde(default)]
    pub momentum: f64,
    /// Adam's beta2.
    #[serde(default = "d_momentum2")]
    pub momentum2: f64,
    /// Epsilon of Adam, AdaGrad, RMSProp, AdaDelta.
    #[serde(default = "d_delta")]
    pub delta: f64,
    /// RMSProp's decay of the mean square.
    #[serde(default = "d_rms_decay")]
    pub rms_decay: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Keep an exponential moving average of the weights with this decay (0 = off; e.g.
    /// 0.999): val tests, best.safetensors and the final weights use the average.
    #[serde(default, skip_serializing_if = "crate::config::schema::skip_default")]
    pub ema_decay: f64,
    #[serde(default)]
    pub regularization_type: Regularization,
    /// Scale gradients down to this global L2 norm; < 0 = off.
    #[serde(default = "d_minus_one_f")]
    pub clip_gradients: f64,
    /// Accumulate gradients over this many batches per update.
    #[serde(default = "d_one")]
    pub iter_size: i64,
    /// Images per forward pass.
    pub batch_size: i64,
    /// Evaluate on the val split every N iterations (0 = only at the end).
    #[serde(default)]
    pub test_interval: i64,
    /// Val batches per evaluation; 0 = the whole val split.
    #[serde(default)]
    pub test_iter: i64,
    /// Also evaluate before the first update (iteration 0).
    #[serde(default = "d_true")]
    pub test_initialization: bool,
    /// Report the train loss every N iterations (0 = never).
    #[serde(default)]
    pub display: i64,
    /// The displayed train loss is the mean of the last N iterations' losses.
    #[serde(default = "d_one")]
    pub average_loss: i64,
    /// Write a snapshot every N iterations (0 = only the final weights).
    #[serde(default)]
    pub snapshot: i64,
    /// File name prefix of snapshots inside the run dir.
    #[serde(default = "d_prefix")]
    pub snapshot_prefix: String,
    /// Seed of initialisation, shuffling and dropout; -1 = from the clock (the seed
    /// used is written to the run's config.yaml).
    #[serde(default = "d_minus_one")]
    pub random_seed: i64,
    /// cpu, cuda, cuda:N, or auto (cuda if available).
    #[serde(default = "d_device")]
    pub device: String,
    /// fp32, or bf16: conv and dense layers compute in bfloat16 from float32 master
    /// weights; loss and solver stay float32.
    #[serde(default)]
    pub precision: Precision,
    /// Memory layout of conv activations and weights: auto (the fastest measured for
    /// the device), nchw, or channels_last. Results and saved weights are the same.
    #[serde(default)]
    pub layout: Layout,
    /// What a non-finite loss does: stop (with the iteration and the layer), or skip
    /// the batch and go on.
    #[serde(default)]
    pub on_nan: OnNan,
    /// Evaluation options (`test: {flip: true}`).
    #[serde(default)]
    pub test: TestConfig,
    /// Histograms of weights, biases and activations in the TensorBoard events file at
    /// every test.
    #[serde(default = "d_true")]
    pub histograms: bool,
}

/// Caffe's spellings; the lowercase ones (Keras' and PyTorch's habit: `adam`, `sgd`)
/// are taken too.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub enum SolverType {
    #[default]
    #[serde(alias = "sgd")]
    SGD,
    #[serde(alias = "nesterov")]
    Nesterov,
    #[serde(alias = "adagrad")]
    AdaGrad,
    #[serde(alias = "rmsprop")]
    RMSProp,
    #[serde(alias = "adadelta")]
    AdaDelta,
    #[serde(alias = "adam")]
    Adam,
    /// Adam whose weight decay shrinks the weights directly (w -= lr * weight_decay * w)
    /// instead of joining the gradient, where Adam's scaling would weaken it for
    /// weights with large gradients: PyTorch's torch.optim.AdamW.
    #[serde(alias = "adamw")]
    AdamW,
}

impl SolverType {
    /// History buffers the rule keeps per learned parameter.
    pub fn history_buffers(self) -> usize {
        match self {
            SolverType::Adam | SolverType::AdamW | SolverType::AdaDelta => 2,
            _ => 1,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnNan {
    #[default]
    Stop,
    Skip,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Auto,
    Nchw,
    #[value(name = "channels_last")]
    ChannelsLast,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    #[default]
    Caffe,
    Pytorch,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrPolicy {
    #[default]
    Fixed,
    Step,
    Exp,
    Inv,
    Multistep,
    Poly,
    Sigmoid,
    /// base_lr * (1 + cos(pi * iter / max_iter)) / 2.
    Cosine,
    /// base_lr * gamma ^ k, k = times the val loss went `patience` tests without improving.
    Plateau,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub enum Regularization {
    #[default]
    L2,
    L1,
}

fn d_momentum2() -> f64 {
    0.999
}
fn d_delta() -> f64 {
    1e-8
}
fn d_rms_decay() -> f64 {
    0.99
}
fn d_minus_one_f() -> f64 {
    -1.0
}
fn d_minus_one() -> i64 {
    -1
}
fn d_one() -> i64 {
    1
}
fn d_true() -> bool {
    true
}
fn d_prefix() -> String {
    "snapshot".into()
}
fn d_device() -> String {
    "cpu".into()
}

fn at_least_one(k: &str, v: i64) -> Result<(), String> {
    if v >= 1 {
        Ok(())
    } else {
        Err(format!("{k} must be >= 1, got {v}"))
    }
}

fn not_negative(k: &str, v: i64) -> Result<(), String> {
    if v >= 0 {
        Ok(())
    } else {
        Err(format!("{k} must be >= 0, got {v}"))
    }
}

impl SolverConfig {
    /// Range checks serde cannot express; messages say what would be valid. In this
    /// order: the counts, the rates, the solver's combinations, data and test, the
    /// lr policy's keys, the stopping rules.
    pub fn validate(&self) -> Result<(), String> {
        self.check_counts()?;
        self.check_rates()?;
        if self.solver_type == SolverType::AdamW && self.regularization_type == Regularization::L1 {
            return Err("type AdamW decays the weights themselves (L2); regularization_type L1 needs \
                        another type, e.g. Adam"
                .into());
        }
        self.data.augment.validate()?;
        self.test.validate()?;
        if !(self.data.split > 0.0 && self.data.split <= 1.0) {
            return Err(format!("data.split must be in (0, 1], got {}", self.data.split));
        }
        self.check_lr_policy()?;
        self.check_stopping()
    }

    fn check_counts(&self) -> Result<(), String> {
        at_least_one("batch_size", self.batch_size)?;
        not_negative("max_iter", self.max_iter)?;
        at_least_one("iter_size", self.iter_size)?;
        at_least_one("average_loss", self.average_loss)?;
        for (k, v) in [
            ("test_interval", self.test_interval),
            ("test_iter", self.test_iter),
            ("display", self.display),
            ("snapshot", self.snapshot),
        ] {
            not_negative(k, v)?;
        }
        Ok(())
    }

    fn check_rates(&self) -> Result<(), String> {
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            return Err(format!("base_lr must be a finite number >= 0, got {}", self.base_lr));
        }
        if !(0.0..1.0).contains(&self.momentum2) {
            return Err(format!("momentum2 must be in [0, 1), got {}", self.momentum2));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1], got {}", self.momentum));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!(
                "ema_decay must be in [0, 1) (0 = off; 0.99-0.9999 are usual), got {}",
                self.ema_decay
            ));
        }
        Ok(())
    }

    /// The keys each lr policy's formula reads (docs/caffe.md).
    fn check_lr_policy(&self) -> Result<(), String> {
        let need = |k: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(format!("lr_policy {} needs `{k}`", super::name_of(&self.lr_policy)))
            }
        };
        let gamma = || need("gamma", self.gamma.is_some());
        match self.lr_policy {
            LrPolicy::Fixed | LrPolicy::Cosine => Ok(()),
            LrPolicy::Step => gamma().and_then(|()| need("stepsize", self.stepsize.is_some_and(|s| s > 0))),
            LrPolicy::Exp => gamma(),
            LrPolicy::Inv => gamma().and_then(|()| need("power", self.power.is_some())),
            LrPolicy::Multistep => gamma().and_then(|()| need("stepvalue", !self.stepvalue.is_empty())),
            LrPolicy::Poly => need("power", self.power.is_some()),
            LrPolicy::Sigmoid => gamma().and_then(|()| need("stepsize", self.stepsize.is_some())),
            LrPolicy::Plateau => gamma()
                .and_then(|()| need("patience", self.patience.is_some_and(|p| p > 0)))
                .and_then(|()| need("test_interval", self.test_interval > 0)),
        }
    }

    fn check_stopping(&self) -> Result<(), String> {
        not_negative("warmup_iter", self.warmup_iter)?;
        not_negative("early_stop", self.early_stop)?;
        if self.early_stop > 0 && self.test_interval == 0 {
            return Err("early_stop counts tests: set test_interval too".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod validate_tests {
    use super::SolverConfig;

    fn check(extra: &str) -> Result<(), String> {
        let mut v: serde_yaml::Value = serde_yaml::from_str(
            "{net: n.yaml, data: {train: synthetic}, base_lr: 0.01, max_iter: 10, batch_size: 4}",
        )
        .unwrap();
        let over: serde_yaml::Mapping = serde_yaml::from_str(extra).unwrap();
        for (k, x) in over {
            v.as_mapping_mut().unwrap().insert(k, x);
        }
        serde_yaml::from_value::<SolverConfig>(v).unwrap().validate()
    }

    /// Each lr policy asks for the keys its formula reads, one at a time.
    #[test]
    fn each_lr_policy_names_the_key_it_lacks() {
        let cases = [
            ("lr_policy: step", "gamma"),
            ("lr_policy: step\ngamma: 0.1", "stepsize"),
            ("lr_policy: exp", "gamma"),
            ("lr_policy: inv\ngamma: 0.1", "power"),
            ("lr_policy: multistep\ngamma: 0.1", "stepvalue"),
            ("lr_policy: poly", "power"),
            ("lr_policy: sigmoid\ngamma: 0.1", "stepsize"),
            ("lr_policy: plateau\ngamma: 0.1", "patience"),
            ("lr_policy: plateau\ngamma: 0.1\npatience: 2\ntest_interval: 0", "test_interval"),
        ];
        for (yaml, key) in cases {
            let e = check(yaml).unwrap_err();
            assert!(e.ends_with(&format!("needs `{key}`")), "{yaml}: {e}");
        }
        for ok in ["lr_policy: fixed", "lr_policy: cosine", "lr_policy: step\ngamma: 0.1\nstepsize: 5"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn counts_rates_and_stopping_are_checked_in_order() {
        assert_eq!(check("batch_size: 0").unwrap_err(), "batch_size must be >= 1, got 0");
        assert_eq!(check("display: -1").unwrap_err(), "display must be >= 0, got -1");
        assert_eq!(check("momentum2: 1.0").unwrap_err(), "momentum2 must be in [0, 1), got 1");
        assert!(check("type: AdamW\nregularization_type: L1").unwrap_err().contains("AdamW"));
        assert_eq!(
            check("early_stop: 3\ntest_interval: 0").unwrap_err(),
            "early_stop counts tests: set test_interval too"
        );
        // The first problem is the one named.
        assert_eq!(check("batch_size: 0\nbase_lr: -1").unwrap_err(), "batch_size must be >= 1, got 0");
    }
}
