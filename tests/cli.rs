//! The `fkpnet` command line as a user drives it.

mod common;
use common::*;

use std::path::Path;

#[test]
fn summary_shapes_match_the_study() {
    let r = root();
    let lenet = ok(&["summary", "nets/lenet.yaml"], &r);
    assert_eq!(
        shapes(&lenet, &["relu"]),
        "16x94x94 16x47x47 32x45x45 32x22x22 64x20x20 64x10x10 128x8x8 128x4x4 256x2x2 256x1x1 500 500 500 500 30"
            .split(' ')
            .collect::<Vec<_>>()
    );
    assert!(lenet.contains("1,287,350"), "{lenet}");
    let vgg = ok(&["summary", "nets/vgg.yaml"], &r);
    let want = "64x94x94 64x92x92 64x46x46 128x44x44 128x42x42 128x21x21 256x19x19 256x17x17 256x8x8 512 512 512 512 30";
    // dropout rows repeat the dense shape
    assert_eq!(shapes(&vgg, &["relu"]), want.split(' ').collect::<Vec<_>>());
    assert!(vgg.contains("2.02G"), "VGG forward is about 2 GFLOP per image:\n{vgg}");
    let base = ok(&["summary", "nets/baseline.yaml"], &r);
    assert_eq!(shapes(&base, &["relu"]), vec!["500", "30"]);
    assert!(base.contains("xavier(fan_in)"), "the filler in force is shown");
    // A solver file shows its net; --set reaches net keys.
    let s = ok(&["summary", "solvers/adam.yaml", "--set", "layers.pool2.round_mode=ceil"], &r);
    assert!(s.contains("32x23x23"), "Caffe's ceil rounding: 45 -> 23\n{s}");
}

#[test]
fn config_errors_name_file_line_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let net =
        |layers: &str| format!("name: t\ninput: [1, 96, 96]\nlayers:\n{layers}loss: {{type: euclidean}}\n");
    let p = write(d, "unknown.yaml", &net("  - {type: dense, num_output: 30}\nextra_key: 1\n"));
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("unknown.yaml:5:1: unknown key `extra_key`") && e.contains("5 | extra_key: 1"), "{e}");

    let p = write(
        d,
        "typo.yaml",
        &net("  - {type: conv, num_output: 8, kernel_sise: 3}\n  - {type: dense, num_output: 30}\n"),
    );
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("typo.yaml:4: layer `data_conv` (#1)") && e.contains("kernel_sise"), "{e}");

    let p = write(d, "type.yaml", &net("  - {type: dense, num_output: many}\n"));
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("type.yaml:4: layer `data_dense`") && e.contains("expected an integer"), "{e}");

    let p = write(d, "shape.yaml", &net("  - {type: pool, kernel_size: 2, stride: 2}\n  - {type: conv, name: big, num_output: 8, kernel_size: 60}\n  - {type: dense, num_output: 30}\n"));
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(
        e.contains("shape.yaml:5: layer `big` (#2)") && e.contains("larger than") && e.contains("1x48x48"),
        "{e}"
    );

    let p = write(d, "kind.yaml", &net("  - {type: convolution, num_output: 8}\n"));
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(
        e.contains("unknown layer type `convolution` (did you mean `conv`?)")
            && e.contains("valid types: conv, pool, dense"),
        "{e}"
    );

    // A net on its own may predict any number of keypoints, but x and y of each.
    let p = write(d, "out.yaml", &net("  - {type: dense, name: fc, num_output: 9}\n"));
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("outputs 9") && e.contains("vector of even length"), "{e}");
    // With Kaggle's data it must predict its 15.
    write(d, "out10.yaml", &net("  - {type: dense, name: fc, num_output: 10}\n"));
    let s = write(
        d,
        "out_solver.yaml",
        &format!("net: out10.yaml\ndata: {{train: synthetic}}\nbase_lr: 0.1\nmax_iter: 1\nbatch_size: 1\n"),
    );
    let e = err(&["summary", s.to_str().unwrap()], d);
    assert!(e.contains("outputs 10") && e.contains("num_output: 30"), "{e}");

    let p = write(
        d,
        "drop.yaml",
        &net("  - {type: dropout, dropout_ratio: 1.5}\n  - {type: dense, num_output: 30}\n"),
    );
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("dropout_ratio must be in [0, 1)"), "{e}");

    write(d, "net.yaml", &net("  - {type: dense, name: fc, num_output: 30}\n"));
    let p = write(
        d,
        "s.yaml",
        "net: net.yaml\ndata: {train: synthetic}\nbase_lr: 0.1\nmax_iter: 1\nbatch_size: 0\n",
    );
    let e = err(&["train", p.to_str().unwrap()], d);
    assert!(e.contains("batch_size must be >= 1, got 0"), "{e}");
    let p = write(
        d,
        "s2.yaml",
        "net: net.yaml\ndata: {train: synthetic}\nbase_lr: 0.1\nmax_iter: 1\nbatch_size: 2\nbase_lrr: 1\n",
    );
    let e = err(&["train", p.to_str().unwrap()], d);
    assert!(e.contains("s2.yaml:6:1: unknown key `base_lrr` (did you mean `base_lr`?)"), "{e}");
}

#[test]
fn set_overrides_are_checked() {
    let r = root();
    let e = err(&["config", "solvers/adam.yaml", "--set", "base_lrr=1"], &r);
    assert!(
        e.contains("unknown key `base_lrr`")
            && e.contains("did you mean `base_lr`")
            && e.contains("momentum2"),
        "{e}"
    );
    let e = err(&["config", "solvers/adam.yaml", "--set", "base_lr=fast"], &r);
    assert!(e.contains("--set base_lr=fast") && e.contains("invalid type"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "layers.fc9.num_output=3"], &r);
    assert!(e.contains("no layer `fc9`") && e.contains("conv1"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "layers.fc1.kernel_size=3"], &r);
    assert!(e.contains("unknown key `kernel_size`") && e.contains("num_output"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "data.trian=x"], &r);
    assert!(e.contains("did you mean `train`"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "noequals"], &r);
    assert!(e.contains("KEY=VALUE"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "loss.w=5"], &r);
    assert!(e.contains("applies to wing only"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "loss.type=wing", "--set", "loss.epsilon=0"], &r);
    assert!(e.contains("`epsilon` must be a finite number > 0"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "loss.beta=2"], &r);
    assert!(e.contains("`beta` applies to smooth_l1 only, not euclidean"), "{e}");
    let wing = ok(&["config", "solvers/adam.yaml", "--set", "loss.type=wing"], &r);
    assert!(
        wing.contains("type: wing") && wing.contains("w: 10.0") && wing.contains("epsilon: 2.0"),
        "{wing}"
    );

    let out = ok(
        &[
            "config",
            "solvers/adam.yaml",
            "--set",
            "base_lr=3e-4",
            "--set",
            "net=nets/vgg.yaml",
            "--set",
            "layers.drop1.dropout_ratio=0.3",
            "--set",
            "data.train=synthetic",
        ],
        &r,
    );
    let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(v["base_lr"].as_f64(), Some(3e-4));
    assert_eq!(v["net"]["name"].as_str(), Some("vgg"));
    assert_eq!(v["net"]["layers"][17]["dropout_ratio"].as_f64(), Some(0.3));
    assert_eq!(v["data"]["train"].as_str(), Some("synthetic"));
    // Nested mappings take --set too; a set key keeps its siblings from the file.
    let out = ok(
        &["config", "solvers/lenet_best.yaml", "--set", "data.augment.rotate=15", "--set", "test.flip=false"],
        &r,
    );
    let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(v["data"]["augment"]["rotate"].as_f64(), Some(15.0));
    assert_eq!(v["data"]["augment"]["shift"].as_f64(), Some(4.0));
    assert_eq!(v["test"]["flip"].as_bool(), Some(false));
    let e = err(&["config", "solvers/adam.yaml", "--set", "data.augment.rotat=1"], &r);
    assert!(e.contains("in data.augment") && e.contains("did you mean `rotate`"), "{e}");
    let e = err(&["config", "solvers/adam.yaml", "--set", "test.flip.x=1"], &r);
    assert!(e.contains("`test.flip` has no sub-keys"), "{e}");
    // Relative paths in --set are relative to the current directory, in files to the file.
    let solver = r.join("solvers/adam.yaml");
    let out = ok(&["config", solver.to_str().unwrap(), "--set", "data.train=../x.csv"], &r.join("nets"));
    assert!(out.contains(&format!("train: {}", r.join("x.csv").display())), "{out}");
}

#[test]
fn missing_data_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let s = root().join("solvers/adam.yaml");
    let e = err(&["train", s.to_str().unwrap(), "--set", "data.train=nowhere/training.csv"], dir.path());
    assert!(
        e.contains("nowhere/training.csv does not exist")
            && e.contains("synthetic")
            && e.contains("data/README.md"),
        "{e}"
    );
}

fn tensor_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        tch::Tensor::read_safetensors(path).unwrap().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

#[test]
fn lenet_trains_on_faces_mini_and_writes_a_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let s = root().join("solvers/adam.yaml");
    let csv = mini_csv();
    let args = [
        "train",
        s.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--set",
        &format!("data.train={csv}"),
        "--set",
        "max_iter=60",
        "--set",
        "batch_size=32",
        "--set",
        "test_interval=20",
        "--set",
        "display=10",
    ];
    let stdout = ok(&args, dir.path());
    let run = runs.join("adam_lenet");
    assert_eq!(stdout.trim(), run.display().to_string());
    for f in ["config.yaml", "metrics.csv", "weights.safetensors", "best.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let rows = fkpnet::run::read_metrics(&run.join("metrics.csv")).unwrap();
    let iters: Vec<i64> = rows.iter().map(|r| r.iter).collect();
    assert_eq!(iters, vec![0, 10, 20, 30, 40, 50, 60]);
    let val: Vec<f64> = rows.iter().filter_map(|r| r.val_rmse_px).collect();
    assert_eq!(val.len(), 4, "tests at 0, 20, 40 and the end");
    let train: Vec<f64> = rows.iter().filter_map(|r| r.train_loss).collect();
    assert!(train.last().unwrap() < &(train[0] * 0.2), "train loss falls: {train:?}");
    assert!(val.last().unwrap() < &(val[0] * 0.5), "val RMSE falls: {val:?}");
    assert!(rows[0].val_rmse_px.unwrap() > 10.0, "starts far from the faces (Caffe: 18 px)");
    assert_eq!(
        tensor_names(&run.join("weights.safetensors")),
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3", "fc4", "out"]
            .iter()
            .flat_map(|l| [format!("{l}.bias"), format!("{l}.weight")])
            .collect::<Vec<_>>()
    );

    // Never overwrite: the default name gets a suffix, an explicit existing name fails.
    let e = err(&[&args[..], &["--name", "adam_lenet"]].concat(), dir.path());
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fkpnet::run::read_metrics(&run.join("metrics.csv")).unwrap(), rows);
}

#[test]
fn a_runs_config_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let s = root().join("solvers/baseline_adam.yaml");
    let csv = mini_csv();
    ok(
        &[
            "train",
            s.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "--name",
            "a",
            "--set",
            &format!("data.train={csv}"),
            "--set",
            "max_iter=12",
            "--set",
            "test_interval=4",
            "--set",
            "display=2",
            "--set",
            "random_seed=7",
            "--set",
            "data.labels=masked",
        ],
        dir.path(),
    );
    let cfg = runs.join("a/config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("num_output: 500")
            && text.contains("labels: masked")
            && text.contains("random_seed: 7")
    );
    ok(&["train", cfg.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap(), "--name", "b"], dir.path());
    let strip = |p: &Path| {
        fkpnet::run::read_metrics(p)
            .unwrap()
            .into_iter()
            .map(|r| fkpnet::run::MetricsRow { seconds: 0.0, ..r })
            .collect::<Vec<_>>()
    };
    let (a, b) = (strip(&runs.join("a/metrics.csv")), strip(&runs.join("b/metrics.csv")));
    assert_eq!(a.len(), 7);
    assert_eq!(a, b, "same config + seed = same curve");
}

#[test]
fn trains_on_built_in_synthetic_faces() {
    let dir = tempfile::tempdir().unwrap();
    let s = root().join("solvers/baseline_adam.yaml");
    ok(
        &[
            "train",
            s.to_str().unwrap(),
            "--runs-dir",
            "runs",
            "--set",
            "data.train=synthetic",
            "--set",
            "data.synthetic.size=200",
            "--set",
            "max_iter=30",
            "--set",
            "test_interval=30",
            "--set",
            "display=10",
            "-q",
        ],
        dir.path(),
    );
    let rows = fkpnet::run::read_metrics(&dir.path().join("runs/baseline_adam/metrics.csv")).unwrap();
    let val: Vec<f64> = rows.iter().filter_map(|r| r.val_rmse_px).collect();
    assert_eq!(val.len(), 2);
    assert!(val[1] < val[0], "{val:?}");
}

#[test]
fn every_schema_key_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/config.md")).unwrap();
    let missing: Vec<String> = fkpnet::config::all_keys()
        .into_iter()
        .filter(|k| {
            let key = k.rsplit('.').next().unwrap();
            !doc.contains(&format!("`{key}`"))
        })
        .collect();
    assert!(missing.is_empty(), "docs/config.md lacks: {missing:?}");
    for k in fkpnet::layers::KINDS {
        assert!(doc.contains(&format!("### `{}`", k.name)), "docs/config.md lacks layer type {}", k.name);
    }
}

#[test]
fn base_inheritance_patches_layers_by_name() {
    let r = root();
    let out = ok(&["config", "solvers/vgg_drop03_adam.yaml"], &r);
    let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(v["net"]["name"].as_str(), Some("vgg_drop03"));
    let layers = v["net"]["layers"].as_sequence().unwrap();
    let drop: Vec<f64> = layers.iter().filter_map(|l| l["dropout_ratio"].as_f64()).collect();
    assert_eq!(drop, vec![0.3, 0.3]);
    assert_eq!(layers.len(), 22, "all of vgg.yaml's layers");
    assert_eq!(v["base_lr"].as_f64(), Some(0.001), "from vgg_adam.yaml");
    assert!(
        v["data"]["train"].as_str().unwrap().ends_with("/data/training.csv"),
        "base's path, relative to the base"
    );
    let sgd: serde_yaml::Value =
        serde_yaml::from_str(&ok(&["config", "solvers/lenet_sgd.yaml"], &r)).unwrap();
    assert_eq!((sgd["type"].as_str(), sgd["stepsize"].as_i64()), (Some("SGD"), Some(800)));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vgg = r.join("nets/vgg.yaml");
    let p = write(
        d,
        "bad.yaml",
        &format!("base: {}\nlayers:\n  - {{name: drop9, dropout_ratio: 0.1}}\n", vgg.display()),
    );
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("no layer `drop9` in the base net") && e.contains("drop1"), "{e}");
    write(d, "a.yaml", "base: b.yaml\n");
    let p = write(d, "b.yaml", "base: a.yaml\n");
    let e = err(&["summary", p.to_str().unwrap()], d);
    assert!(e.contains("loop"), "{e}");
}

#[test]
fn an_unwritable_runs_dir_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A file where the runs directory should be: nothing can be created under it.
    write(d, "runs", "not a directory");
    let s = root().join("solvers/baseline_adam.yaml");
    let e = err(&["train", s.to_str().unwrap(), "--runs-dir", "runs/x", "--set", "data.train=synthetic"], d);
    assert!(e.contains("cannot write run directories in runs/x") && e.contains("--runs-dir"), "{e}");
}

#[test]
fn threads_option_sets_libtorchs_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let net = root().join("nets/baseline.yaml");
    let out = ok(
        &["bench", net.to_str().unwrap(), "--iterations", "1", "--batch", "2", "--json", "--threads", "1"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["threads"], 1, "{out}");
    let e = err(&["--threads", "0", "summary", net.to_str().unwrap()], dir.path());
    assert!(e.contains("--threads"), "{e}");
}

#[test]
fn layers_lists_every_kind_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["layers"], dir.path());
    for k in fkpnet::layers::KINDS {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(k.name))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains(k.about) && line.contains(&(k.fields)().join(", ")), "{line}");
    }
    // One column for the descriptions, whatever the name lengths.
    let starts: std::collections::HashSet<usize> = out
        .lines()
        .map(|l| l.find("  ").unwrap() + l[l.find("  ").unwrap()..].find(|c: char| c != ' ').unwrap())
        .collect();
    assert_eq!(starts.len(), 1, "{out}");
}
