//! `fkpnet submit`: Kaggle's submission format for test.csv and IdLookupTable.csv.

use super::model::Ensemble;
use crate::data::{kaggle, target_columns, TARGETS};
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Kaggle's submission: `RowId,Location` for every IdLookupTable row, clipped to [0, 96].
pub fn submit(model: &Ensemble, test_csv: &Path, lookup: &Path) -> Result<String> {
    if model.spec().format != crate::data::DataFormat::Kaggle {
        anyhow::bail!("submit writes Kaggle's submission for its 15 keypoints; this model was trained on an image dataset: use fkpnet predict");
    }
    let t = kaggle::read(test_csv)?;
    let kp = model.predict_px(&t.faces);
    let row_of: HashMap<&str, usize> = t.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let cols = target_columns();
    let col_of: HashMap<&str, usize> = cols.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let file = lookup.display();
    let mut rdr = csv::Reader::from_path(lookup).with_context(|| format!("cannot open {file}"))?;
    let header = rdr.headers().with_context(|| format!("{file}: cannot read the header"))?.clone();
    let idx = |n: &str| {
        header.iter().position(|h| h == n).ok_or_else(|| {
            anyhow!(
                "{file}: no `{n}` column; Kaggle's IdLookupTable.csv has RowId,ImageId,FeatureName,Location"
            )
        })
    };
    let (ri, ii, fi) = (idx("RowId")?, idx("ImageId")?, idx("FeatureName")?);
    let mut out = String::from("RowId,Location\n");
    for rec in rdr.records() {
        let rec = rec.map_err(|e| anyhow!("{file}: {e}"))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let image = rec.get(ii).unwrap_or("");
        let feature = rec.get(fi).unwrap_or("");
        let r = *row_of.get(image).ok_or_else(|| {
            anyhow!("{file}:{line}: ImageId {image} is not in {} ({} faces)", test_csv.display(), t.ids.len())
        })?;
        let c = *col_of.get(feature).ok_or_else(|| {
            anyhow!("{file}:{line}: unknown FeatureName `{feature}` (expected e.g. left_eye_center_x)")
        })?;
        out += &format!("{},{:.4}\n", rec.get(ri).unwrap_or(""), kp[r * TARGETS + c].clamp(0.0, 96.0));
    }
    Ok(out)
}
