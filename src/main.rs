//! The `fkpnet` command line: parse arguments, call the library, print errors. The
//! commands themselves are in `cli/`, one `run` each.

mod cli;

use clap::Parser;

/// jemalloc as the whole process's malloc (libtorch's too: the executable's unprefixed
/// malloc/free come first in symbol lookup). libtorch allocates every activation and
/// gradient afresh each step; glibc serves blocks over 32 MiB (one 16x96x96 map of a
/// batch of 64 is 38 MB) with mmap and unmaps them on free, so every step faulted in
/// fresh zeroed pages: 1.3-1.8x slower training on this 2-core CPU, and glibc with mmap
/// off fragments to a higher peak than PyTorch's. jemalloc, told to keep freed pages
/// (`.cargo/config.toml`), reuses them and stays below PyTorch's peak (README "Speed").
#[cfg(target_os = "linux")]
extern crate tikv_jemalloc_sys;

fn main() {
    // Rust ignores SIGPIPE, which turns `fkpnet predict ... | head` into a panic; a
    // command-line tool should just stop, as cat does.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = cli::run(cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
