//! Augmentation, test-time flips, the NaN guard, the CSV cache and `fkpnet bench`.

mod common;
use common::*;

use fkpnet::data::augment::{flip_targets, Affine, Augment, View};
use fkpnet::data::Spec;
use tch::{Device, Kind, Tensor};

#[test]
fn flipping_mirrors_x_and_swaps_left_and_right() {
    // left_eye_center at (60, 30), right_eye_center at (36, 31), nose at (48, 50)
    let mut px = vec![f32::NAN; 30];
    px[0..4].copy_from_slice(&[60.0, 30.0, 36.0, 31.0]);
    px[20..22].copy_from_slice(&[48.0, 50.0]);
    let y = (Tensor::from_slice(&px).view([1, 30]) - 48.0) / 48.0;
    let spec = Spec::kaggle();
    let f = Vec::<f32>::try_from((flip_targets(&y, &spec) * 48.0 + 48.0).flatten(0, -1)).unwrap();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
    // The mirrored right eye (95 - 36 = 59) is now the person's left eye, and vice versa.
    assert!(close(f[0], 59.0) && close(f[1], 31.0), "{:?}", &f[0..4]);
    assert!(close(f[2], 35.0) && close(f[3], 30.0));
    assert!(close(f[20], 47.0) && close(f[21], 50.0));
    assert!(f[4].is_nan());
    // An involution: flipping twice gives the original.
    let twice = flip_targets(&flip_targets(&y, &spec), &spec);
    assert!(twice.nan_to_num(0.0, None::<f64>, None::<f64>).allclose(
        &y.nan_to_num(0.0, None::<f64>, None::<f64>),
        1e-6,
        1e-6,
        false
    ));
    let flip = &spec.keypoints.flip;
    let mut seen = flip.clone();
    seen.sort();
    assert_eq!(seen, (0..15).collect::<Vec<_>>());
    assert!(flip.iter().enumerate().all(|(i, &j)| flip[j] == i));
}

#[test]
fn geometric_augmentation_moves_keypoints_with_the_face() {
    tch::manual_seed(7);
    let n = 32;
    let (x, y) = blob_faces(n);
    let aug = Augment { flip: true, shift: 6.0, scale: 0.15, rotate: 20.0, ..Default::default() };
    let (xa, ya) = aug.apply(&x, &y, &Spec::kaggle());
    let ya = ya * 48.0 + 48.0;
    let mut moved = 0;
    for i in 0..n {
        let img = xa.get(i).get(0);
        let idx = img.flatten(0, -1).argmax(0, false).int64_value(&[]);
        let (py, px) = ((idx / 96) as f64, (idx % 96) as f64);
        let (kx, ky) = (ya.double_value(&[i, 20]), ya.double_value(&[i, 21]));
        assert!(
            (kx - px).abs() <= 1.5 && (ky - py).abs() <= 1.5,
            "face {i}: blob at ({px}, {py}), keypoint at ({kx}, {ky})"
        );
        if (kx - 40.0).abs() > 1.0 || (ky - 55.0).abs() > 1.0 {
            moved += 1;
        }
    }
    assert!(moved > n / 2, "the faces were actually transformed");
    // A keypoint pushed out of the image is dropped (NaN), not kept at a wrong place.
    let far = Augment { shift: 90.0, ..Default::default() };
    let (_, yf) = far.apply(&x, &y, &Spec::kaggle());
    assert!(Vec::<f32>::try_from(yf.select(1, 20)).unwrap().iter().any(|v| v.is_nan()));
}

/// A bright 3x3 blob centred on (40, 55) in `n` black faces, and targets with the nose
/// tip there (every other keypoint missing).
fn blob_faces(n: i64) -> (Tensor, Tensor) {
    let x = Tensor::zeros([n, 1, 96, 96], (Kind::Float, Device::Cpu));
    let _ = x.narrow(2, 54, 3).narrow(3, 39, 3).fill_(1.0);
    let mut kp = vec![f32::NAN; 30];
    kp[20] = 40.0;
    kp[21] = 55.0;
    (x, ((Tensor::from_slice(&kp).view([1, 30]) - 48.0) / 48.0).repeat([n, 1]))
}

#[test]
fn translation_moves_faces_and_keypoints_alike() {
    let (x, y) = blob_faces(1);
    let view = Affine::uniform(1, Device::Cpu, View { dx: 3.0, dy: -2.0, ..View::IDENTITY }, 48.0);
    let (xs, ys) = (view.faces(&x), view.targets(&y, 48.0) * 48.0 + 48.0);
    // The blob is now centred on (43, 53), all of it: whole-pixel shifts copy pixels
    // exactly (no blur).
    let blob = xs.get(0).get(0).narrow(0, 52, 3).narrow(1, 42, 3);
    assert_eq!(blob.sum(Kind::Float).double_value(&[]), 9.0);
    assert_eq!(xs.sum(Kind::Float).double_value(&[]), 9.0);
    assert_eq!((ys.double_value(&[0, 20]), ys.double_value(&[0, 21])), (43.0, 53.0));
}

/// The intensity-weighted centre of each face's pixels `[N, 1, 96, 96]`, in pixels.
fn centroids(x: &Tensor) -> Vec<(f64, f64)> {
    let w = x.select(1, 0).to_kind(Kind::Double);
    let idx = Tensor::arange(96, (Kind::Double, Device::Cpu));
    let total = w.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double);
    let cx = (&w * idx.view([1, 1, 96])).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double) / &total;
    let cy = (&w * idx.view([1, 96, 1])).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double) / &total;
    (0..x.size()[0]).map(|i| (cx.double_value(&[i]), cy.double_value(&[i]))).collect()
}

#[test]
fn rotated_and_zoomed_keypoints_land_on_their_pixels_to_a_tenth_of_a_pixel() {
    // Rotations and zooms turn about the image centre, pixel 47.5 (the grid's origin),
    // not about 48: a keypoint moved about the wrong centre would be off by up to
    // half a pixel times the angle, 0.26 px at 25 degrees for this blob.
    let (x, y) = blob_faces(4);
    let angles = Tensor::from_slice(&[25.0f32, -25.0, 10.0, 0.0]).deg2rad();
    let zooms = Tensor::from_slice(&[1.0f32, 1.0, 1.2, 0.8]);
    let view = Affine::new(
        zooms,
        angles,
        Tensor::zeros([4], (Kind::Float, Device::Cpu)),
        Tensor::zeros([4], (Kind::Float, Device::Cpu)),
    );
    let (xv, yv) = (view.faces(&x), view.targets(&y, 48.0) * 48.0 + 48.0);
    for (i, (cx, cy)) in centroids(&xv).into_iter().enumerate() {
        let (kx, ky) = (yv.double_value(&[i as i64, 20]), yv.double_value(&[i as i64, 21]));
        assert!(
            (kx - cx).abs() < 0.1 && (ky - cy).abs() < 0.1,
            "view {i}: blob at ({cx:.3}, {cy:.3}), keypoint at ({kx:.3}, {ky:.3})"
        );
    }
    // Predictions on a view move back to where they were: untargets inverts targets.
    let k = Tensor::rand([4, 30], (Kind::Float, Device::Cpu)) - 0.5;
    assert!(view.untargets(&view.targets(&k, 48.0), 48.0).allclose(&k, 1e-5, 1e-5, false));
}

#[test]
fn erasing_blacks_out_one_rectangle_and_keeps_the_labels() {
    tch::manual_seed(3);
    let n = 64;
    let x = Tensor::ones([n, 1, 96, 96], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([n, 30], (Kind::Float, Device::Cpu));
    let (xa, ya) = Augment { erase: 1.0, ..Default::default() }.apply(&x, &y, &Spec::kaggle());
    assert!(ya.equal(&y), "labels unchanged");
    for i in 0..n {
        let black = xa.get(i).get(0).eq(0.0);
        let pixels = black.sum(Kind::Float).double_value(&[]);
        let area = pixels / (96.0 * 96.0);
        assert!((0.015..=0.34).contains(&area), "face {i}: {area} of the image erased");
        // One axis-aligned rectangle: its pixels are its rows times its columns.
        let rows = black.any_dim(1, false).sum(Kind::Float).double_value(&[]);
        let cols = black.any_dim(0, false).sum(Kind::Float).double_value(&[]);
        assert_eq!(rows * cols, pixels, "face {i}");
    }
    let (xh, _) = Augment { erase: 0.5, ..Default::default() }.apply(&x, &y, &Spec::kaggle());
    let erased = xh.eq(0.0).flatten(1, -1).any_dim(1, false).sum(Kind::Float).double_value(&[]);
    assert!((16.0..=48.0).contains(&erased), "about half the faces erased: {erased} of 64");
    assert!(Augment { erase: 1.5, ..Default::default() }.validate().unwrap_err().contains("probability"));
}

#[test]
fn augmented_training_and_test_time_flips_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = root().join("solvers/baseline_adam.yaml");
    let out = fkpnet(
        &[
            "train",
            s.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "--name",
            "aug",
            "-q",
            "--set",
            &format!("data.train={}", mini("training.csv")),
            "--set",
            "max_iter=20",
            "--set",
            "test_interval=10",
            "--set",
            "display=10",
            "--set",
            "data.augment={flip: true, shift: 3, rotate: 8, scale: 0.05, brightness: 0.1, contrast: 0.1}",
            "--set",
            "test={flip: true}",
        ],
        d,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(d.join("runs/aug/config.yaml")).unwrap();
    assert!(cfg.contains("augment:") && cfg.contains("flip: true"), "{cfg}");
    let out = fkpnet(&["test", "runs/aug"], d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let overall = |out: &std::process::Output| -> f64 {
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("overall")).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // Test-time shifts change the prediction after training, without retraining.
    let shifted = fkpnet(&["test", "runs/aug", "--set", "test.shift=2"], d);
    assert!(shifted.status.success(), "{}", String::from_utf8_lossy(&shifted.stderr));
    assert!(overall(&shifted).is_finite() && overall(&shifted) != overall(&out));
    let unflipped = fkpnet(&["test", "runs/aug", "--set", "test.flip=false"], d);
    assert!(overall(&unflipped) != overall(&out));
    let bad = fkpnet(&["test", "runs/aug", "--set", "base_lr=1"], d);
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        e.contains(
            "only test-time keys can change after training: test.flip, test.shift, test.rotate, test.scale"
        ),
        "{e}"
    );
    // Rotated and zoomed views change it too, each on its own.
    let turned = fkpnet(&["test", "runs/aug", "--set", "test.rotate=6"], d);
    assert!(turned.status.success(), "{}", String::from_utf8_lossy(&turned.stderr));
    let zoomed = fkpnet(&["test", "runs/aug", "--set", "test.scale=0.05"], d);
    let (t, z) = (overall(&turned), overall(&zoomed));
    assert!(t.is_finite() && z.is_finite() && t != overall(&out) && z != overall(&out) && t != z);
    let bad = fkpnet(&["test", "runs/aug", "--set", "test.rotate=90"], d);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("test.rotate must be between 0 and 45 degrees, got 90")
    );
    let bad = fkpnet(&["test", "runs/aug", "--set", "test.shift=-1"], d);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("test.shift must be between 0 and 24"));
    let out = fkpnet(
        &[
            "extract",
            &mini("training.csv"),
            "seen",
            "--draw",
            "--limit",
            "3",
            "--augment",
            d.join("runs/aug/config.yaml").to_str().unwrap(),
        ],
        d,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.join("seen/3.png").is_file());
    let bad = fkpnet(&["config", s.to_str().unwrap(), "--set", "data.augment={rotate: -5}"], d);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("data.augment.rotate must be >= 0"));
}

#[test]
fn a_non_finite_loss_stops_with_a_diagnosis_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = root().join("solvers/baseline_adam.yaml");
    let base = [
        "train",
        s.to_str().unwrap(),
        "--runs-dir",
        "runs",
        "-q",
        "--set",
        "type=SGD",
        "--set",
        "base_lr=1e12",
        "--set",
        "max_iter=6",
        "--set",
        "test_interval=0",
        "--set",
        "display=1",
    ];
    let data = format!("data.train={}", mini("training.csv"));
    let out = fkpnet(&[&base[..], &["--set", &data, "--name", "stop"]].concat(), d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("iteration ") && e.contains("the loss became") && e.contains("base_lr"), "{e}");
    assert!(e.contains("first non-finite gradient is in `"), "{e}");
    assert!(
        fkpnet::run::read_metrics(&d.join("runs/stop/metrics.csv")).unwrap().len() >= 1,
        "rows so far kept"
    );
    let out = fkpnet(&[&base[..], &["--set", &data, "--name", "skip", "--on-nan", "skip"]].concat(), d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(d.join("runs/skip/train.log")).unwrap();
    assert!(log.contains("batch skipped (on_nan: skip)"), "{log}");
}

#[test]
fn parsed_csvs_are_cached_and_the_cache_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("FKPNET_CACHE", dir.path().join("cache"));
    let csv = dir.path().join("t.csv");
    std::fs::copy(mini("training.csv"), &csv).unwrap();
    let a = fkpnet::data::kaggle::read(&csv).unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one cache file written");
    let b = fkpnet::data::kaggle::read(&csv).unwrap();
    assert_eq!(a.faces.pixels, b.faces.pixels);
    assert_eq!(a.ids, b.ids);
    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p == q || (p.is_nan() && q.is_nan()));
    assert!(same(&a.faces.keypoints, &b.faces.keypoints));
    // Change the CSV: the cache is stale and the new rows are read.
    let text = std::fs::read_to_string(&csv).unwrap();
    let first_row = text.lines().nth(1).unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&csv, format!("{text}{first_row}\n")).unwrap();
    assert_eq!(fkpnet::data::kaggle::read(&csv).unwrap().ids.len(), a.ids.len() + 1);
}

#[test]
fn bench_prints_throughput_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let net = root().join("nets/lenet.yaml");
    let out =
        fkpnet(&["bench", net.to_str().unwrap(), "--iterations", "2", "--batch", "8", "--json"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["train_img_per_s", "infer_img_per_s", "train_gflop_per_s", "peak_mem_mib"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert_eq!(v["layout"].as_str(), Some("channels_last"), "conv nets default to channels-last on CPU");
    // The CPU's measured peak, and the step's share of it: a training step cannot do
    // more fp32 arithmetic per second than the cores' FMA units.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let peak = v["cpu_peak"]["fp32_gflop_per_s"].as_f64().unwrap();
        assert!(peak > v["train_gflop_per_s"].as_f64().unwrap(), "{v}");
        let pct = v["train_pct_of_peak"].as_f64().unwrap();
        assert!(pct > 0.0 && pct < 100.0, "{v}");
    }
    let out = fkpnet(
        &[
            "bench",
            net.to_str().unwrap(),
            "--iterations",
            "1",
            "--batch",
            "4",
            "--precision",
            "bf16",
            "--layout",
            "nchw",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bf16 nchw"));
}

#[test]
fn early_stop_and_plateau_watch_the_val_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = root().join("solvers/baseline_adam.yaml");
    let data = format!("data.train={}", mini("training.csv"));
    // base_lr 0: the val loss never improves after the first test.
    let common = [
        "train",
        s.to_str().unwrap(),
        "--runs-dir",
        "runs",
        "--set",
        &data,
        "--set",
        "base_lr=0",
        "--set",
        "max_iter=40",
        "--set",
        "test_interval=2",
        "--set",
        "display=2",
    ];
    let out = fkpnet(&[&common[..], &["--name", "es", "--set", "early_stop=2"]].concat(), d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("early stop at iteration 4"), "{e}");
    let rows = fkpnet::run::read_metrics(&d.join("runs/es/metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().iter, 4);
    assert!(d.join("runs/es/best.safetensors").is_file() && d.join("runs/es/weights.safetensors").is_file());
    let out = fkpnet(
        &[
            &common[..],
            &[
                "--name",
                "pl",
                "-q",
                "--set",
                "lr_policy=plateau",
                "--set",
                "gamma=0.5",
                "--set",
                "patience=1",
                "--set",
                "max_iter=6",
            ],
        ]
        .concat(),
        d,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(d.join("runs/pl/train.log")).unwrap();
    assert_eq!(
        log.matches("lr x gamma").count(),
        2,
        "tests at 2 and 4 did not improve (the final one at 6 ends training):\n{log}"
    );
    let e = err(&["config", s.to_str().unwrap(), "--set", "lr_policy=plateau"], d);
    assert!(e.contains("needs `gamma`"), "{e}");
}
