//! The Kaggle CSV reader, the split and the synthetic faces.

use fkpnet::config::net::layer_lines;
use fkpnet::data::{self, kaggle, synthetic, PIXELS, TARGETS};
use std::io::Write;

fn header() -> String {
    let mut h = data::target_columns().join(",");
    h.push_str(",Image");
    h
}

fn row(kp: &str, pixels: usize, value: &str) -> String {
    let img = vec![value; pixels].join(" ");
    format!("{kp},{img}")
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn reads_kaggle_rows_with_missing_keypoints() {
    let full = vec!["48.5"; TARGETS].join(",");
    let partial = format!("66.0,39.0{}", ",".repeat(TARGETS - 2));
    let f = write(&format!("{}\n{}\n{}\n", header(), row(&full, PIXELS, "7"), row(&partial, PIXELS, "255")));
    let faces = kaggle::read_training(f.path()).unwrap();
    assert_eq!(faces.len(), 2);
    assert!(faces.is_complete(0) && !faces.is_complete(1));
    assert_eq!(faces.keypoints[TARGETS], 66.0);
    assert!(faces.keypoints[TARGETS + 2].is_nan());
    assert_eq!(faces.pixels[PIXELS], 255);
    let (x, y) = faces.to_tensors(tch::Device::Cpu);
    assert_eq!(x.size(), vec![2, 1, 96, 96]);
    assert!((x.double_value(&[0, 0, 0, 0]) - 7.0 / 255.0).abs() < 1e-6);
    assert!((y.double_value(&[0, 0]) - 0.5 / 48.0).abs() < 1e-6);
}

#[test]
fn malformed_rows_name_file_line_and_column() {
    let full = vec!["48"; TARGETS].join(",");
    let cases = [
        (row(&full, PIXELS - 1, "1"), "9215 pixels, expected 9216"),
        (row(&full, PIXELS + 1, "1"), "more than 9216"),
        (row(&full, PIXELS, "256"), "outside 0..255"),
        (row(&full, PIXELS, "x"), "unexpected character"),
        (row(&full.replacen("48", "abc", 1), PIXELS, "1"), "column left_eye_center_x: `abc` is not a number"),
    ];
    for (bad, want) in cases {
        let f = write(&format!("{}\n{}\n{}\n", header(), row(&full, PIXELS, "1"), bad));
        let err = kaggle::read_training(f.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:3:", f.path().display())), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let f = write("left_eye_center_x,Image\n1,2\n");
    let err = kaggle::read_training(f.path()).unwrap_err().to_string();
    assert!(err.contains("missing column(s) left_eye_center_y"), "{err}");
    let f = write(&format!("{}\n", header()));
    assert!(kaggle::read_training(f.path()).unwrap_err().to_string().contains("no faces"));
}

#[test]
fn split_is_seeded_and_disjoint() {
    let idx: Vec<usize> = (0..100).collect();
    let (a, b) = data::split_indices(&idx, 0.9, 3);
    assert_eq!((a.len(), b.len()), (90, 10));
    assert_eq!(data::split_indices(&idx, 0.9, 3), (a.clone(), b.clone()));
    assert_ne!(data::split_indices(&idx, 0.9, 4).0, a);
    let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(all, idx);
}

#[test]
fn synthetic_faces_are_deterministic_with_keypoints_inside_the_image() {
    let a = synthetic::generate(16, 5);
    assert_eq!(a.len(), 16);
    assert_eq!(a.pixels, synthetic::generate(16, 5).pixels);
    assert_ne!(a.pixels, synthetic::generate(16, 6).pixels);
    assert!(a.keypoints.iter().all(|v| (0.0..96.0).contains(v)));
    // The person's left eye is on the image's right, for an upright face.
    for i in 0..16 {
        assert!(a.keypoints[i * TARGETS] > a.keypoints[i * TARGETS + 2]);
    }
    // The eyes are drawn darker than the face around them.
    let (x, y) = (a.keypoints[0].round() as usize, a.keypoints[1].round() as usize);
    assert!(a.pixels[y * 96 + x] < 128 || a.pixels[y * 96 + x] < a.pixels[48 * 96 + 48]);
}

#[test]
fn layer_lines_finds_block_items() {
    let text = "name: n\n# c\nlayers:\n  - {type: conv}\n  - type: relu\n    name: r\n\n  - {type: pool}\nloss: {type: mse}\n";
    assert_eq!(layer_lines(text), vec![4, 5, 8]);
    assert_eq!(layer_lines("layers:\n- a\n- b\nloss: x\n"), vec![2, 3]);
}
