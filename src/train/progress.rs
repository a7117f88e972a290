//! What a training shows while it runs: a progress bar on a terminal, a line per
//! metrics row otherwise; and Ctrl-C / SIGTERM, which ask it to snapshot and stop.

use crate::run::MetricsRow;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Ctrl-C / SIGTERM count: the first asks the loop to snapshot and stop after the
/// current iteration, the second exits at once.
pub static SIGNALS: AtomicUsize = AtomicUsize::new(0);

pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\nsecond interrupt: exiting now without a snapshot");
            std::process::exit(130);
        }
        // Short enough for an 80-column terminal: a wrapped line is half erased by the
        // progress bar's next redraw.
        eprintln!("\ninterrupt: snapshot after this iteration (Ctrl-C again: quit now)");
    });
}

/// Whether Ctrl-C or SIGTERM asked the loop to stop.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

pub fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// A plain line per metrics row when there is no progress bar (logs, CI, pipes); on a
/// terminal, a line per val test above the bar, so the screen keeps their history.
pub fn report(bar: &ProgressBar, r: &MetricsRow, max_iter: i64, quiet: bool) {
    if quiet || (!bar.is_hidden() && r.val_loss.is_none()) {
        return;
    }
    // Under 80 columns (the rate is in metrics.csv, train.log and TensorBoard).
    let w = max_iter.to_string().len();
    let mut s = format!("iter {:>w$}/{max_iter} ep {:>5.1}", r.iter, r.epoch);
    if let Some(l) = r.train_loss {
        s += &format!("  loss {l:.5}");
        if let Some(t) = r.train_rmse_px {
            s += &format!(" ({t:.2}px)");
        }
    }
    if let (Some(l), Some(v)) = (r.val_loss, r.val_rmse_px) {
        s += &format!("  val {l:.5} ({v:.3}px)");
    }
    s += &format!("  {:.1}s", r.seconds);
    if bar.is_hidden() || bar.is_finished() {
        eprintln!("{s}");
    } else {
        bar.println(s);
    }
}
