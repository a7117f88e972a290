//! What a newcomer meets first (issue 23): the docs the files point to exist, errors
//! point into the file or flag that is wrong, and every argument has help.

mod common;
use common::*;

/// Every `something.md` the repository's docs, configs and tests name is in the
/// repository (configs once pointed to a CAFFE.md that only the authors had).
#[test]
fn every_doc_a_file_points_to_exists() {
    let r = root();
    let re = regex::Regex::new(r"[A-Za-z0-9_./-]*[A-Za-z0-9_]\.md\b").unwrap();
    let mut files = vec![r.join("README.md")];
    for dir in ["docs", "nets", "solvers", "tests", "src", "bench", "scripts"] {
        let Ok(rd) = std::fs::read_dir(r.join(dir)) else { continue };
        files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    let mut missing = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("tests/newcomer.rs")) {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for m in re.find_iter(&text) {
            let name = m.as_str().trim_start_matches("./");
            // The shared data's, and the READMEs a test's export or import writes.
            let made = name.strip_suffix("/README.md").is_some_and(|d| !r.join(d).is_dir());
            if name.starts_with("../") || name == "README.md" || made {
                continue;
            }
            let candidates = [r.join(name), r.join("docs").join(name), f.parent().unwrap().join(name)];
            if !candidates.iter().any(|c| c.is_file()) {
                missing.push(format!("{}: {name}", f.strip_prefix(&r).unwrap().display()));
            }
        }
    }
    assert!(missing.is_empty(), "docs named but not in the repository: {missing:?}");
}

fn short_run(d: &std::path::Path, name: &str, sets: &[&str]) {
    let solver = root().join("solvers/adam.yaml");
    let mut args = vec!["train", solver.to_str().unwrap(), "--set", "max_iter=2", "--set", "test_interval=1"];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(["--name", name, "-q"]);
    ok(&args, d);
}

/// diff ranks runs on their val scores only with a warning when the val faces differ;
/// a copy of the same file at another path is the same faces.
#[test]
fn diff_warns_when_val_faces_differ() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(mini_csv(), d.join("copy.csv")).unwrap();
    let data = format!("data.train={}", mini_csv());
    short_run(d, "a", &[&data]);
    short_run(d, "b", &[&data, "data.seed=1"]);
    short_run(d, "c", &["data.train=copy.csv", "base_lr=0.002"]);
    let out = ok(&["diff", "runs/a", "runs/b"], d);
    assert!(out.contains("warning: a and b were scored on different val faces (data.seed)"), "{out}");
    let out = ok(&["diff", "runs/a", "runs/c"], d);
    assert!(out.contains("data.train:") && !out.contains("warning"), "{out}");
    // Train metrics are not scored on val faces.
    let out = ok(&["diff", "runs/a", "runs/b", "--metric", "train_loss"], d);
    assert!(!out.contains("warning"), "{out}");
}

/// Typos and Caffe habits inside a file: a "did you mean", Caffe's type names taken,
/// `1e3` for an integer, case in a choice, words for types, and a YAML syntax error
/// quoted with a caret (and the tab named).
#[test]
fn errors_inside_files_say_what_would_be_valid() {
    let r = root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lenet = std::fs::read_to_string(r.join("nets/lenet.yaml")).unwrap();
    let typo = write(
        d,
        "typo.yaml",
        &lenet.replace("num_output: 16, kernel_size: 3", "num_output: 16, kernal_size: 3"),
    );
    let e = err(&["summary", typo.to_str().unwrap()], d);
    assert!(
        e.contains("typo.yaml:6: layer `conv1`")
            && e.contains("unknown key `kernal_size` (did you mean `kernel_size`?)"),
        "{e}"
    );
    // Caffe's names are fkpnet's kinds; other spellings are suggested.
    let caffe = write(
        d,
        "caffe.yaml",
        &lenet
            .replace("type: conv, name: conv1", "type: Convolution, name: conv1")
            .replace("{type: relu}", "{type: ReLU}"),
    );
    let out = ok(&["summary", caffe.to_str().unwrap()], d);
    assert!(out.contains("conv1 ") && out.contains("conv1_relu"), "{out}");
    let conv = write(d, "conv.yaml", &lenet.replace("type: conv, name: conv1", "type: Conv, name: conv1"));
    let e = err(&["summary", conv.to_str().unwrap()], d);
    assert!(e.contains("unknown layer type `Conv` (did you mean `conv`?)"), "{e}");
    // Numbers and choices as people write them.
    let solver = r.join("solvers/adam.yaml");
    let s = solver.to_str().unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&ok(&["config", s, "--set", "max_iter=1e3"], d)).unwrap();
    assert_eq!(v["max_iter"].as_i64(), Some(1000));
    // Keras' and PyTorch's lowercase names are Caffe's types; typos get a suggestion.
    let v: serde_yaml::Value = serde_yaml::from_str(&ok(&["config", s, "--set", "type=sgd"], d)).unwrap();
    assert_eq!(v["type"].as_str(), Some("SGD"));
    let e = err(&["config", s, "--set", "type=adamm"], d);
    assert!(e.contains("unknown value `adamm` (did you mean `Adam`?)"), "{e}");
    let e = err(&["config", s, "--set", "max_iter=abc"], d);
    assert!(e.contains("expected an integer") && !e.contains("i64"), "{e}");
    let bad = write(
        d,
        "s.yaml",
        &format!(
            "net: {}\ndata: {{train: x.csv}}\nbase_lr: 0.01\nmax_iter: 1e3\ntest_iter: ten\n",
            r.join("nets/lenet.yaml").display()
        ),
    );
    let e = err(&["config", bad.to_str().unwrap()], d);
    assert!(
        e.contains("s.yaml:5:12: test_iter: invalid type")
            && e.contains("5 | test_iter: ten")
            && e.contains("^"),
        "{e}"
    );
    // A tab in the indentation.
    let tab = write(d, "tab.yaml", "name: t\ninput: [1, 96, 96]\nlayers:\n\t- {type: relu}\n");
    let e = err(&["summary", tab.to_str().unwrap()], d);
    assert!(e.contains("tab.yaml:4:1:") && e.contains("4 | →- {type: relu}") && e.contains("a tab"), "{e}");
    // An override is blamed for what it set, not the file's line.
    let e = err(
        &["summary", r.join("nets/lenet.yaml").to_str().unwrap(), "--set", "layers.fc1.num_output=-5"],
        d,
    );
    assert!(e.starts_with("error: --set layers.fc1.num_output=-5 (in "), "{e}");
}

/// A variant adds, inserts and removes layers by name; unnamed layers are named after
/// the layer before them, so an insert renames nothing further down the net.
#[test]
fn variants_add_and_remove_layers_and_names_stay_put() {
    let r = root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vgg = r.join("nets/vgg.yaml");
    let v = write(
        d,
        "v.yaml",
        &format!(
            "base: {}\nname: v\nlayers:\n  - {{name: drop0, type: dropout, dropout_ratio: 0.2, after: pool3}}\n  - {{name: drop2, remove: true}}\n  - {{name: bn1, type: batchnorm, before: fc1}}\n",
            vgg.display()
        ),
    );
    let base = ok(&["summary", vgg.to_str().unwrap()], d);
    let out = ok(&["summary", v.to_str().unwrap()], d);
    let names = |s: &str| -> Vec<String> {
        s.lines().skip(4).filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
    };
    let (b, n) = (names(&base), names(&out));
    assert!(
        n.contains(&"drop0".to_string())
            && n.contains(&"bn1".to_string())
            && !n.contains(&"drop2".to_string()),
        "{n:?}"
    );
    let pos = |x: &str| n.iter().position(|y| y == x).unwrap();
    assert_eq!(pos("drop0"), pos("pool3") + 1);
    assert_eq!(pos("bn1") + 1, pos("fc1"));
    // Every base layer but the removed one keeps its name.
    for name in b.iter().filter(|x| *x != "drop2" && !x.starts_with("---")) {
        assert!(n.contains(name), "{name} renamed: {n:?}");
    }
    let bad = write(
        d,
        "bad.yaml",
        &format!("base: {}\nlayers:\n  - {{name: drop9, dropout_ratio: 0.1}}\n", vgg.display()),
    );
    let e = err(&["summary", bad.to_str().unwrap()], d);
    assert!(e.contains("no layer `drop9` in the base net to patch (to add it, give `after: NAME`"), "{e}");
}

/// `fkpnet <command> --help` describes every argument and option of every command.
#[test]
fn every_argument_of_every_command_has_help() {
    let d = root();
    let top = ok(&["--help"], &d);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented two spaces; its wrapped description, further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    let mut bare = Vec::new();
    for c in &commands {
        let help = ok(&[c, "--help"], &d);
        let mut section = false;
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().copied().enumerate() {
            if l == "Arguments:" || l == "Options:" {
                section = true;
                continue;
            }
            if l.trim().is_empty() {
                section = false;
            }
            let t = l.trim_start();
            // An argument's line: its spec indented 2 to 6 spaces (a wrapped description's
            // lines are indented to the help column, further).
            let indent = l.len() - t.len();
            if section
                && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
                && (2..=6).contains(&indent)
            {
                // The spec, then two spaces and the text.
                // A default or the possible values alone are no description.
                let described = |text: &str| !text.trim().is_empty() && !text.trim().starts_with('[');
                let inline = t.split_once("  ").is_some_and(|(_, text)| described(text));
                // Or clap's next-line help, for long texts: an indented line of text.
                let next = lines.get(i + 1).is_some_and(|n| {
                    n.starts_with("          ") && !n.trim().is_empty() && !n.trim_start().starts_with('-')
                });
                if !inline && !next {
                    bare.push(format!("{c}: {t}"));
                }
            }
        }
    }
    assert!(bare.is_empty(), "arguments without help: {bare:#?}");
}

/// Photos in the formats people have: BMP, WebP and TIFF predict as the same PNG does.
#[test]
fn bmp_webp_and_tiff_photos_predict_as_png() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = format!("data.train={}", mini_csv());
    short_run(d, "m", &[&data]);
    ok(&["extract", &mini("test.csv"), "faces", "--limit", "1"], d);
    let png = std::fs::read_dir(d.join("faces"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    let img = image::open(&png).unwrap();
    img.save(d.join("face.bmp")).unwrap();
    img.save(d.join("face.tiff")).unwrap();
    let rgb = img.to_rgba8();
    let f = std::fs::File::create(d.join("face.webp")).unwrap();
    image::codecs::webp::WebPEncoder::new_lossless(f)
        .encode(rgb.as_raw(), rgb.width(), rgb.height(), image::ExtendedColorType::Rgba8)
        .unwrap();
    let out = |f: &str| {
        let o = ok(&["predict", "runs/m", f, "--whole"], d);
        o.lines().nth(1).unwrap().split_once(',').unwrap().1.to_string()
    };
    let want = out(png.to_str().unwrap());
    for f in ["face.bmp", "face.webp", "face.tiff"] {
        assert_eq!(out(f), want, "{f}");
    }
}

/// `fkpnet config` shows the solver's keys first and every one of them with the value
/// in force (data.augment and the test-time views included), the net last; what it
/// prints is a solver file that resolves to itself.
#[test]
fn config_prints_every_key_solver_first() {
    let r = root();
    let out = ok(&["config", "solvers/adam.yaml"], &r);
    let top: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ') && !l.starts_with('-')).collect();
    assert_eq!(top.last().copied(), Some("net:"), "{top:?}");
    assert!(top.iter().position(|l| l.starts_with("base_lr:")).unwrap() < 20, "{top:?}");
    let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    for key in ["flip", "shift", "rotate", "scale"] {
        assert!(v["test"].get(key).is_some(), "test.{key}: {out}");
    }
    assert!(v["data"]["augment"].as_mapping().is_some_and(|m| m.len() >= 5), "{:?}", v["data"]["augment"]);
    let dir = tempfile::tempdir().unwrap();
    let full = write(dir.path(), "full.yaml", &out);
    assert_eq!(ok(&["config", full.to_str().unwrap()], dir.path()), out);
}

/// A training on a real terminal (a pty from util-linux's `script`, 80 columns): the
/// bar and every line fit, each val test stays on the screen above the bar, and the
/// last one is the run's result.
#[test]
fn training_on_an_80_column_terminal() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        return eprintln!("skipped: needs `script` (util-linux) for a pseudo-terminal");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cmd = format!(
        "stty cols 80 rows 24; {} train {} --set data.train={} --set max_iter=60 --set test_interval=20 --name t",
        env!("CARGO_BIN_EXE_fkpnet"),
        root().join("solvers/adam.yaml").display(),
        mini_csv()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ansi = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    let text = ansi.replace_all(&String::from_utf8_lossy(&out.stdout), "").replace('\r', "\n");
    // The terminal's rows: indicatif pads a printed line to the width with spaces, and
    // the terminal wraps there; a line that reaches column 80 with text is too wide.
    let (mut lines, mut long) = (Vec::new(), Vec::new());
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut rest: Vec<char> = l.chars().collect();
        while rest.len() > 80 {
            if rest[79] != ' ' && !l.starts_with("  data:") {
                long.push(l.to_string());
            }
            lines.push(rest[..80].iter().collect::<String>().trim_end().to_string());
            rest = rest[80..].to_vec();
        }
        lines.push(rest.iter().collect());
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(long.is_empty(), "wider than 80 columns: {long:#?}");
    assert!(lines.iter().any(|l| l.contains('[') && l.contains("ETA")), "a progress bar: {lines:#?}");
    for it in ["iter  0/60", "iter 20/60", "iter 40/60", "iter 60/60"] {
        assert!(lines.iter().any(|l| l.starts_with(it) && l.contains("val ")), "{it} kept: {lines:#?}");
    }
    // The last val line is the final test, which the summary's best can only match or beat.
    let rows = std::fs::read_to_string(d.join("runs/t/metrics.csv")).unwrap();
    let last = rows.lines().last().unwrap();
    assert!(last.starts_with("60,"), "{last}");
    let shown = lines.iter().rev().find(|l| l.starts_with("iter 60/60")).unwrap();
    let px: f64 = last.split(',').nth(6).unwrap().parse().unwrap();
    assert!(shown.contains(&format!("({px:.3}px)")), "{shown} vs {last}");
}
