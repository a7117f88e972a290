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
