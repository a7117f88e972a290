//! Data as config: image datasets in the field's formats (csv, pts, coco), keypoint
//! sets, crops, identity-grouped splits, NME, and clear errors for bad input. On
//! landmarks68-mini (120 colour frames with 68 iBUG points, as csv and as .pts).

mod common;
use common::*;

use fkpnet::config::{load_solver, parse_sets};
use fkpnet::data::{self, Faces};
use std::path::{Path, PathBuf};

fn l68() -> PathBuf {
    shared_data().join("landmarks68-mini/train")
}

/// The shipped 68-point solver on the small data, with `sets` applied.
fn faces_of(sets: &[&str]) -> (data::Spec, data::Split) {
    let mut all = vec![format!("data.train={}", l68().join("keypoints.csv").display())];
    all.extend(sets.iter().map(|s| s.to_string()));
    let r = load_solver(&root().join("solvers/lenet68.yaml"), &parse_sets(&all).unwrap()).unwrap();
    let spec = data::spec(&r.solver.data, &r.net).unwrap();
    let split = data::load(&r.solver.data, &spec).unwrap();
    (spec, split)
}

fn all_faces(s: &data::Split) -> (Faces, Faces) {
    (s.train.clone(), s.val.clone())
}

fn assert_same_faces(a: &Faces, b: &Faces, what: &str) {
    assert_eq!(a.sources, b.sources, "{what}: names or crops differ");
    assert_eq!(a.pixels, b.pixels, "{what}: pixels differ");
    assert_eq!(a.keypoints.len(), b.keypoints.len());
    for (x, y) in a.keypoints.iter().zip(&b.keypoints) {
        assert!((x - y).abs() < 1e-4 || (x.is_nan() && y.is_nan()), "{what}: keypoint {x} vs {y}");
    }
}

/// A COCO keypoints file of the same faces, written from the csv.
fn write_coco(dir: &Path) -> PathBuf {
    let mut rdr = csv::Reader::from_path(l68().join("keypoints.csv")).unwrap();
    let (mut images, mut anns) = (Vec::new(), Vec::new());
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        let kp: Vec<f64> = (1..rec.len())
            .step_by(2)
            .flat_map(|c| [rec[c].parse().unwrap(), rec[c + 1].parse().unwrap(), 2.0])
            .collect();
        images.push(serde_json::json!({"id": i + 1, "file_name": &rec[0], "width": 0, "height": 0}));
        anns.push(serde_json::json!({"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": kp, "num_keypoints": 68}));
    }
    let doc =
        serde_json::json!({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]});
    let p = dir.join("faces.json");
    std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
    p
}

#[test]
fn csv_pts_and_coco_readers_give_the_same_faces() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, csv) = faces_of(&[]);
    assert_eq!((spec.keypoints.len(), spec.input()), (68, [1, 96, 96]));
    assert_eq!(csv.train.len() + csv.val.len(), 120);
    let (_, pts) = faces_of(&[&format!("data.train={}", l68().display()), "data.format=pts"]);
    let coco = write_coco(dir.path());
    let images = format!("data.images={}", l68().display());
    let (_, coco) = faces_of(&[&format!("data.train={}", coco.display()), "data.format=coco", &images]);
    for (name, other) in [("pts", &pts), ("coco", &coco)] {
        let ((a, b), (c, e)) = (all_faces(&csv), all_faces(other));
        assert_same_faces(&a, &c, name);
        assert_same_faces(&b, &e, name);
    }
    // The .pts files are 1-based: the reader subtracted 1 (CSV x0 of the first face).
    let first = std::fs::read_to_string(l68().join("keypoints.csv")).unwrap();
    let row = first.lines().nth(1).unwrap();
    let name = row.split(',').next().unwrap();
    let x0: f32 = row.split(',').nth(1).unwrap().parse().unwrap();
    let pts = fkpnet::data::annotations::read_pts(&l68().join(name).with_extension("pts"), 68).unwrap();
    assert_eq!(pts[0], x0);
}

#[test]
fn a_grouped_split_keeps_each_person_on_one_side() {
    let (_, s) = faces_of(&[]);
    let person =
        |n: &str| regex::Regex::new(r"([^/]+)_\d+\.jpg$").unwrap().captures(n).unwrap()[1].to_string();
    let train: std::collections::HashSet<String> = s.train.sources.iter().map(|x| person(&x.name)).collect();
    let val: std::collections::HashSet<String> = s.val.sources.iter().map(|x| person(&x.name)).collect();
    assert!(!val.is_empty() && train.is_disjoint(&val), "{val:?}");
    // frames_a/X_01.jpg and frames_b/X_01.jpg are the same person: one group.
    assert!((10..=14).contains(&s.val.len()), "about a tenth of 120 faces: {}", s.val.len());
    // Without the grouping, the random split puts someone on both sides.
    let (_, r) = faces_of(&["data.split_group=null"]);
    let t2: std::collections::HashSet<String> = r.train.sources.iter().map(|x| person(&x.name)).collect();
    assert!(r.val.sources.iter().any(|x| t2.contains(&person(&x.name))), "a random split mixes people");
}

#[test]
fn crops_cut_the_face_and_keypoints_follow_it() {
    let (_, whole) = faces_of(&[]);
    let (spec, lm) = faces_of(&["data.crop={from: landmarks, margin: 0.25}", "input=[3, 64, 64]"]);
    assert_eq!((spec.channels, spec.width), (3, 64));
    let f = &lm.train;
    assert_eq!(f.image(0).len(), 3 * 64 * 64);
    // The keypoints' extent fills the crop but for the margin: 1/1.25 of its side.
    for i in 0..f.len() {
        let p = f.points(i);
        let xs: Vec<f32> = p.iter().step_by(2).copied().collect();
        let ys: Vec<f32> = p.iter().skip(1).step_by(2).copied().collect();
        let span = |v: &[f32]| {
            v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
        };
        let longer = span(&xs).max(span(&ys)) + 64.0 / f.sources[i].crop.side as f32;
        assert!((longer - 64.0 / 1.25).abs() < 1.5, "face {i}: extent {longer} px of 64");
    }
    // A whole frame keeps its aspect: the box is the longer side, points map back exactly.
    let s = &whole.train.sources[0];
    let back = s.crop.points_to_image(whole.train.points(0), 96);
    let csv = std::fs::read_to_string(l68().join("keypoints.csv")).unwrap();
    let row: Vec<f32> = csv
        .lines()
        .find(|l| l.starts_with(&format!("{},", s.name)))
        .unwrap()
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    for (a, b) in back.iter().zip(&row) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn training_reports_nme_failure_rate_and_auc() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = format!("data.train={}", l68().join("keypoints.csv").display());
    let s = root().join("solvers/lenet68.yaml");
    let sets = ["--set", &data, "--set", "max_iter=4", "--set", "test_interval=2", "--set", "batch_size=16"];
    ok(&[&["train", s.to_str().unwrap(), "--runs-dir", "runs", "--name", "a", "-q"][..], &sets].concat(), d);
    let rows = fkpnet::run::read_metrics(&d.join("runs/a/metrics.csv")).unwrap();
    let tested: Vec<_> = rows.iter().filter(|r| r.val_loss.is_some()).collect();
    assert_eq!(tested.len(), 3);
    for r in tested {
        let (nme, fr, auc) = (r.val_nme.unwrap(), r.val_fr.unwrap(), r.val_auc.unwrap());
        assert!(nme > 0.0 && (0.0..=100.0).contains(&fr) && (0.0..=100.0).contains(&auc), "{r:?}");
        // An untrained net is far from every face: all fail, the AUC is near 0.
        if r.iter == 0 {
            assert!(nme > 8.0 && fr == 100.0, "{r:?}");
        }
    }
    let log = std::fs::read_to_string(d.join("runs/a/train.log")).unwrap();
    assert!(log.contains("Test net output #2: nme_pct = ") && log.contains("#4: auc_pct = "), "{log}");
}

fn bad(sets: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let s = root().join("solvers/lenet68.yaml");
    let data = format!("data.train={}", l68().join("keypoints.csv").display());
    let mut args =
        vec!["train", s.to_str().unwrap(), "--runs-dir", "runs", "-q", "--set", &data, "--set", "max_iter=1"];
    for x in sets {
        args.extend(["--set", x]);
    }
    err(&args, dir.path())
}

#[test]
fn bad_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A preset that does not exist; a set that does not fit the net's output.
    let e = bad(&["data.keypoints=ibug86"]);
    assert!(e.contains("unknown preset `ibug86`") && e.contains("did you mean `ibug68`"), "{e}");
    let e = bad(&["data.keypoints=wflw98"]);
    assert!(e.contains("outputs 136 but the data has 196 targets"), "{e}");
    let e = bad(&["data.keypoints={count: 68, mirror: [[0, 68]]}"]);
    assert!(e.contains("[0, 68] is out of range"), "{e}");
    // Inputs the crops cannot give.
    let e = bad(&["input=[1, 96, 64]"]);
    assert!(e.contains("square input"), "{e}");
    let e = bad(&["input=[2, 96, 96]"]);
    assert!(e.contains("grey (1 channel) or RGB (3)"), "{e}");
    let e = bad(&["data.format=csv", "data.keypoints=null"]);
    assert!(e.contains("needs its keypoint set"), "{e}");

    // A csv row with 135 coordinates, an image that does not exist, one that does not decode.
    let csv = std::fs::read_to_string(l68().join("keypoints.csv")).unwrap();
    let mut lines: Vec<String> = csv.lines().take(4).map(str::to_string).collect();
    let short = lines[2].rsplit_once(',').unwrap().0.to_string();
    lines[2] = short;
    std::fs::write(d.join("short.csv"), lines.join("\n") + "\n").unwrap();
    let images = format!("data.images={}", l68().display());
    let e = bad(&[&format!("data.train={}", d.join("short.csv").display()), &images]);
    assert!(
        e.contains("short.csv:3") && e.contains("136 values") && e.contains("135 coordinate values"),
        "{e}"
    );
    let mut lines: Vec<String> = csv.lines().take(3).map(str::to_string).collect();
    lines[1] = lines[1].replacen("frames_a/", "frames_a/missing_", 1);
    std::fs::write(d.join("missing.csv"), lines.join("\n") + "\n").unwrap();
    let e = bad(&[&format!("data.train={}", d.join("missing.csv").display()), &images]);
    assert!(e.contains("missing.csv:2") && e.contains("does not exist"), "{e}");
    std::fs::create_dir_all(d.join("img/frames_a")).unwrap();
    let first = lines[2].split(',').next().unwrap().to_string();
    std::fs::write(d.join("img").join(&first), b"not a jpeg").unwrap();
    std::fs::write(d.join("one.csv"), format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let e = bad(&[
        &format!("data.train={}", d.join("one.csv").display()),
        &format!("data.images={}", d.join("img").display()),
    ]);
    assert!(e.contains("one.csv:2") && e.contains("not a readable image"), "{e}");

    // .pts files: a wrong n_points, a missing brace.
    let pts_dir = d.join("pts");
    std::fs::create_dir_all(&pts_dir).unwrap();
    let name = csv.lines().nth(1).unwrap().split(',').next().unwrap();
    std::fs::copy(l68().join(name), pts_dir.join("a.jpg")).unwrap();
    let good = std::fs::read_to_string(l68().join(name).with_extension("pts")).unwrap();
    let pts = |text: &str| {
        std::fs::write(pts_dir.join("a.pts"), text).unwrap();
        bad(&[&format!("data.train={}", pts_dir.display()), "data.format=pts"])
    };
    let e = pts(&good.replace("n_points: 68", "n_points: 67"));
    assert!(e.contains("a.pts") && e.contains("n_points says 67 but the file lists 68"), "{e}");
    let e = pts(&good.replace('}', ""));
    assert!(e.contains("a.pts") && e.contains("not closed by `}`"), "{e}");
    let e = pts(&good.replace('{', ""));
    assert!(e.contains("a.pts:") && e.contains("expected `version:`"), "{e}");

    // A COCO annotation whose keypoint count is not the set's.
    let coco = write_coco(d);
    let text = std::fs::read_to_string(&coco).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["annotations"][3]["keypoints"].as_array_mut().unwrap().truncate(201);
    std::fs::write(&coco, doc.to_string()).unwrap();
    let e = bad(&[&format!("data.train={}", coco.display()), "data.format=coco", &images]);
    assert!(e.contains("annotations[3]") && e.contains("201 keypoint values") && e.contains("has 68"), "{e}");
}

/// A short run of the shipped 68-point solver (whole frames) and of a variant cut out
/// by the landmarks (RGB, 96x96), trained once for the predict tests.
fn trained() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static RUNS: std::sync::OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let s = root().join("solvers/lenet68.yaml");
        let data = format!("data.train={}", l68().join("keypoints.csv").display());
        let common = [
            "train",
            s.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "-q",
            "--set",
            &data,
            "--set",
            "max_iter=6",
            "--set",
            "batch_size=16",
        ];
        ok(&[&common[..], &["--name", "whole"]].concat(), dir.path());
        let lm = [
            "--name",
            "lm",
            "--set",
            "data.crop={from: landmarks, margin: 0.25}",
            "--set",
            "input=[3, 96, 96]",
        ];
        ok(&[&common[..], &lm].concat(), dir.path());
        let (a, b) = (dir.path().join("runs/whole"), dir.path().join("runs/lm"));
        (dir, a, b)
    })
}

fn rows(csv: &str) -> Vec<(String, Vec<f64>)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let (name, rest) = l.split_once(',').unwrap();
            (name.to_string(), rest.split(',').map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn predict_writes_one_row_per_image_in_its_own_pixels() {
    let (dir, whole, lm) = trained();
    let d = dir.path();
    let w = whole.to_str().unwrap();
    // A folder, recursively: one row per image (the .pts files beside them are skipped),
    // named relative to the folder, in the dataset's layout.
    ok(&["predict", w, l68().to_str().unwrap(), "-o", "pred.csv", "--whole"], d);
    let text = std::fs::read_to_string(d.join("pred.csv")).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("image,x0,y0,x1,y1,") && header.ends_with(",x67,y67"), "{header}");
    let r = rows(&text);
    assert_eq!(r.len(), 120);
    assert!(r.iter().all(|(n, v)| n.starts_with("frames_") && v.len() == 136), "{:?}", r[0].0);
    // In the image's pixels: inside (or near) each frame, not the 96x96 input.
    let img = image::open(l68().join(&r[0].0)).unwrap();
    let xs: Vec<f64> = r[0].1.iter().step_by(2).copied().collect();
    assert!(xs.iter().all(|x| (-20.0..img.width() as f64 + 20.0).contains(x)), "{xs:?}");
    // An existing output is refused.
    let e = err(&["predict", w, l68().to_str().unwrap(), "-o", "pred.csv", "--whole"], d);
    assert!(e.contains("pred.csv exists"), "{e}");

    // A face box: the same face moved within a larger photo, with its box moved
    // alike, gets the same keypoints moved alike.
    let l = lm.to_str().unwrap();
    let name = &r[0].0;
    let small = image::open(l68().join(name)).unwrap().to_rgb8();
    let mut big = image::RgbImage::new(small.width() + 100, small.height() + 60);
    image::imageops::overlay(&mut big, &small, 70, 40);
    big.save(d.join("big.png")).unwrap();
    let at = |img: &str, b: &str| rows(&ok(&["predict", l, img, "--box", b], d))[0].1.clone();
    let (p1, p2) = (at(l68().join(name).to_str().unwrap(), "40,50,100,110"), at("big.png", "110,90,100,110"));
    for (k, (a, b)) in p1.iter().zip(&p2).enumerate() {
        let shift = if k % 2 == 0 { 70.0 } else { 40.0 };
        assert!((b - a - shift).abs() < 0.02, "value {k}: {a} vs {b}");
    }
    let e = err(&["predict", l, "big.png", "--box", "900,900,10,10"], d);
    assert!(e.contains("lies outside the"), "{e}");
    // Several faces of one photo from a boxes file: a row each.
    std::fs::write(d.join("boxes.csv"), "image,x,y,w,h\nbig.png,110,90,100,110\nbig.png,0,0,80,80\n")
        .unwrap();
    let two = rows(&ok(&["predict", l, "big.png", "--boxes", "boxes.csv", "--draw", "drawn"], d));
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].1, p2, "the first box is the --box above");
    let drawn: Vec<_> = std::fs::read_dir(d.join("drawn")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(drawn, ["big.png"], "one drawing of the photo with both faces");

    // JSON: the box and the keypoints by name, in the set's order.
    let json = ok(&["predict", w, l68().join(name).to_str().unwrap(), "--format", "json"], d);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&String> = v[0]["keypoints"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 68);
    assert_eq!((names[0].as_str(), names[10].as_str(), names[67].as_str()), ("p0", "p10", "p67"));
    assert_eq!(v[0]["box"].as_array().unwrap().len(), 4);
}

/// Three people of the test set (none of them in training) side by side in one photo,
/// and where each one's frame lies in it (x from, x to).
fn people(d: &Path) -> (PathBuf, Vec<(f64, f64)>) {
    let test = l68().join("../../landmarks68/test/frames_a");
    let mut photo = image::RgbImage::from_pixel(700, 320, image::Rgb([90, 100, 110]));
    let mut frames = Vec::new();
    for (name, x) in
        [("Agnes_Bruckner_42.jpg", 10), ("Chris_Cooper_01.jpg", 210), ("Ethan_Hawke_31.jpg", 420)]
    {
        let f = image::open(test.join(name)).unwrap().to_rgb8();
        image::imageops::overlay(&mut photo, &f, x, 20);
        frames.push((x as f64, (x + f.width() as i64) as f64));
    }
    let path = d.join("people.png");
    photo.save(&path).unwrap();
    (path, frames)
}

/// Photos in, keypoints out: the face detector finds each face of a photo with
/// several people, each is cut out as the model was trained (its framing, fitted once
/// on its training faces and kept in the run dir): a row per face, one drawing.
#[test]
fn predict_finds_each_face_of_a_photo_with_several_people() {
    let (dir, _, lm) = trained();
    let d = &dir.path().join("people");
    std::fs::create_dir_all(d).unwrap();
    let l = lm.to_str().unwrap();
    let (photo, frames) = people(d);
    let json = ok(&["predict", l, photo.to_str().unwrap(), "--format", "json", "--draw", "drawn"], d);
    let faces: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(faces.len(), 3, "{json}");
    // Each face lies in its own person's frame: its box's centre and its keypoints.
    let mut seen = vec![0; 3];
    for f in &faces {
        let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let cx = b[0] + b[2] / 2.0;
        let k = frames.iter().position(|(a, z)| (*a..*z).contains(&cx)).expect("the box is in a frame");
        seen[k] += 1;
        let xs: Vec<f64> =
            f["keypoints"].as_object().unwrap().values().map(|p| p[0].as_f64().unwrap()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!(
            (frames[k].0..frames[k].1).contains(&mean),
            "face {k}: mean x {mean} outside {:?}",
            frames[k]
        );
        assert!(f["face_score"].as_f64().unwrap() >= 2.0, "{f}");
    }
    assert_eq!(seen, [1, 1, 1], "one face per person");
    // One drawing, the photo's size, with the faces marked on it.
    let drawn = image::open(d.join("drawn/people.png")).unwrap().to_rgb8();
    let original = image::open(&photo).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());
    let changed = drawn.pixels().zip(original.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed > 500, "{changed} pixels drawn");
    // The framing was fitted on the run's training faces and kept; CSV rows agree.
    let framing = std::fs::read_to_string(lm.join("framing.yaml")).unwrap();
    assert!(framing.contains("sampled: 120") && framing.contains("detector: seetaface"), "{framing}");
    let csv = rows(&ok(&["predict", l, photo.to_str().unwrap()], d));
    assert_eq!(csv.len(), 3);
    let first_x = faces[0]["keypoints"]["p0"][0].as_f64().unwrap();
    assert!((csv[0].1[0] - first_x).abs() < 0.006, "{} vs {first_x}", csv[0].1[0]);

    // A photo without a face says so, with what to give instead; in a folder with
    // faces elsewhere it is named in a warning and the faces are predicted.
    image::RgbImage::from_pixel(300, 200, image::Rgb([120, 120, 120])).save(d.join("wall.png")).unwrap();
    let e = err(&["predict", l, "wall.png"], d);
    assert!(e.contains("wall.png: no face found") && e.contains("--box") && e.contains("--whole"), "{e}");
    std::fs::create_dir_all(d.join("album")).unwrap();
    std::fs::copy(&photo, d.join("album/people.png")).unwrap();
    std::fs::copy(d.join("wall.png"), d.join("album/wall.png")).unwrap();
    let out = fkpnet(&["predict", l, "album"], d);
    assert!(out.status.success());
    assert_eq!(rows(&String::from_utf8_lossy(&out.stdout)).len(), 3);
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(warn.contains("no face found in 1 of 2 images: wall.png"), "{warn}");
    // --whole takes the image as one face; --min-score must be positive.
    assert_eq!(rows(&ok(&["predict", l, "wall.png", "--whole"], d)).len(), 1);
    let e = err(&["predict", l, "wall.png", "--min-score", "0"], d);
    assert!(e.contains("--min-score 0"), "{e}");
}

#[test]
fn an_export_carries_its_faces_and_keypoints() {
    let (dir, _, lm) = trained();
    let d = dir.path();
    ok(&["export", lm.to_str().unwrap(), "-o", "ex_lm"], d);
    let data = std::fs::read_to_string(d.join("ex_lm/data.yaml")).unwrap();
    assert!(
        data.contains("format: csv") && data.contains("from: landmarks") && data.contains("mirror:"),
        "{data}"
    );
    let readme = std::fs::read_to_string(d.join("ex_lm/README.md")).unwrap();
    assert!(readme.contains("96x96 RGB faces") && readme.contains("68 keypoints"), "{readme}");
    let img = l68().join(
        std::fs::read_to_string(l68().join("keypoints.csv"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap(),
    );
    let img = img.to_str().unwrap();
    let a = ok(&["predict", lm.to_str().unwrap(), img, "--box", "30,40,90,90"], d);
    let b = ok(&["predict", d.join("ex_lm").to_str().unwrap(), img, "--box", "30,40,90,90"], d);
    assert_eq!(a, b, "the export predicts what the run predicts");
    // With the run's framing: the faces it finds in photos are cut out alike.
    assert!(d.join("ex_lm/framing.yaml").is_file());
    let (photo, _) = people(d);
    let a = ok(&["predict", lm.to_str().unwrap(), photo.to_str().unwrap()], d);
    let b = ok(&["predict", d.join("ex_lm").to_str().unwrap(), photo.to_str().unwrap()], d);
    assert_eq!(a, b, "the export finds and predicts what the run does");
    // fkpnet test on another annotation file of the same format: per point and NME.
    let out = ok(&["test", lm.to_str().unwrap(), "--data", l68().join("keypoints.csv").to_str().unwrap()], d);
    assert!(
        out.contains("120 faces")
            && out.contains("p67")
            && out.contains("NME ")
            && out.contains("(NME > 8%)"),
        "{out}"
    );
}

#[test]
fn colour_jitter_changes_saturation_of_rgb_faces_only() {
    use fkpnet::data::augment::Augment;
    use tch::{Kind, Tensor};
    let (spec, s) = faces_of(&["input=[3, 96, 96]"]);
    let (x, y) = s.train.select(&[0, 1, 2, 3]).to_tensors(tch::Device::Cpu);
    tch::manual_seed(0);
    let (xa, ya) = Augment { saturation: 0.5, ..Default::default() }.apply(&x, &y, &spec);
    assert!(ya.equal(&y), "colour leaves the keypoints alone");
    // Each pixel's grey value stays (up to the clamp to [0, 1]); its colour spread changes.
    let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
    let grey = |t: &Tensor| (t * &w).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let dg = (grey(&xa) - grey(&x)).abs().mean(Kind::Float).double_value(&[]);
    let spread = |t: &Tensor| (t - grey(t).unsqueeze(1)).abs().mean(Kind::Float).double_value(&[]);
    assert!(
        dg < 0.01 && (spread(&xa) - spread(&x)).abs() > 0.002,
        "grey moved {dg}, spread {} -> {}",
        spread(&x),
        spread(&xa)
    );
    // On grey faces it is a config error, not a silent no-op.
    let e = bad(&["data.augment={saturation: 0.3}"]);
    assert!(e.contains("saturation jitters colour") && e.contains("grey"), "{e}");
}

/// HRNet's csv layout (`image_name,scale,center_w,center_h,x0,y0,...`, box side =
/// 200 x scale) read with `crop: {from: box}` cuts the faces that `from: landmarks`
/// cuts when the boxes are the landmarks' extents.
#[test]
fn hrnet_columns_give_their_face_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(l68().join("keypoints.csv")).unwrap();
    let mut out = String::from("image_name,scale,center_w,center_h");
    out += &(0..68).map(|k| format!(",original_{k}_x,original_{k}_y")).collect::<String>();
    out.push('\n');
    for line in csv.lines().skip(1) {
        let (name, rest) = line.split_once(',').unwrap();
        let v: Vec<f32> = rest.split(',').map(|x| x.parse().unwrap()).collect();
        let (xs, ys): (Vec<f32>, Vec<f32>) =
            (v.iter().step_by(2).copied().collect(), v.iter().skip(1).step_by(2).copied().collect());
        let ext = |a: &[f32]| {
            (a.iter().cloned().fold(f32::MAX, f32::min), a.iter().cloned().fold(f32::MIN, f32::max))
        };
        let ((x0, x1), (y0, y1)) = (ext(&xs), ext(&ys));
        let side = (x1 - x0 + 1.0).max(y1 - y0 + 1.0);
        out +=
            &format!("{name},{},{},{},{rest}\n", side / 200.0, (x0 + x1) / 2.0 + 0.5, (y0 + y1) / 2.0 + 0.5);
    }
    let f = dir.path().join("hrnet.csv");
    std::fs::write(&f, out).unwrap();
    let cols =
        "data.columns={image: image_name, first: original_0_x, center: [center_w, center_h], scale: scale}";
    let images = format!("data.images={}", l68().display());
    let (_, boxed) = faces_of(&[
        &format!("data.train={}", f.display()),
        &images,
        cols,
        "data.crop={from: box, margin: 0.2}",
    ]);
    let (_, lm) = faces_of(&["data.crop={from: landmarks, margin: 0.2}"]);
    assert_same_faces(&boxed.train, &lm.train, "hrnet boxes");
    assert_same_faces(&boxed.val, &lm.val, "hrnet boxes");
}
