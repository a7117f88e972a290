//! `fkpnet-infer MODEL.onnx IMAGE...`: keypoints from an fkpnet ONNX export without
//! libtorch, printed as `fkpnet predict` prints them (one CSV row per face).

use anyhow::{bail, Result};
use clap::Parser;
use fkpnet_infer::{parse_box, Find, Model};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fkpnet-infer",
    version,
    about = "fkpnet's keypoint predictor on tract: an ONNX export in, keypoints out, no libtorch"
)]
struct Args {
    /// An ONNX model written by `fkpnet export RUN --format onnx`.
    model: PathBuf,
    /// Image files (JPEG, PNG, BMP, WebP, TIFF; read by their content).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The face's box x,y,w,h in the image's pixels (for every image given); by
    /// default faces are found by a face detector.
    #[arg(long = "box", value_name = "X,Y,W,H")]
    face_box: Option<String>,
    /// Each image is one face, already cut out as the model's training faces are.
    #[arg(long, conflicts_with = "face_box")]
    whole: bool,
    /// The face detector's least score for a face (about 2 to 50; higher finds fewer
    /// faces and fewer false ones).
    #[arg(long, value_name = "SCORE", default_value_t = fkpnet_infer::MIN_SCORE)]
    min_score: f64,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<()> {
    let model = Model::load(&a.model)?;
    let user = a.face_box.as_deref().map(parse_box).transpose()?;
    if !(a.min_score > 0.0) {
        bail!("--min-score {}: the detector's scores are positive", a.min_score);
    }
    let find = match &user {
        Some(b) => Find::Boxes(std::slice::from_ref(b)),
        None if a.whole => Find::Whole,
        None => Find::Detect { min_score: a.min_score },
    };
    let mut out = model.csv_header() + "\n";
    let (mut missed, mut faces) = (Vec::new(), 0);
    for p in &a.images {
        if !p.is_file() {
            bail!("{}: no such image file", p.display());
        }
        let name = p.display().to_string();
        let img = fkpnet_face::open(p)?;
        let found = model.predict(&name, &img, &find)?;
        if found.is_empty() {
            missed.push(name.clone());
        }
        faces += found.len();
        for face in found {
            let vals: Vec<String> = face.keypoints.iter().map(|v| format!("{v:.2}")).collect();
            let field = if name.contains([',', '"', '\n']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.clone()
            };
            out += &format!("{field},{}\n", vals.join(","));
        }
    }
    if !missed.is_empty() {
        let hint = fkpnet_infer::no_face_hint(a.min_score);
        if faces == 0 && missed.len() == 1 {
            bail!("{}: no face found ({hint})", missed[0]);
        } else if faces == 0 {
            bail!("no face found in any of the {} images: {} ({hint})", missed.len(), missed.join(", "));
        }
        eprintln!(
            "warning: no face found in {} of {} images: {} ({hint})",
            missed.len(),
            a.images.len(),
            missed.join(", ")
        );
    }
    print!("{out}");
    Ok(())
}
