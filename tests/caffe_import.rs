//! `fkpnet import-caffe` on Caffe-style prototxt fixtures of the study's nets.

mod common;
use common::*;

use std::path::Path;

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/caffe").join(name).display().to_string()
}

fn import_and_summarise(net: &str, dir: &Path) -> Vec<String> {
    let out = fkpnet(&["import-caffe", &fixture(&format!("{net}.prototxt")), "-o", "conv"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = dir.join(format!("conv/{net}.yaml"));
    let out = fkpnet(&["summary", yaml.to_str().unwrap()], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    shapes(&String::from_utf8(out.stdout).unwrap(), &["relu", "dropout"])
}

#[test]
fn the_study_nets_convert_with_caffe_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Caffe rounds pooling up: 45 -> 23, 21 -> 11, 9 -> 5, 3 -> 2 (the study's floor gives 22, 10, 4, 1).
    assert_eq!(
        import_and_summarise("lenet", d),
        "16x94x94 16x47x47 32x45x45 32x23x23 64x21x21 64x11x11 128x9x9 128x5x5 256x3x3 256x2x2 500 500 500 500 30"
            .split(' ')
            .collect::<Vec<_>>()
    );
    assert_eq!(
        import_and_summarise("vgg", d),
        "64x94x94 64x92x92 64x46x46 128x44x44 128x42x42 128x21x21 256x19x19 256x17x17 256x9x9 512 512 30"
            .split(' ')
            .collect::<Vec<_>>()
    );
    assert_eq!(import_and_summarise("baseline", d), vec!["500", "30"]);
    let lenet = std::fs::read_to_string(d.join("conv/lenet.yaml")).unwrap();
    assert!(lenet.contains("round_mode: ceil") && lenet.contains("{type: xavier, variance_norm: fan_in}"));
    assert!(lenet.contains("param: [{lr_mult: 1.0, decay_mult: 1.0}, {lr_mult: 2.0, decay_mult: 1.0}]"));
    // Nothing is overwritten.
    let out = fkpnet(&["import-caffe", &fixture("lenet.prototxt"), "-o", "conv"], d);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists"));
}

#[test]
fn the_solver_converts_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = fkpnet(
        &[
            "import-caffe",
            &fixture("baseline.prototxt"),
            &fixture("lenet_solver.prototxt"),
            "-o",
            "conv",
            "--data",
            "synthetic",
        ],
        d,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let solver = d.join("conv/lenet_solver.yaml");
    let v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&solver).unwrap()).unwrap();
    assert_eq!(v["type"].as_str(), Some("Adam"));
    assert_eq!(v["base_lr"].as_f64(), Some(0.001));
    assert_eq!(v["momentum2"].as_f64(), Some(0.999));
    assert_eq!(v["batch_size"].as_i64(), Some(64), "from the TRAIN data layer");
    assert_eq!(v["test_iter"].as_i64(), Some(3), "1 batch of 169 test faces = 3 batches of 64");
    assert_eq!(v["snapshot_prefix"].as_str(), Some("lenet"));
    assert_eq!(v["device"].as_str(), Some("cpu"));
    assert_eq!(v["net"].as_str(), Some("baseline.yaml"));
    let out = fkpnet(
        &[
            "train",
            solver.to_str().unwrap(),
            "-q",
            "--set",
            "max_iter=3",
            "--set",
            "data.synthetic.size=100",
            "--set",
            "snapshot=0",
        ],
        d,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_resnet_block_with_batchnorm_scale_eltwise_and_concat_converts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = fkpnet(&["import-caffe", &fixture("resnet_block.prototxt"), "-o", "conv"], d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(notes.contains("layer `scale_conv1`: folded into the BatchNorm"), "{notes}");
    let yaml = std::fs::read_to_string(d.join("conv/resblock.yaml")).unwrap();
    // BatchNorm + Scale -> one batchnorm; Scale without bias_term keeps the shift at 0.
    assert!(yaml.contains("{type: batchnorm, name: bn_conv1, moving_average_fraction: 0.9, eps: 0.00001, affine: true, top: conv1}"), "{yaml}");
    assert!(yaml.contains("param: [{lr_mult: 1, decay_mult: 1}, {lr_mult: 0, decay_mult: 0}]"), "{yaml}");
    assert!(!yaml.contains("Scale") && !yaml.contains("name: scale"), "{yaml}");
    // In-place layers: `conv1` after the ReLU is the ReLU's output, as in Caffe.
    let summary = ok(&["summary", "conv/resblock.yaml"], d);
    assert!(
        summary.contains("<- conv1_relu + bn2a sum") && summary.contains("<- res2 + conv1_relu axis 1"),
        "{summary}"
    );
    assert_eq!(
        shapes(&summary, &[]),
        ["8x48x48", "8x48x48", "8x48x48", "8x48x48", "8x48x48", "8x48x48", "16x48x48", "16x6x6", "30"]
    );
}

#[test]
fn bad_prototxt_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let input = "name: \"t\"\nlayer {\n  name: \"data\"\n  type: \"Input\"\n  top: \"data\"\n  input_param { shape { dim: 1 dim: 1 dim: 96 dim: 96 } }\n}\n";
    let bn = write(
        "bn.prototxt",
        &format!(
            "{input}layer {{\n  name: \"bn1\"\n  type: \"LRN\"\n  bottom: \"data\"\n  top: \"bn1\"\n}}\n"
        ),
    );
    let e = String::from_utf8(fkpnet(&["import-caffe", &bn, "-o", "o"], d).stderr).unwrap();
    assert!(e.contains("bn.prototxt:9: layer `bn1`: layer type `LRN` is not supported"), "{e}");
    assert!(e.contains("supported: ") && e.contains("PReLU") && e.contains("Input"), "{e}");
    let scale = write(
        "scale.prototxt",
        &format!("{input}layer {{\n  name: \"s\"\n  type: \"Scale\"\n  bottom: \"data\"\n  top: \"s\"\n}}\n"),
    );
    let e = String::from_utf8(fkpnet(&["import-caffe", &scale, "-o", "o"], d).stderr).unwrap();
    assert!(
        e.contains("layer `s`: a Scale layer is supported only right after a BatchNorm (as its affine part)"),
        "{e}"
    );

    let unknown = write("unknown.prototxt", &format!("{input}layer {{\n  name: \"c\"\n  type: \"Convolution\"\n  bottom: \"data\"\n  top: \"c\"\n  convolution_param {{ num_output: 4 kernel_size: 3 bogus: 1 }}\n}}\n"));
    let e = String::from_utf8(fkpnet(&["import-caffe", &unknown, "-o", "o"], d).stderr).unwrap();
    assert!(e.contains("unknown.prototxt:13:") && e.contains("bogus"), "{e}");

    let syntax = write("syntax.prototxt", "name: \"t\"\nlayer {\n  name: \"x\"\n");
    let e = String::from_utf8(fkpnet(&["import-caffe", &syntax, "-o", "o"], d).stderr).unwrap();
    assert!(e.contains("syntax.prototxt:"), "{e}");

    assert!(!d.join("o").join("t.yaml").exists(), "nothing written on error");

    // A deploy net (no loss) imports, with the loss it is given said.
    let noloss = write("noloss.prototxt", &format!("{input}layer {{\n  name: \"ip\"\n  type: \"InnerProduct\"\n  bottom: \"data\"\n  top: \"ip\"\n  inner_product_param {{ num_output: 30 }}\n}}\n"));
    let out = fkpnet(&["import-caffe", &noloss, "-o", "o"], d);
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("no EuclideanLoss (a deploy net)"), "{said}");
    let yaml = std::fs::read_to_string(d.join("o/t.yaml")).unwrap();
    assert!(yaml.contains("loss: {type: euclidean, loss_weight: 1"), "{yaml}");
}

#[test]
fn time_reports_every_layer_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let net = root().join("nets/lenet.yaml");
    let out = fkpnet(&["time", net.to_str().unwrap(), "--iterations", "2", "--batch", "4"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for layer in ["conv1", "pool5", "fc4", "out"] {
        let row =
            text.lines().find(|l| l.starts_with(layer)).unwrap_or_else(|| panic!("{layer} missing:\n{text}"));
        let ms: Vec<f64> = row.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect();
        assert!(ms.len() == 2 && ms.iter().all(|v| *v >= 0.0), "{row}");
    }
    assert!(text.contains("Average Forward pass:") && text.contains("Average Backward pass:"), "{text}");
    assert!(text.contains("images/s at batch 4"), "{text}");
    // Where a training step goes: the passes, what lies between the layer rows, the update.
    for part in
        ["A training step, ", "  forward ", "  backward ", "between layers", "  update ", "Adam over "]
    {
        assert!(text.contains(part), "{part}: {text}");
    }
    let out = fkpnet(&["time", net.to_str().unwrap(), "--batch", "0"], dir.path());
    assert!(!out.status.success());
}

/// Caffe's own training log as a run: `fkpnet diff` and `plot` read it beside fkpnet's
/// runs (the shared setup's log is glog 0.6's `I20261128 ...` form, which Caffe's own
/// parse_log.py misreads).
#[test]
fn a_caffe_log_is_a_run_for_diff_and_plot() {
    let log = shared_data().join("../caffe/lenet_adam.log");
    if !log.is_file() {
        eprintln!("skipped: {} is not here", log.display());
        return;
    }
    let run = fkpnet::report::diff::Run::load(&log).unwrap();
    assert_eq!(run.name, "lenet_adam");
    let val: Vec<_> = run.rows.iter().filter(|r| r.val_loss.is_some()).collect();
    assert_eq!(val.len(), 101, "a test every 24 of 2,400 iterations, and at 0");
    assert_eq!(val[0].val_loss, Some(2.10513));
    // Its best, as the shared README states it: 2.14 px = 48 sqrt(2 * 0.0298218 / 30).
    let best = val.iter().min_by(|a, b| a.val_loss.unwrap().total_cmp(&b.val_loss.unwrap())).unwrap();
    assert_eq!((best.iter, best.val_loss), (1080, Some(0.0298218)));
    assert!((best.val_rmse_px.unwrap() - 2.1402).abs() < 1e-3, "{best:?}");
    let train: Vec<_> = run.rows.iter().filter(|r| r.train_loss.is_some()).collect();
    assert_eq!((train[1].iter, train[1].lr), (24, Some(0.001)));
    // The solver and net it printed, imported: what `diff` compares.
    assert_eq!(run.config["type"].as_str(), Some("Adam"));
    assert_eq!(run.config["net"]["name"].as_str(), Some("LeNetFKP"));
    assert_eq!(run.loss_type(), "euclidean");
    // Both phases' data layers, as import-caffe reads the train_val prototxt: the TEST
    // net's batch of 170 makes Caffe's test_iter 1 three fkpnet batches of 64, and the
    // relative sources are taken from the log's folder.
    let caffe = shared_data().join("../caffe").canonicalize().unwrap();
    assert_eq!(run.config["test_iter"].as_i64(), Some(3), "{:?}", run.config["test_iter"]);
    assert_eq!(run.config["data"]["val"].as_str(), Some(caffe.join("h5/val_h5.txt").to_str().unwrap()));
    assert_eq!(run.config["data"]["train"].as_str(), Some(caffe.join("h5/train_h5.txt").to_str().unwrap()));
    assert_eq!(run.config["snapshot_prefix"].as_str(), Some("adam_solver"));
    // Side by side with an fkpnet run, and plotted.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let solver = root().join("solvers/adam.yaml");
    let data = format!("data.train={}", mini_csv());
    ok(
        &[
            "train",
            solver.to_str().unwrap(),
            "--set",
            &data,
            "--set",
            "max_iter=48",
            "--set",
            "test_interval=24",
            "--runs-dir",
            "runs",
            "--name",
            "mine",
            "-q",
        ],
        d,
    );
    let out = ok(&["diff", log.to_str().unwrap(), "runs/mine", "-o", "vs.png"], d);
    assert!(out.contains("config lenet_adam -> mine:") && out.contains("2.1402 @1080"), "{out}");
    assert!(std::fs::read(d.join("vs.png")).unwrap().starts_with(b"\x89PNG"));
    // fkpnet's own train.log reads the same way.
    let own = fkpnet::report::diff::Run::load(&d.join("runs/mine/train.log")).unwrap();
    let rows = fkpnet::run::read_metrics(&d.join("runs/mine/metrics.csv")).unwrap();
    let (a, b) = (
        own.rows.iter().filter(|r| r.val_loss.is_some()).count(),
        rows.iter().filter(|r| r.val_loss.is_some()).count(),
    );
    assert_eq!(a, b);
}

/// What real prototxts contain: a label Input, a deploy file's top-level input, PReLU,
/// Split, Silence, a flattening Reshape, Accuracy, loss weights; and clear errors for
/// what fkpnet cannot take (shared weights, the V1 format, other reshapes).
#[test]
fn real_prototxt_features_convert_or_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    // A deploy-style net: images and labels as two Inputs (one line each), PReLU, a
    // Split read by two layers, a flattening Reshape, Silence, Accuracy, loss_weight.
    let net = "name: \"deploy\"\n\
layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 64 dim: 1 dim: 12 dim: 12 } } }\n\
layer { name: \"label\" type: \"Input\" top: \"label\" input_param { shape { dim: 64 dim: 30 } } }\n\
layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\" convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: \"xavier\" } } }\n\
layer { name: \"prelu1\" type: \"PReLU\" bottom: \"conv1\" top: \"conv1\" prelu_param { channel_shared: false } }\n\
layer { name: \"split\" type: \"Split\" bottom: \"conv1\" top: \"a\" top: \"b\" }\n\
layer { name: \"sum\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"sum\" }\n\
layer { name: \"flat\" type: \"Reshape\" bottom: \"sum\" top: \"flat\" reshape_param { shape { dim: 0 dim: -1 } } }\n\
layer { name: \"fc\" type: \"InnerProduct\" bottom: \"flat\" top: \"fc\" inner_product_param { num_output: 30 weight_filler { type: \"xavier\" } } }\n\
layer { name: \"loss\" type: \"EuclideanLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" loss_weight: 0.5 }\n\
layer { name: \"acc\" type: \"Accuracy\" bottom: \"fc\" bottom: \"label\" top: \"acc\" include { phase: TEST } }\n\
layer { name: \"silence\" type: \"Silence\" bottom: \"fc\" }\n";
    let p = write("deploy.prototxt", net);
    let out = fkpnet(&["import-caffe", &p, "-o", "imp"], d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    for note in [
        "deploy.prototxt:3: layer `label`: the label input",
        "Split's tops read as its bottom `conv1`",
        "Reshape to (batch, -1) imported as a flatten",
        "Silence skipped",
        "layer `acc`: TEST-phase layer skipped",
        "no solver given",
    ] {
        assert!(e.contains(note), "missing note `{note}`:\n{e}");
    }
    let yaml = std::fs::read_to_string(d.join("imp/deploy.yaml")).unwrap();
    assert!(yaml.contains("type: prelu") && yaml.contains("channel_shared: false"), "{yaml}");
    assert!(yaml.contains("bottom: [conv1, conv1]") && yaml.contains("loss_weight: 0.5"), "{yaml}");
    let summary = ok(&["summary", "imp/deploy.yaml"], d);
    assert!(summary.contains("prelu") && summary.contains("flatten"), "{summary}");

    // The old top-level deploy input.
    let old = write("old.prototxt", "name: \"old\"\ninput: \"data\"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 8\ninput_dim: 8\n\
layer { name: \"fc\" type: \"InnerProduct\" bottom: \"data\" top: \"fc\" inner_product_param { num_output: 4 } }\n\
layer { name: \"label\" type: \"Input\" top: \"label\" input_param { shape { dim: 1 dim: 4 } } }\n\
layer { name: \"loss\" type: \"EuclideanLoss\" bottom: \"fc\" bottom: \"label\" }\n");
    ok(&["import-caffe", &old, "-o", "old"], d);
    assert!(std::fs::read_to_string(d.join("old/old.yaml")).unwrap().contains("input: [1, 8, 8]"));

    // Clear errors, on the real line.
    let bad = |name: &str, text: String| {
        let p = write(name, &text);
        String::from_utf8(fkpnet(&["import-caffe", &p, "-o", "bad"], d).stderr).unwrap()
    };
    let e = bad(
        "shared.prototxt",
        net.replace(
            "top: \"fc\" inner_product_param",
            "top: \"fc\" param { name: \"w\" } inner_product_param",
        ),
    );
    assert!(e.contains("shared.prototxt:9: layer `fc`") && e.contains("shares weights"), "{e}");
    let e = bad("v1.prototxt", "name: \"v1\"\nlayers {\n  name: \"conv1\"\n  type: CONVOLUTION\n}\n".into());
    assert!(
        e.contains("v1.prototxt:2:") && e.contains("V1 format") && e.contains("upgrade_net_proto_text"),
        "{e}"
    );
    let e = bad("reshape.prototxt", net.replace("dim: 0 dim: -1", "dim: 0 dim: 2 dim: -1"));
    assert!(e.contains("reshape.prototxt:8: layer `flat`: Reshape to [0, 2, -1] is not supported"), "{e}");
    // A loss without labels; and a 2-D Input nothing reads as labels.
    let no_label_input: String =
        net.lines().filter(|l| !l.contains("name: \"label\"")).map(|l| format!("{l}\n")).collect();
    let e = bad(
        "nolabel.prototxt",
        no_label_input
            .replace("bottom: \"fc\" bottom: \"label\" top: \"loss\"", "bottom: \"fc\" top: \"loss\""),
    );
    assert!(
        e.contains("nolabel.prototxt:9: layer `loss`") && e.contains("second bottom must be the labels"),
        "{e}"
    );
    let e = bad(
        "unread.prototxt",
        net.replace(
            "bottom: \"fc\" bottom: \"label\" top: \"loss\"",
            "bottom: \"fc\" bottom: \"data\" top: \"loss\"",
        ),
    );
    assert!(e.contains("unread.prototxt:3: layer `label`") && e.contains("N x C x H x W"), "{e}");
    assert!(!d.join("bad").exists(), "nothing written on error");
}

/// The shared Caffe setup imports with its data's source and snapshot prefix explained.
#[test]
fn the_shared_caffe_setup_imports_with_notes() {
    let caffe = shared_data().join("../caffe");
    if !caffe.join("lenet_train_val.prototxt").is_file() {
        eprintln!("skipped: {} is not here", caffe.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (net, solver) = (caffe.join("lenet_train_val.prototxt"), caffe.join("adam_solver.prototxt"));
    let out = fkpnet(&["import-caffe", net.to_str().unwrap(), solver.to_str().unwrap(), "-o", "setup"], d);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("data: Caffe's HDF5 input") && e.contains("caffe/h5/train_h5.txt"), "{e}");
    let s = std::fs::read_to_string(d.join("setup/adam_solver.yaml")).unwrap();
    assert!(
        s.contains("type: Adam") && s.contains("max_iter: 2400") && s.contains("test_interval: 24"),
        "{s}"
    );
    assert!(s.contains("format: hdf5") && s.contains("val: ") && s.contains("keypoints: kaggle15"), "{s}");
    assert!(ok(&["summary", "setup/adam_solver.yaml"], d).contains("1,287,350"), "the study's LeNet");
}

/// Caffe's HDF5 input as make_h5.py writes it (h5py, the reference library), read by
/// fkpnet's pure-Rust reader: the same faces as the Kaggle CSV they came from.
#[test]
fn make_h5_files_read_as_the_csv_faces() {
    let caffe = shared_data().join("../caffe");
    let python = root().join(".venv/bin/python");
    let has_h5py =
        std::process::Command::new(&python).args(["-c", "import h5py"]).status().is_ok_and(|s| s.success());
    if !has_h5py || !caffe.join("make_h5.py").is_file() {
        eprintln!(
            "skipped: needs {} with h5py (scripts/setup installs it) and ../shared/caffe/make_h5.py",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = std::process::Command::new(&python).arg(caffe.join("make_h5.py")).arg(d).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let spec = fkpnet::data::Spec { format: fkpnet::data::DataFormat::Hdf5, ..fkpnet::data::Spec::kaggle() };
    let (train, val) = (
        fkpnet::data::hdf5::read(&d.join("train_h5.txt"), &spec).unwrap(),
        fkpnet::data::hdf5::read(&d.join("val_h5.txt"), &spec).unwrap(),
    );
    assert_eq!((train.len(), val.len()), (1521, 170), "make_h5.py's 9:1 split of the 1,691 complete faces");
    // Each face is one of the CSV's complete faces, pixels exact, keypoints to float rounding.
    let csv = fkpnet::data::kaggle::read(&shared_data().join("faces/training.csv")).unwrap().faces;
    let by_pixels: std::collections::HashMap<&[u8], usize> =
        (0..csv.len()).filter(|&i| csv.is_complete(i)).map(|i| (csv.image(i), i)).collect();
    for f in [&train, &val] {
        for i in (0..f.len()).step_by(37) {
            let j = by_pixels[f.image(i)];
            for (a, b) in f.points(i).iter().zip(csv.points(j)) {
                assert!((a - b).abs() < 1e-4, "face {i}: {a} vs {b}");
            }
        }
    }
}

/// An imported Caffe setup trains on its HDF5 files, in their order where Caffe's
/// data layer does not shuffle, with the TEST layer's file as the val split.
#[test]
fn an_imported_hdf5_setup_trains_on_its_files() {
    let caffe = shared_data().join("../caffe");
    if !caffe.join("lenet_train_val.prototxt").is_file() {
        eprintln!("skipped: {} is not here", caffe.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Small HDF5 files of faces-mini's complete faces, written as make_h5.py writes them.
    let faces = fkpnet::data::kaggle::read(std::path::Path::new(&mini_csv())).unwrap().faces;
    let complete: Vec<usize> = (0..faces.len()).filter(|&i| faces.is_complete(i)).collect();
    std::fs::create_dir_all(d.join("h5")).unwrap();
    for (name, idx) in [("train", &complete[..100]), ("val", &complete[100..])] {
        let f = faces.select(idx);
        let x: Vec<f32> = f.pixels.iter().map(|&p| p as f32 / 255.0).collect();
        let y: Vec<f32> = f.keypoints.iter().map(|&k| (k - 48.0) / 48.0).collect();
        let mut b = hdf5_pure::FileBuilder::new();
        b.create_dataset("data").with_f32_data(&x).with_shape(&[f.len() as u64, 1, 96, 96]);
        b.create_dataset("label").with_f32_data(&y).with_shape(&[f.len() as u64, 30]);
        b.write(d.join(format!("h5/{name}.h5"))).unwrap();
        std::fs::write(d.join(format!("h5/{name}_h5.txt")), format!("{name}.h5\n")).unwrap();
    }
    for f in ["lenet_train_val.prototxt", "adam_solver.prototxt"] {
        std::fs::copy(caffe.join(f), d.join(f)).unwrap();
    }
    ok(&["import-caffe", "lenet_train_val.prototxt", "adam_solver.prototxt", "-o", "setup"], d);
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "setup/adam_solver.yaml",
            "--runs-dir",
            "runs",
            "--name",
            name,
            "-q",
            "--set",
            "max_iter=8",
            "--set",
            "test_interval=4",
        ];
        args.extend(extra);
        ok(&args, d);
        fkpnet::run::read_metrics(&d.join("runs").join(name).join("metrics.csv")).unwrap()
    };
    let shuffled = run("h5", &[]);
    assert!(shuffled.iter().any(|r| r.val_loss.is_some()));
    // The val split is the TEST layer's file: every one of its complete faces.
    let out = ok(&["test", "runs/h5"], d);
    assert!(out.contains(&format!("{} faces", complete.len() - 100)), "{out}");
    // Caffe's order without shuffle: another batch sequence, so other losses.
    let ordered = run("h5_ordered", &["--set", "data.shuffle=false"]);
    assert!(shuffled[0].train_loss.is_some());
    assert_ne!(shuffled[0].train_loss, ordered[0].train_loss);
}
