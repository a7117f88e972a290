//! Commands on trained models: test, predict, submit, extract, export.

use super::check_out;
use anyhow::Result;
use fkpnet::report::model::{Ensemble, Model, Weights};
use fkpnet::report::{
    self,
    predict::{Boxes, Finder},
};
use fkpnet::{config, run};
use std::path::{Path, PathBuf};

/// Which trained model `test`, `predict` and `submit` use, and how.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Also load these runs (or exports) and average all the predictions: an ensemble.
    #[arg(long, value_name = "RUN")]
    ensemble: Vec<PathBuf>,
    /// best, final, or a .safetensors file.
    #[arg(long, default_value = "best")]
    weights: Weights,
    /// Change test-time augmentation, e.g. --set test.flip=true --set test.shift=2
    #[arg(long = "set", value_name = "test.KEY=VALUE")]
    sets: Vec<String>,
}

impl ModelArgs {
    fn load(&self, run: &Path) -> Result<Ensemble> {
        let mut model = Ensemble::load(run, &self.ensemble, &self.weights)?;
        model.set_test(&config::parse_sets(&self.sets)?)?;
        Ok(model)
    }
}

#[derive(clap::Args)]
pub struct Test {
    /// A run dir (or an export).
    run: PathBuf,
    /// A labelled file of the model's format (default: the run's val split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

impl Test {
    pub fn run(self) -> Result<()> {
        let model = self.model.load(&self.run)?;
        print!("{}", report::test::run(&model, self.data.as_deref())?.table());
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Predict {
    /// A run dir or an export.
    run: PathBuf,
    /// Image files (any size or colour), folders of images, or Kaggle CSVs.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Also write each image with its keypoints drawn into this directory.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// csv (the dataset's layout: image,x0,y0,... or Kaggle's columns) or json.
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    format: String,
    /// Write the predictions to this file instead of standard output.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// The face's box in every image, x,y,w,h in pixels (cut out as the model's crop).
    #[arg(long = "box", value_name = "X,Y,W,H", conflicts_with = "boxes")]
    face_box: Option<String>,
    /// A CSV of face boxes, image,x,y,w,h per face (several rows: several faces);
    /// images it does not name go to the face detector.
    #[arg(long, value_name = "CSV")]
    boxes: Option<PathBuf>,
    /// Each image is one face, already cut out as the model's training faces are
    /// (by default faces are found by a face detector).
    #[arg(long, conflicts_with_all = ["face_box", "boxes"])]
    whole: bool,
    /// The face detector's least score for a face (SeetaFace's scores: about 2 to 50;
    /// higher finds fewer faces and fewer false ones).
    #[arg(long, value_name = "SCORE", default_value_t = report::predict::MIN_SCORE)]
    min_score: f64,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl Predict {
    pub fn run(self) -> Result<()> {
        check_out(self.out.as_deref(), self.force)?;
        let boxes = Boxes {
            all: self.face_box.as_deref().map(Boxes::parse_one).transpose()?,
            per_image: self.boxes.as_deref().map(Boxes::read).transpose()?.unwrap_or_default(),
        };
        if !(self.min_score > 0.0) {
            anyhow::bail!("--min-score {}: the detector's scores are positive", self.min_score);
        }
        let finder = Finder { boxes, whole: self.whole, min_score: self.min_score };
        let model = self.model.load(&self.run)?;
        let preds = report::predict::predict(&model, &self.inputs, &finder)?;
        let text = match self.format.as_str() {
            "json" => report::predict::to_json(&preds, &model.spec().keypoints),
            _ => report::predict::to_csv(&preds, model.spec()),
        };
        match &self.out {
            Some(o) => {
                run::write_text(o, &text)?;
                eprintln!("wrote {} face(s) to {}", preds.len(), o.display());
            }
            None => print!("{text}"),
        }
        if let Some(dir) = &self.draw {
            let files = report::predict::draw_all(&preds, &model.spec().keypoints, dir, self.force)?;
            eprintln!("drew {} image(s) into {}", files.len(), dir.display());
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Submit {
    /// A run dir (or an export)
    run: PathBuf,
    /// Kaggle's test.csv (ImageId, Image)
    test_csv: PathBuf,
    /// Kaggle's IdLookupTable.csv (RowId, ImageId, FeatureName)
    lookup_csv: PathBuf,
    /// The submission to write (RowId, Location)
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl Submit {
    pub fn run(self) -> Result<()> {
        check_out(Some(&self.out), self.force)?;
        let model = self.model.load(&self.run)?;
        let text = report::submit::submit(&model, &self.test_csv, &self.lookup_csv)?;
        run::write_text(&self.out, &text)?;
        eprintln!("wrote {} rows to {}", text.lines().count() - 1, self.out.display());
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Extract {
    /// A Kaggle CSV, `synthetic` for the built-in generator's faces, or a solver file
    /// (its data's faces, cut out as the net sees them).
    csv: PathBuf,
    /// The directory for the PNG files (created)
    dir: PathBuf,
    /// Draw the labelled keypoints on each face
    #[arg(long)]
    draw: bool,
    /// Write at most this many faces
    #[arg(long)]
    limit: Option<usize>,
    /// Augment the faces as this solver's `data.augment` does (to see what the net sees).
    #[arg(long, value_name = "SOLVER")]
    augment: Option<PathBuf>,
    /// Overwrite output files that exist (by default an existing file is refused).
    #[arg(long)]
    force: bool,
}

impl Extract {
    pub fn run(self) -> Result<()> {
        let aug = match &self.augment {
            Some(s) => Some(config::load_solver(s, &[])?.solver.data.augment),
            None => None,
        };
        let n =
            report::extract::extract(&self.csv, &self.dir, self.draw, self.limit, aug.as_ref(), self.force)?;
        eprintln!("wrote {n} image(s) into {}", self.dir.display());
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Export {
    /// A run dir, an export, or a solver/net file with --weights FILE
    run: PathBuf,
    /// The new directory to write (must not exist, or be empty)
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// best, final, or a weights file (.safetensors or Caffe's .caffemodel)
    #[arg(long, default_value = "best")]
    weights: Weights,
    /// fkpnet (safetensors + PyTorch code), caffe (deploy.prototxt + model.caffemodel) or onnx
    #[arg(long, value_enum, default_value = "fkpnet")]
    format: report::export::Format,
}

impl Export {
    pub fn run(self) -> Result<()> {
        let model = Model::load(&self.run, &self.weights)?;
        report::export::export(&model, &self.out, self.format)?;
        println!("{}", self.out.display());
        Ok(())
    }
}
