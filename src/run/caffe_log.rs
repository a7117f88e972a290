//! `train.log` in Caffe's (glog's) line shapes, so Caffe users' log parsers
//! (tools/extra/parse_log.py and friends) and plotting scripts work on fkpnet runs.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub struct CaffeLog {
    out: BufWriter<File>,
    pid: u32,
}

impl CaffeLog {
    pub fn create(path: &Path) -> Result<CaffeLog> {
        let f = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(CaffeLog { out: BufWriter::new(f), pid: std::process::id() })
    }

    /// One line with glog's prefix: `I1128 10:15:02.123456 12345 solver.cpp:218] `.
    fn line(&mut self, src: &str, msg: &str) -> Result<()> {
        let now = chrono::Local::now();
        writeln!(self.out, "I{} {} {src}] {msg}", now.format("%m%d %H:%M:%S%.6f"), self.pid)?;
        Ok(())
    }

    pub fn solving(&mut self, net: &str, policy: &str) -> Result<()> {
        self.line("solver.cpp:464", &format!("Solving {net}"))?;
        self.line("solver.cpp:465", &format!("Learning Rate Policy: {policy}"))?;
        self.flush()
    }

    /// Caffe's test block; `outputs` are (name, value, loss weight if a loss).
    pub fn test(&mut self, iter: i64, outputs: &[(&str, f64, Option<f64>)]) -> Result<()> {
        self.line("solver.cpp:397", &format!("Iteration {iter}, Testing net (#0)"))?;
        for (i, (name, v, w)) in outputs.iter().enumerate() {
            let text = match w {
                Some(w) => format!("    Test net output #{i}: {name} = {v} (* {w} = {} loss)", v * w),
                None => format!("    Test net output #{i}: {name} = {v}"),
            };
            self.line("solver.cpp:464", &text)?;
        }
        self.flush()
    }

    /// Caffe's display block: smoothed loss, the raw net outputs, the lr.
    pub fn display(
        &mut self,
        iter: i64,
        iters_per_s: f64,
        secs: f64,
        every: i64,
        smoothed: f64,
        outputs: &[(&str, f64, Option<f64>)],
        lr: f64,
    ) -> Result<()> {
        self.line(
            "solver.cpp:218",
            &format!(
                "Iteration {iter} ({iters_per_s:.5} iter/s, {secs:.3}s/{every} iters), loss = {smoothed}"
            ),
        )?;
        for (i, (name, v, w)) in outputs.iter().enumerate() {
            let text = match w {
                Some(w) => format!("    Train net output #{i}: {name} = {v} (* {w} = {} loss)", v * w),
                None => format!("    Train net output #{i}: {name} = {v}"),
            };
            self.line("solver.cpp:237", &text)?;
        }
        self.line("sgd_solver.cpp:105", &format!("Iteration {iter}, lr = {lr}"))?;
        self.flush()
    }

    /// Caffe's closing `Iteration N, loss = L` (after the last update).
    pub fn line_final(&mut self, iter: i64, smoothed: f64) -> Result<()> {
        self.line("solver.cpp:310", &format!("Iteration {iter}, loss = {smoothed}"))?;
        self.flush()
    }

    pub fn snapshot(&mut self, weights: &Path, state: &Path) -> Result<()> {
        self.line("solver.cpp:635", &format!("Snapshotting to binary proto file {}", weights.display()))?;
        self.line(
            "sgd_solver.cpp:273",
            &format!("Snapshotting solver state to binary proto file {}", state.display()),
        )?;
        self.flush()
    }

    pub fn note(&mut self, msg: &str) -> Result<()> {
        self.line("solver.cpp:300", msg)?;
        self.flush()
    }

    pub fn done(&mut self) -> Result<()> {
        self.line("solver.cpp:331", "Optimization Done.")?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
