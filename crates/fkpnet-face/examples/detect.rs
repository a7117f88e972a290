//! `cargo run --release -p fkpnet-face --example detect IMAGE...`: the faces the
//! detector finds, one line each, and the time it took.
fn main() {
    let mut det = fkpnet_face::FaceDetector::new();
    for p in std::env::args().skip(1) {
        let img = fkpnet_face::open(std::path::Path::new(&p)).unwrap();
        let t = std::time::Instant::now();
        let found = det.detect(&img);
        println!("{p} {}x{} {:.1} ms", img.width(), img.height(), t.elapsed().as_secs_f64() * 1e3);
        for d in found {
            println!("  {:.0},{:.0},{:.0},{:.0} score {:.1}", d.x, d.y, d.w, d.h, d.score);
        }
    }
}
