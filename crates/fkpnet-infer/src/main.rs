//! `fkpnet-infer MODEL.onnx IMAGE...`: keypoints from an fkpnet ONNX export without
//! libtorch, printed as `fkpnet predict` prints them (one CSV row per face).

use anyhow::{bail, Result};
use clap::Parser;
use fkpnet_infer::{parse_box, Model};
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
    /// The face's box x,y,w,h in the image's pixels (for every image given), for a
    /// model trained on faces cut out of their images.
    #[arg(long = "box", value_name = "X,Y,W,H")]
    face_box: Option<String>,
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
    let mut out = model.csv_header() + "\n";
    for p in &a.images {
        if !p.is_file() {
            bail!("{}: no such image file", p.display());
        }
        let name = p.display().to_string();
        let img = fkpnet_face::open(p)?;
        for face in model.predict(&name, &img, user.as_ref().map(std::slice::from_ref))? {
            let vals: Vec<String> = face.keypoints.iter().map(|v| format!("{v:.2}")).collect();
            let field = if name.contains([',', '"', '\n']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.clone()
            };
            out += &format!("{field},{}\n", vals.join(","));
        }
    }
    print!("{out}");
    Ok(())
}
