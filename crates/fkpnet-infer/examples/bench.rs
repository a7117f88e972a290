//! `cargo run --release -p fkpnet-infer --example bench -- MODEL.onnx BATCH [RUNS]`:
//! tract's inference time on random faces at the model's input size, after a warm-up
//! run (which also plans the model for the batch), as one JSON line.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, batch, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench MODEL.onnx BATCH [RUNS]");
    };
    let n: usize = batch.parse()?;
    let runs: usize = rest.first().map_or(Ok(20), |r| r.parse())?;
    let m = fkpnet_infer::Model::load(std::path::Path::new(model))?;
    let i = &m.meta.input;
    let mut state = 12345u32;
    let pixels: Vec<u8> = (0..n * i.channels * i.height * i.width)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    m.run(&pixels, n)?;
    let t = Instant::now();
    for _ in 0..runs {
        m.run(&pixels, n)?;
    }
    let s = t.elapsed().as_secs_f64() / runs as f64;
    println!("{{\"batch\": {n}, \"ms_per_batch\": {:.3}, \"img_per_s\": {:.1}}}", s * 1e3, n as f64 / s);
    Ok(())
}
