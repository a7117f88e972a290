// Make the `fkpnet` binary find libtorch without LD_LIBRARY_PATH: torch-sys tells
// us where the torch wheel's lib folder is (DEP_TCH_LIBTORCH_LIB, via `links = "tch"`),
// and we bake it in as an rpath. `--no-as-needed -ltorch` keeps libtorch (and with it
// libtorch_cuda) linked even though no symbol of ours references it directly, so
// CUDA is available at run time where a GPU exists.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    caffe_proto();
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
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
