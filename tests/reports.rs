//! test, predict, submit, extract, export, diff and plot on small real runs.

mod common;
use common::*;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Two small runs trained once for all tests here: `a` (base_lr 1e-3) and `b`
/// (base_lr 3e-4, dense 64), both on faces-mini.
fn runs() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static RUNS: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let s = root().join("solvers/baseline_adam.yaml");
        let common = [
            "train",
            s.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "-q",
            "--set",
            "max_iter=40",
            "--set",
            "test_interval=10",
            "--set",
            "display=5",
            "--set",
        ];
        let data = format!("data.train={}", mini("training.csv"));
        ok(&[&common[..], &[&data, "--name", "a"]].concat(), dir.path());
        ok(
            &[
                &common[..],
                &[&data, "--name", "b", "--set", "base_lr=3e-4", "--set", "layers.fc1.num_output=64"],
            ]
            .concat(),
            dir.path(),
        );
        let (a, b) = (dir.path().join("runs/a"), dir.path().join("runs/b"));
        (dir, a, b)
    })
}

#[test]
fn test_reports_per_keypoint_rmse_on_val_or_a_csv() {
    let (dir, a, _) = runs();
    let out = ok(&["test", a.to_str().unwrap()], dir.path());
    assert_eq!(out.lines().filter(|l| l.contains("_")).count() >= 15, true, "{out}");
    let overall = overall_rmse(&out);
    let best = best_val_rmse(&a);
    assert!((overall - best).abs() < 2e-3, "test on best weights {overall} vs training's best {best}");
    assert!(out.contains("euclidean (Caffe, sum/2N)") && out.contains("mse (mean)"));
    let out =
        ok(&["test", a.to_str().unwrap(), "--data", &mini("training.csv"), "--weights", "final"], dir.path());
    assert!(out.contains("300 faces"), "{out}");
    let e = err(&["test", a.to_str().unwrap(), "--data", &mini("test.csv")], dir.path());
    assert!(e.contains("no keypoint columns") && e.contains("fkpnet predict"), "{e}");
    let e = err(&["test", "runs/nope"], dir.path());
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn predict_images_and_csv_rows_and_draw_them() {
    let (dir, a, _) = runs();
    let d = dir.path();
    // A colour image of another size: coordinates come back in its own pixels.
    let img = image::RgbImage::from_fn(192, 150, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let face = d.join("face.png");
    img.save(&face).unwrap();
    let out = ok(
        &[
            "predict",
            a.to_str().unwrap(),
            face.to_str().unwrap(),
            &mini("test.csv"),
            "--draw",
            "drawn",
            "--whole",
        ],
        d,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 1 + 40, "header, the image, 40 test faces");
    assert!(lines[0].starts_with("input,left_eye_center_x,left_eye_center_y"));
    let vals: Vec<f64> = lines[1].split(',').skip(1).map(|v| v.parse().unwrap()).collect();
    assert_eq!(vals.len(), 30);
    assert!(vals.iter().step_by(2).all(|x| (-50.0..250.0).contains(x)));
    assert!(d.join("drawn/face.png").is_file() && d.join("drawn/test_1.png").is_file());
    assert_eq!(image::open(d.join("drawn/face.png")).unwrap().width(), 192);
    let json =
        ok(&["predict", a.to_str().unwrap(), face.to_str().unwrap(), "--format", "json", "--whole"], d);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["keypoints"]["nose_tip"].as_array().unwrap().len(), 2);
    // In the dataset's order, and to the CSV's 0.01 px.
    let names: Vec<&String> = v[0]["keypoints"].as_object().unwrap().keys().collect();
    assert_eq!((names[0].as_str(), names[14].as_str()), ("left_eye_center", "mouth_center_bottom_lip"));
    let csv_row: Vec<&str> = lines[1].split(',').skip(1).take(2).collect();
    let x = &v[0]["keypoints"]["left_eye_center"][0];
    assert_eq!(format!("{:.2}", x.as_f64().unwrap()), csv_row[0]);
    assert!(x.to_string().len() <= 6, "{x}");
    std::fs::write(d.join("broken.png"), b"not an image").unwrap();
    let e = err(&["predict", a.to_str().unwrap(), "broken.png"], d);
    assert!(e.contains("broken.png") && e.contains("not a readable image"), "{e}");
}

#[test]
fn submit_writes_kaggles_format() {
    let (dir, a, _) = runs();
    let d = dir.path();
    ok(&["submit", a.to_str().unwrap(), &mini("test.csv"), &mini("IdLookupTable.csv"), "-o", "sub.csv"], d);
    let text = std::fs::read_to_string(d.join("sub.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "RowId,Location");
    assert_eq!(lines.len(), 849);
    for l in &lines[1..] {
        let v: f64 = l.split(',').nth(1).unwrap().parse().unwrap();
        assert!((0.0..=96.0).contains(&v));
    }
    std::fs::write(
        d.join("lookup.csv"),
        "RowId,ImageId,FeatureName,Location\n1,1,nose_tip_x,\n2,999,nose_tip_x,\n",
    )
    .unwrap();
    let e = err(&["submit", a.to_str().unwrap(), &mini("test.csv"), "lookup.csv", "-o", "s2.csv"], d);
    assert!(e.contains("lookup.csv:3: ImageId 999 is not in"), "{e}");
    assert!(!d.join("s2.csv").exists());
}

fn predicted_values(out: &str) -> Vec<f64> {
    out.lines().skip(1).flat_map(|l| l.split(',').skip(1).map(|v| v.parse::<f64>().unwrap())).collect()
}

#[test]
fn an_ensemble_averages_its_members_predictions() {
    let (dir, a, b) = runs();
    let d = dir.path();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let pa = predicted_values(&ok(&["predict", a, &mini("test.csv")], d));
    let pb = predicted_values(&ok(&["predict", b, &mini("test.csv")], d));
    let both = predicted_values(&ok(&["predict", a, &mini("test.csv"), "--ensemble", b], d));
    assert_eq!(both.len(), 40 * 30);
    assert!(pa.iter().zip(&pb).any(|(x, y)| (x - y).abs() > 0.1), "the members must differ for this test");
    for ((x, y), m) in pa.iter().zip(&pb).zip(&both) {
        // Printed with 2 decimals: the mean of rounded values is within 0.01 of the rounded mean.
        assert!((m - (x + y) / 2.0).abs() <= 0.011, "ensemble {m} vs members {x}, {y}");
    }
    // test scores the mean prediction on the members' shared val split.
    let out = ok(&["test", a, "--ensemble", b], d);
    assert!(out.contains("ensemble of 2 runs"), "{out}");
    let (ra, rb, rab) =
        (overall_rmse(&ok(&["test", a], d)), overall_rmse(&ok(&["test", b], d)), overall_rmse(&out));
    // Averaging can only help on the squared error (convexity): never worse than the worse member.
    assert!(rab <= ra.max(rb) + 1e-6 && rab != ra && rab != rb, "{ra} {rb} -> {rab}");
    ok(&["submit", a, &mini("test.csv"), &mini("IdLookupTable.csv"), "-o", "ens.csv", "--ensemble", b], d);
    assert_eq!(std::fs::read_to_string(d.join("ens.csv")).unwrap().lines().count(), 849);
    // A member validated on other faces would be scored on faces it trained on.
    let c = d.join("other_split");
    std::fs::create_dir_all(&c).unwrap();
    for f in ["best.safetensors", "weights.safetensors"] {
        std::fs::copy(PathBuf::from(b).join(f), c.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(PathBuf::from(b).join("config.yaml")).unwrap();
    assert!(cfg.contains("  split: 0.9\n"));
    std::fs::write(c.join("config.yaml"), cfg.replace("  split: 0.9\n", "  split: 0.8\n")).unwrap();
    let e = err(&["test", a, "--ensemble", c.to_str().unwrap()], d);
    assert!(e.contains("validated on different faces") && e.contains("--data"), "{e}");
    let out = ok(&["test", a, "--ensemble", c.to_str().unwrap(), "--data", &mini("training.csv")], d);
    assert!(out.contains("300 faces") && out.contains("ensemble of 2 runs"), "{out}");
    let e = err(&["test", a, "--ensemble", b, "--weights", "x.safetensors"], d);
    assert!(e.contains("--weights best or --weights final"), "{e}");
}

#[test]
fn extract_writes_pngs() {
    let (dir, _, _) = runs();
    let d = dir.path();
    ok(&["extract", &mini("training.csv"), "ex", "--draw", "--limit", "2"], d);
    let mut files: Vec<String> = std::fs::read_dir(d.join("ex"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["1.png", "2.png"]);
    assert_eq!(image::open(d.join("ex/1.png")).unwrap().width(), 96);
    let e = err(&["extract", &mini("test.csv"), "ex2", "--draw"], d);
    assert!(e.contains("--draw needs a labelled CSV"), "{e}");
}

#[test]
fn export_is_self_contained_and_predicts_like_the_run() {
    let (dir, a, _) = runs();
    let d = dir.path();
    ok(&["export", a.to_str().unwrap(), "-o", "exported"], d);
    let ex = d.join("exported");
    for f in ["model.safetensors", "net.yaml", "README.md"] {
        assert!(ex.join(f).is_file(), "{f}");
    }
    let readme = std::fs::read_to_string(ex.join("README.md")).unwrap();
    assert!(
        readme.contains("(\"fc1\", nn.Linear(9216, 500, bias=True))")
            && readme.contains("flatten_fc1")
            && readme.contains("pip install torch safetensors"),
        "{readme}"
    );
    let mut names: Vec<(String, Vec<i64>)> = tch::Tensor::read_safetensors(ex.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    names.sort();
    assert_eq!(names[0], ("fc1.bias".to_string(), vec![500]));
    assert_eq!(names[1], ("fc1.weight".to_string(), vec![500, 9216]), "nn.Linear's (out, in)");
    let p1 = ok(&["predict", a.to_str().unwrap(), &mini("test.csv")], d);
    let p2 = ok(&["predict", ex.to_str().unwrap(), &mini("test.csv")], d);
    assert_eq!(p1, p2);
    let e = err(&["export", a.to_str().unwrap(), "-o", "exported"], d);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn diff_shows_config_changes_table_and_plot() {
    let (dir, a, b) = runs();
    let d = dir.path();
    let out = ok(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "-o", "curves.png"], d);
    assert!(out.contains("base_lr: 0.001 -> 0.0003"), "{out}");
    assert!(out.contains("layers.fc1.num_output: 500 -> 64"), "{out}");
    assert!(out.contains("val_rmse_px at common iterations"), "{out}");
    assert!(out.contains("best val_rmse_px:") && out.contains("is better than"), "{out}");
    let png = std::fs::read(d.join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let same = ok(&["diff", a.to_str().unwrap(), a.to_str().unwrap(), "--metric", "train_loss"], d);
    assert!(same.contains("config a -> a: same"), "{same}");
    ok(&["plot", a.to_str().unwrap(), b.to_str().unwrap(), "-o", "curves.svg"], d);
    assert!(std::fs::read_to_string(d.join("curves.svg")).unwrap().contains("<svg"));
    let e = err(&["diff", a.to_str().unwrap(), "runs/missing"], d);
    assert!(e.contains("runs/missing: no such run directory"), "{e}");
    let e = err(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--metric", "accuracy"], d);
    assert!(e.contains("valid: val_rmse_px"), "{e}");
}

/// Nothing a user has is overwritten: same-named inputs get distinct drawings, and an
/// existing output file is refused (before anything is written) unless --force.
#[test]
fn outputs_are_never_overwritten_silently() {
    let (dir, a, b) = runs();
    let d = &dir.path().join("no-overwrite");
    std::fs::create_dir_all(d.join("x")).unwrap();
    std::fs::create_dir_all(d.join("y")).unwrap();
    let grey = |v: u8| image::GrayImage::from_pixel(96, 96, image::Luma([v]));
    grey(40).save(d.join("x/1.png")).unwrap();
    grey(200).save(d.join("y/1.png")).unwrap();
    let a = a.to_str().unwrap();
    let draw = ["predict", a, "x/1.png", "y/1.png", "--whole", "--draw", "drawn"];
    ok(&draw, d);
    let mut files: Vec<String> = std::fs::read_dir(d.join("drawn"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["x_1.png", "y_1.png"], "one drawing per input");
    let dark = image::open(d.join("drawn/x_1.png")).unwrap().to_luma8();
    assert!(dark.get_pixel(0, 0)[0] < 100, "x/1.png's drawing is x/1.png");
    // The same file twice: numbered.
    ok(&["predict", a, "x/1.png", "x/1.png", "--whole", "--draw", "twice"], d);
    assert!(d.join("twice/x_1_1.png").is_file() && d.join("twice/x_1_2.png").is_file());
    // Again into the same dir: refused, nothing touched; --force overwrites.
    let before = std::fs::metadata(d.join("drawn/x_1.png")).unwrap().modified().unwrap();
    let e = err(&draw, d);
    assert!(e.contains("drawn/x_1.png exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::metadata(d.join("drawn/x_1.png")).unwrap().modified().unwrap(), before);
    ok(&[&draw[..], &["--force"]].concat(), d);

    let sub = ["submit", a, &mini("test.csv"), &mini("IdLookupTable.csv"), "-o", "sub.csv"];
    std::fs::write(d.join("sub.csv"), "mine").unwrap();
    let e = err(&sub, d);
    assert!(e.contains("sub.csv exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(d.join("sub.csv")).unwrap(), "mine");
    ok(&[&sub[..], &["--force"]].concat(), d);
    assert!(std::fs::read_to_string(d.join("sub.csv")).unwrap().starts_with("RowId,Location"));

    let b = b.to_str().unwrap();
    for (args, file) in [
        (vec!["plot", a, b, "-o", "mine.png"], "mine.png"),
        (vec!["diff", a, b, "-o", "mine.svg"], "mine.svg"),
        (vec!["extract", &mini("training.csv"), ".", "--limit", "1"], "1.png"),
    ] {
        std::fs::write(d.join(file), "mine").unwrap();
        let e = err(&args, d);
        assert!(e.contains(&format!("{file} exists")) && e.contains("--force"), "{args:?}: {e}");
        assert_eq!(std::fs::read_to_string(d.join(file)).unwrap(), "mine", "{args:?}");
        ok(&[&args[..], &["--force"]].concat(), d);
        assert_ne!(std::fs::read(d.join(file)).unwrap(), b"mine", "{args:?} --force");
    }
}
