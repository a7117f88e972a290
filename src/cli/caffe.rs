//! import-caffe: prototxt in, fkpnet YAML out.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ImportCaffe {
    /// Caffe's net prototxt (train_val or deploy)
    net: PathBuf,
    /// Caffe's solver prototxt (gives the solver file to train with)
    solver: Option<PathBuf>,
    /// Directory for the YAML files (created; existing files are never overwritten).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Input shape CxHxW for data layers that carry none (HDF5Data, Data).
    #[arg(long, default_value = "1x96x96")]
    input: String,
    /// data.train of the converted solver: Kaggle's training.csv or `synthetic`
    /// (default: the net's HDF5Data sources, as Caffe read them; else `synthetic`).
    #[arg(long)]
    data: Option<String>,
    /// Batch size when no data layer gives one.
    #[arg(long, default_value_t = 64)]
    batch: i64,
}

impl ImportCaffe {
    pub fn run(self) -> Result<()> {
        let dims: Vec<i64> = self.input.split('x').filter_map(|d| d.parse().ok()).collect();
        let input: [i64; 3] = dims
            .try_into()
            .ok()
            .filter(|d: &[i64; 3]| d.iter().all(|v| *v > 0))
            .ok_or_else(|| anyhow::anyhow!("--input {}: expected CxHxW, e.g. 1x96x96", self.input))?;
        let opts = fkpnet::caffe::Options { input, data: self.data, batch: self.batch };
        let imported = fkpnet::caffe::import(&self.net, self.solver.as_deref(), &opts)?;
        for n in &imported.notes {
            eprintln!("note: {n}");
        }
        for f in fkpnet::caffe::write(&imported, self.solver.as_deref(), &self.out)? {
            println!("{}", f.display());
        }
        Ok(())
    }
}
