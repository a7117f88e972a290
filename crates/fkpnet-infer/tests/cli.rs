//! `fkpnet-infer` as a user runs it: a model trained and exported by fkpnet (the
//! workspace's release binary), photos at their own size in, the same CSV out as
//! `fkpnet predict` prints; a face box; the bad inputs; and no libtorch in its tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn fkpnet_bin() -> PathBuf {
    let b = root().join("target/release/fkpnet");
    assert!(b.is_file(), "{} is missing: `cargo build --release` (scripts/test does) builds it", b.display());
    b
}

fn shared() -> PathBuf {
    std::env::var_os("FKPNET_DATA").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/data"))
}

fn run(cmd: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(cmd).args(args).current_dir(cwd).output().unwrap()
}

fn ok(cmd: &Path, args: &[&str], cwd: &Path) -> String {
    let o = run(cmd, args, cwd);
    assert!(o.status.success(), "{} {args:?}: {}", cmd.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn infer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fkpnet-infer"))
}

/// Two prediction CSVs: the same header and inputs, and the largest difference.
fn compare(a: &str, b: &str) -> f64 {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(la.len(), lb.len(), "{a}\n---\n{b}");
    assert_eq!(la[0], lb[0], "the same header");
    let mut worst = 0.0f64;
    for (x, y) in la[1..].iter().zip(&lb[1..]) {
        let (fx, fy): (Vec<&str>, Vec<&str>) = (x.split(',').collect(), y.split(',').collect());
        assert_eq!(fx[0], fy[0], "the same input");
        for (p, q) in fx[1..].iter().zip(&fy[1..]) {
            worst = worst.max((p.parse::<f64>().unwrap() - q.parse::<f64>().unwrap()).abs());
        }
    }
    worst
}

const VIEWS_OFF: [&str; 8] =
    ["--set", "test.flip=false", "--set", "test.shift=0", "--set", "test.rotate=0", "--set", "test.scale=0"];

#[test]
fn photos_give_fkpnet_predicts_keypoints_without_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fk = fkpnet_bin();
    // The study's LeNet (grey, Kaggle's 96x96) and the 68-landmark LeNet (whole colour
    // photos at their own size), briefly trained, exported to ONNX.
    let faces = shared().join("faces-mini/training.csv").display().to_string();
    let lm = shared().join("landmarks68-mini/train/keypoints.csv").display().to_string();
    for (solver, data, name) in [("adam", &faces, "lenet"), ("lenet68", &lm, "lenet68")] {
        let s = root().join(format!("solvers/{solver}.yaml")).display().to_string();
        let data = format!("data.train={data}");
        let common = [
            "--set",
            "max_iter=3",
            "--set",
            "test_interval=0",
            "--set",
            "batch_size=4",
            "--name",
            name,
            "-q",
        ];
        let mut args = vec!["train", s.as_str(), "--set", &data];
        args.extend(common);
        ok(&fk, &args, d);
        ok(
            &fk,
            &[
                "export",
                &format!("runs/{name}"),
                "-o",
                &format!("{name}.onnx"),
                "--format",
                "onnx",
                "--weights",
                "final",
            ],
            d,
        );
    }
    let photos: Vec<String> = ["frames_a/Alex_Ferguson_10.jpg", "frames_a/Alfredo_di_Stefano_00.jpg"]
        .iter()
        .map(|p| shared().join("landmarks68-mini/train").join(p).display().to_string())
        .collect();
    let mut worst = 0.0f64;
    for model in ["lenet", "lenet68"] {
        let (run_dir, onnx) = (format!("runs/{model}"), format!("{model}.onnx"));
        let mut args = vec!["predict", run_dir.as_str()];
        args.extend(photos.iter().map(String::as_str));
        args.extend(["--weights", "final"]);
        args.extend(VIEWS_OFF);
        let want = ok(&fk, &args, d);
        let mut iargs = vec![onnx.as_str()];
        iargs.extend(photos.iter().map(String::as_str));
        let got = ok(&infer(), &iargs, d);
        // The same faces found, cut out with the run's framing (the export's metadata);
        // both print 0.01 px, the models agree well below that.
        let diff = compare(&want, &got);
        assert!(diff <= 0.0100001, "{model}: {diff} px\n{want}\n{got}");
        worst = worst.max(diff);
        // The whole photo as the face, as fkpnet predict --whole.
        let (mut wa, mut wi) = (args.clone(), iargs.clone());
        wa.push("--whole");
        wi.push("--whole");
        let diff = compare(&ok(&fk, &wa, d), &ok(&infer(), &wi, d));
        assert!(diff <= 0.0100001, "{model} --whole: {diff} px");
        // A face box, as fkpnet predict --box takes it.
        let mut bargs = args.clone();
        bargs.extend(["--box", "60,40,200,220"]);
        let want = ok(&fk, &bargs, d);
        let mut ib = iargs.clone();
        ib.extend(["--box", "60,40,200,220"]);
        let got = ok(&infer(), &ib, d);
        assert!(compare(&want, &got) <= 0.0100001, "{model} --box:\n{want}\n{got}");
    }
    eprintln!("fkpnet-infer vs fkpnet predict: max difference {worst:.3} px (both print 0.01 px)");

    let framing = fkpnet_infer::Model::load(&d.join("lenet.onnx")).unwrap().meta.framing;
    let f = framing.expect("the export carries the framing fitted on the run's training faces");
    assert!((1.05..1.25).contains(&f.scale) && f.detector == fkpnet_infer::DETECTOR, "{f:?}");

    // Bad input gets clear errors.
    let bad = |args: &[&str]| {
        let o = run(&infer(), args, d);
        assert!(!o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    std::fs::write(d.join("corrupt.onnx"), b"\x08\x07\x12 not a model at all \xff\xff").unwrap();
    let e = bad(&["corrupt.onnx", &photos[0]]);
    assert!(e.contains("corrupt.onnx: not a readable ONNX model"), "{e}");
    let mut truncated = std::fs::read(d.join("lenet.onnx")).unwrap();
    truncated.truncate(truncated.len() / 2);
    std::fs::write(d.join("truncated.onnx"), truncated).unwrap();
    let e = bad(&["truncated.onnx", &photos[0]]);
    assert!(e.contains("truncated.onnx: not a readable ONNX model"), "{e}");
    let e = bad(&["lenet.onnx", &photos[0], "--box", "400,10,50,50"]);
    assert!(e.contains("lies outside the 330x300 image"), "{e}");
    let e = bad(&["lenet.onnx", &photos[0], "--box", "1,2,3"]);
    assert!(e.contains("expected four numbers"), "{e}");
    let e = bad(&["lenet.onnx", "nowhere.jpg"]);
    assert!(e.contains("nowhere.jpg: no such image file"), "{e}");
    image::GrayImage::from_pixel(200, 160, image::Luma([128])).save(d.join("blank.png")).unwrap();
    let e = bad(&["lenet.onnx", "blank.png"]);
    assert!(e.contains("blank.png: no face found") && e.contains("--box") && e.contains("--whole"), "{e}");
    std::fs::write(d.join("text.png"), "not an image").unwrap();
    let e = bad(&["lenet.onnx", "text.png"]);
    assert!(e.contains("text.png: not a readable image"), "{e}");
}

/// What "no libtorch" means: nothing of tch or torch-sys in the predictor's tree, so
/// it builds for an ARM board with a plain cross toolchain.
#[test]
fn the_predictor_depends_on_no_libtorch() {
    let o = Command::new(env!("CARGO"))
        .args(["tree", "-p", "fkpnet-infer", "-e", "normal,build", "--prefix", "none", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tree = String::from_utf8_lossy(&o.stdout);
    assert!(tree.lines().any(|l| l.starts_with("tract-onnx ")), "{tree}");
    for l in tree.lines() {
        let name = l.split_whitespace().next().unwrap_or("");
        assert!(!["tch", "torch-sys", "tikv-jemalloc-sys", "fkpnet"].contains(&name), "{name} in:\n{tree}");
    }
}
