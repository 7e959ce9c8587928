//! `make bench`: conversion time of a full-size MobileBERT (google/mobilebert-uncased topology,
//! 24,582,914 deterministic random parameters written here) and tract inference throughput of the
//! converted artifact and of the tiny fixture. Prints a table of min / median / max over runs.
//!
//! Peers (torch.onnx.export, ONNX Runtime) are not measured here yet; see the bench issue.

use std::path::Path;
use std::time::Instant;

use qaforge_verify::Engine;

fn summary(mut seconds: Vec<f64>) -> (f64, f64, f64) {
    seconds.sort_by(f64::total_cmp);
    (seconds[0], seconds[seconds.len() / 2], seconds[seconds.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let work = Path::new("target/bench");
    let model_dir = work.join("mobilebert-uncased-random");
    std::fs::create_dir_all(&model_dir)?;
    if !model_dir.join("model.safetensors").exists() {
        qaforge_checkpoint::synthetic::write_random_checkpoint(&model_dir, qaforge_checkpoint::synthetic::GOOGLE_MOBILEBERT_UNCASED_CONFIG, 7)?;
    }
    let artifact = work.join("mobilebert-uncased-random.onnx");
    let mut convert_runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let checkpoint = qaforge_checkpoint::Checkpoint::open(&model_dir)?;
        let emitted = qaforge_onnx::convert(&checkpoint, qaforge_onnx::DEFAULT_OPSET)?;
        qaforge_onnx::write_atomically(&artifact, &qaforge_onnx::encode(&emitted.model))?;
        convert_runs.push(t.elapsed().as_secs_f64());
    }
    let session = qaforge_verify::TractSession::load(&artifact)?;
    let mut rows = vec![("convert full-size MobileBERT (24.6M params), s".to_string(), summary(convert_runs))];
    for (batch, len) in [(1usize, 384usize), (8, 384), (1, 160)] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let ids: Vec<i64> = (0..batch * len).map(|i| 1000 + (i as i64 * 7919) % 20000).collect();
            let t = Instant::now();
            session.run_batch(batch, len, ids, vec![1; batch * len], vec![0; batch * len])?;
            runs.push(batch as f64 / t.elapsed().as_secs_f64());
        }
        rows.push((format!("tract fp32 full-size, batch {batch} x {len} tokens, features/s"), summary(runs)));
    }
    let features = qaforge_verify::GoldenFeatures::load(Path::new("golden/squad"))?;
    let tiny = work.join("mobilebert-tiny.onnx");
    let checkpoint = qaforge_checkpoint::Checkpoint::open(Path::new("golden/mobilebert-tiny"))?;
    qaforge_onnx::write_atomically(&tiny, &qaforge_onnx::encode(&qaforge_onnx::convert(&checkpoint, qaforge_onnx::DEFAULT_OPSET)?.model))?;
    let session = qaforge_verify::TractSession::load(&tiny)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        session.run_features(&features, 8, threads, &|_| {})?;
        runs.push(features.count as f64 / t.elapsed().as_secs_f64());
    }
    rows.push((format!("verify mobilebert-tiny fixture, dynamic padding, {threads} threads, features/s"), summary(runs)));
    println!("| {:<75} | {:>10} | {:>10} | {:>10} |", "measure", "min", "median", "max");
    println!("|{}|{}|{}|{}|", "-".repeat(77), "-".repeat(12), "-".repeat(12), "-".repeat(12));
    for (name, (min, median, max)) in rows {
        println!("| {name:<75} | {min:>10.3} | {median:>10.3} | {max:>10.3} |");
    }
    Ok(())
}
