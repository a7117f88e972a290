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
