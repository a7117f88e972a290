//! `fkpnet test`: RMSE in pixels per keypoint and overall, and the loss in both
//! conventions, on the run's val split or on any labelled Kaggle CSV.

use super::model::Ensemble;
use crate::data::{self, kaggle, Faces};
use crate::metrics::{face_nme, Nme};
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

pub struct Report {
    pub source: String,
    pub faces: usize,
    /// Per keypoint: (name, RMSE px, present coordinates).
    pub keypoints: Vec<(String, f64, usize)>,
    pub rmse_px: f64,
    pub euclidean: f64,
    pub mse: f64,
    /// NME, failure rate and AUC where the keypoint set has a normaliser.
    pub nme: Option<crate::metrics::Nme>,
    pub failure_threshold: f64,
}

pub fn run(model: &Ensemble, csv: Option<&Path>) -> Result<Report> {
    let spec = model.spec();
    let (faces, source): (Faces, String) = match csv {
        Some(p) if spec.format != data::DataFormat::Kaggle => {
            (image_faces(model, p)?, p.display().to_string())
        }
        Some(p) => {
            let t = kaggle::read(p)?;
            if !t.labelled {
                bail!(
                    "{}: no keypoint columns, so there is nothing to test against. `fkpnet test` needs a \
                     labelled CSV (training.csv format); for test.csv use `fkpnet predict` or `fkpnet submit`",
                    p.display()
                );
            }
            (t.faces, p.display().to_string())
        }
        None => {
            let r = model.val_run()?;
            let split = data::load(&r.solver.data, &model.models[0].spec)?;
            if split.val.is_empty() {
                bail!("the run has no val split (data.split = 1): give --data CSV");
            }
            (split.val, format!("val split of {}", split.source))
        }
    };
    let source = match model.models.len() {
        1 => source,
        n => format!("{source} (ensemble of {n} runs, predictions averaged)"),
    };
    let pred = model.predict_px(&faces);
    let mut per = vec![(0.0f64, 0usize); spec.keypoints.len()];
    for (i, (p, t)) in pred.iter().zip(&faces.keypoints).enumerate() {
        if !t.is_nan() {
            let k = (i % spec.targets()) / 2;
            per[k].0 += ((p - t) as f64).powi(2);
            per[k].1 += 1;
        }
    }
    let (sq_px, count): (f64, usize) = per.iter().fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let nme = spec.keypoints.normaliser.and_then(|norm| {
        let n = faces.len() as i64;
        let t = spec.targets() as i64;
        let (p, y) =
            (Tensor::from_slice(&pred).view([n, t]), Tensor::from_slice(&faces.keypoints).view([n, t]));
        let e = Vec::<f64>::try_from(face_nme(&p, &y, norm).to_kind(tch::Kind::Double)).ok()?;
        Nme::of(&e, spec.keypoints.failure)
    });
    // Normalised units (targets / half), as training computes them.
    let sq = sq_px / (spec.half() * spec.half());
    Ok(Report {
        source,
        faces: faces.len(),
        keypoints: spec
            .keypoints
            .names
            .iter()
            .zip(&per)
            .map(|(k, (s, c))| (k.clone(), if *c > 0 { (s / *c as f64).sqrt() } else { f64::NAN }, *c))
            .collect(),
        rmse_px: (sq_px / count.max(1) as f64).sqrt(),
        euclidean: sq / (2.0 * faces.len() as f64),
        mse: sq / count.max(1) as f64,
        nme,
        failure_threshold: spec.keypoints.failure,
    })
}

/// Every face of an annotation file (or folder) in the model's format, cut out as
/// the model was trained.
fn image_faces(model: &Ensemble, path: &Path) -> Result<Faces> {
    let spec = model.spec();
    let columns = model.models[0].run.as_ref().map(|r| r.solver.data.columns.clone()).unwrap_or_default();
    let keypoints = serde_yaml::from_value(spec.keypoints.to_value())?;
    let cfg = crate::config::DataConfig {
        format: spec.format,
        keypoints: Some(keypoints),
        crop: spec.crop,
        columns,
        split: 1.0,
        labels: crate::config::Labels::Masked,
        ..crate::config::DataConfig::of(std::path::absolute(path)?.display().to_string())
    };
    Ok(data::load(&cfg, spec)?.train)
}

impl Report {
    pub fn table(&self) -> String {
        let mut s = format!("{} faces: {}\n", self.faces, self.source);
        s += &format!("{:<26} {:>9} {:>7}\n", "keypoint", "RMSE px", "values");
        for (k, r, c) in &self.keypoints {
            s += &format!("{k:<26} {r:>9.3} {c:>7}\n");
        }
        s += &format!("{:<26} {:>9.3}\n", "overall", self.rmse_px);
        s += &format!("loss: euclidean (Caffe, sum/2N) {:.6}, mse (mean) {:.6}\n", self.euclidean, self.mse);
        if let Some(m) = self.nme {
            s += &format!(
                "NME {:.3}%, failure rate {:.2}% (NME > {}%), AUC {:.2}% ({} faces)\n",
                m.nme,
                m.failure_rate,
                self.failure_threshold * 100.0,
                m.auc,
                m.faces
            );
        }
        s
    }
}

/// The val RMSE of several runs' best weights averaged (`fkpnet test A --ensemble B
/// ...`), when they share a val split; a note saying why not otherwise.
pub fn ensemble_line(dirs: &[std::path::PathBuf]) -> String {
    use super::model::Weights;
    let score = Ensemble::load(&dirs[0], &dirs[1..], &Weights::Best).and_then(|m| run(&m, None));
    match score {
        Ok(r) => format!(
            "ensemble of all {} runs: val RMSE {:.3} px (fkpnet test {} --ensemble ... averages their predictions)",
            dirs.len(),
            r.rmse_px,
            dirs[0].display()
        ),
        Err(e) => format!("no ensemble score: {e:#}"),
    }
}
