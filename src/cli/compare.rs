//! Commands that compare runs: diff and plot.

use super::{check_out, CurvesOut};
use anyhow::Result;
use fkpnet::report::diff::{self, Metric, Run};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Diff {
    /// Run dirs or Caffe training logs: the first is compared with each of the others
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    #[command(flatten)]
    curves: CurvesOut,
}

impl Diff {
    pub fn run(self) -> Result<()> {
        let c = &self.curves;
        check_out(c.out.as_deref(), c.force)?;
        let runs = self.runs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
        print!("{}", diff::compare(&runs, c.metric, c.out.as_deref())?);
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Plot {
    /// Run dirs or Caffe training logs, drawn on one plot
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The plot to write (.png, or .svg)
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// What to compare: val_rmse_px, val_loss, train_loss, train_rmse_px, or the field's
    /// val_nme, val_fr, val_auc (in %).
    #[arg(long, default_value = "val_rmse_px")]
    metric: Metric,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    force: bool,
}

impl Plot {
    pub fn run(self) -> Result<()> {
        check_out(Some(&self.out), self.force)?;
        let runs = self.runs.iter().map(|r| Run::load(r)).collect::<Result<Vec<_>>>()?;
        let (metric, note) = diff::effective_metric(&runs, self.metric);
        if let Some(n) = note {
            eprintln!("note: {n}");
        }
        fkpnet::report::plot::plot(&runs, metric, &self.out)?;
        println!("{}", self.out.display());
        Ok(())
    }
}
