// Make the `fkpnet` binary find libtorch without LD_LIBRARY_PATH: torch-sys tells
// us where the torch wheel's lib folder is (DEP_TCH_LIBTORCH_LIB, via `links = "tch"`),
// and we bake it in as an rpath. `--no-as-needed -ltorch` keeps libtorch (and with it
// libtorch_cuda) linked even though no symbol of ours references it directly, so
// CUDA is available at run time where a GPU exists.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    caffe_proto();
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        grad_hook(&lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Rust types for proto/caffe.proto (Caffe prototxt import) and proto/tensorboard.proto
/// (TensorBoard event files), generated into OUT_DIR.
fn caffe_proto() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/caffe.proto")
        .input("proto/tensorboard.proto")
        .input("proto/onnx.proto")
        .cargo_out_dir("caffe_proto")
        .run_from_script();
}

/// csrc/grad_hook.cpp: autograd's tensor hooks and a backward function of fkpnet's, which tch does not expose (src/autograd.rs),
/// built against the libtorch headers beside its lib folder with torch-sys's flags.
fn grad_hook(lib: &str) {
    println!("cargo:rerun-if-changed=csrc/grad_hook.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = std::path::Path::new(lib).join("..").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/grad_hook.cpp")
        .compile("fkpnet_grad_hook");
}
