//! Kernels of fkpnet's own, for the shapes where libtorch's are slow. Each is used only
//! where it applies (it says when) and falls back to libtorch otherwise; each is tested
//! against libtorch's result in its file. `FKPNET_KERNELS=libtorch` turns them all off
//! (to compare, or to rule them out).

pub mod direct_conv;

use std::sync::OnceLock;

/// Whether fkpnet's own kernels may be used: `FKPNET_KERNELS` unset or `auto`; `libtorch`
/// turns them off. Any other value is named in a warning, once, and read as `auto`.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| match std::env::var("FKPNET_KERNELS").as_deref() {
        Err(_) | Ok("auto") | Ok("") => true,
        Ok("libtorch") => false,
        Ok(other) => {
            eprintln!("warning: FKPNET_KERNELS={other:?} is not one of auto, libtorch; using auto");
            true
        }
    })
}
