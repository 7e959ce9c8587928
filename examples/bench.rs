//! The Rust half of `make bench` (bench/run.py drives it and the Python peers, and prints the
//! table). Each subcommand prints one JSON object per line on stdout.
//!
//!   bench checkpoint DIR                 full-size MobileBERT (google/mobilebert-uncased topology,
//!                                        24,582,914 deterministic random parameters) + tokenizer files
//!   bench features MODEL_DIR SQUAD N OUT  the first N features qaforge calibrates on, as int64
//!                                        safetensors (input_ids, attention_mask, token_type_ids)
//!   bench micro DIR                      a micro MobileBERT checkpoint (vocabulary 64, hidden 16,
//!                                        2 layers) for fuzz seeds
//!   bench gemm                           fp32 MatMul throughput of tract on one core (GFLOP/s)
//!   bench infer ARTIFACT ENGINE N RUNS    features/s of tract or ONNX Runtime over N golden
//!                                        features (spread over the evaluation slice) at length
//!                                        384 and at their real lengths, batch 1 and 8
//!
//! ENGINE is `tract` or a path to libonnxruntime.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use qaforge_runtime::Engine;
use qaforge_squad::Features;
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i).with_context(|| format!("missing argument {i}; see the usage at the top of examples/bench.rs"))
    };
    match arg(0)?.as_str() {
        "checkpoint" => checkpoint(Path::new(arg(1)?)),
        "features" => features(Path::new(arg(1)?), Path::new(arg(2)?), arg(3)?.parse()?, Path::new(arg(4)?)),
        "gemm" => gemm(),
        "micro" => micro(Path::new(arg(1)?)),
        "infer" => infer(Path::new(arg(1)?), arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?),
        other => anyhow::bail!("unknown subcommand {other}"),
    }
}

fn checkpoint(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !dir.join("model.safetensors").exists() {
        qaforge_checkpoint::synthetic::write_random_checkpoint(
            dir,
            qaforge_checkpoint::synthetic::GOOGLE_MOBILEBERT_UNCASED_CONFIG,
            7,
        )?;
    }
    // The bert-base-uncased vocabulary MobileBERT uses, from the tiny fixture.
    for file in ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(Path::new("golden/mobilebert-tiny").join(file), dir.join(file))
            .with_context(|| file.to_string())?;
    }
    println!(
        "{}",
        serde_json::json!({"checkpoint": dir, "bytes": std::fs::metadata(dir.join("model.safetensors"))?.len()})
    );
    Ok(())
}

fn micro(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = qaforge_checkpoint::synthetic::GOOGLE_MOBILEBERT_UNCASED_CONFIG
        .replace("\"vocab_size\": 30522", "\"vocab_size\": 64")
        .replace("\"hidden_size\": 512", "\"hidden_size\": 16")
        .replace("\"intermediate_size\": 512", "\"intermediate_size\": 16")
        .replace("\"intra_bottleneck_size\": 128", "\"intra_bottleneck_size\": 8")
        .replace("\"true_hidden_size\": 128", "\"true_hidden_size\": 8")
        .replace("\"embedding_size\": 128", "\"embedding_size\": 8")
        .replace("\"num_hidden_layers\": 24", "\"num_hidden_layers\": 2")
        .replace("\"max_position_embeddings\": 512", "\"max_position_embeddings\": 64");
    qaforge_checkpoint::synthetic::write_random_checkpoint(dir, &config, 11)?;
    Ok(())
}

fn features(model_dir: &Path, squad: &Path, n: usize, out: &Path) -> anyhow::Result<()> {
    let data = qaforge_squad::SquadFile::load(squad)?;
    let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(model_dir)?;
    let f = tokenizer.features(&data.examples, &qaforge_squad::FeatureOptions::default())?.truncated(n);
    let shape = vec![f.count, f.max_length];
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ids, mask, types) = (bytes(&f.input_ids), bytes(&f.attention_mask), bytes(&f.token_type_ids));
    fn view<'a>(shape: &[usize], b: &'a [u8]) -> anyhow::Result<safetensors::tensor::TensorView<'a>> {
        Ok(safetensors::tensor::TensorView::new(safetensors::Dtype::I64, shape.to_vec(), b)?)
    }
    let tensors = vec![
        ("input_ids", view(&shape, &ids)?),
        ("attention_mask", view(&shape, &mask)?),
        ("token_type_ids", view(&shape, &types)?),
    ];
    safetensors::serialize_to_file(tensors, None, out)?;
    let lengths: Vec<usize> = (0..f.count).map(|i| f.length(i)).collect();
    println!("{}", serde_json::json!({"features": f.count, "lengths": lengths}));
    Ok(())
}

/// One `[n, n] x [n, n]` MatMul in tract on one thread: 2n³ flops per run.
fn gemm() -> anyhow::Result<()> {
    use qaforge_onnx::builder::{Dim, GraphBuilder};
    use qaforge_onnx::pb::tensor_proto::DataType;
    for n in [512usize, 1024] {
        let mut g = GraphBuilder::new();
        let a = g.input("a", DataType::Float, &[Dim::Fixed(n as i64), Dim::Fixed(n as i64)]);
        let values: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b = g.f32_initializer("b", &[n, n], &values);
        let c = g.node("MatMul", "matmul", &[&a, &b], vec![]);
        g.output(&c, DataType::Float, &[Dim::Fixed(n as i64), Dim::Fixed(n as i64)]);
        let model = g.finish("gemm", 17, vec![]);
        let plan = tract_onnx::onnx().model_for_proto_model(&model)?.into_optimized()?.into_runnable()?;
        let input = Tensor::from_shape(&[n, n], &values.iter().rev().copied().collect::<Vec<f32>>())?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let x = tvec![input.clone().into_tvalue()];
            let t = Instant::now();
            plan.run(x)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{}", serde_json::json!({"gemm": n, "gflops_one_core": 2.0 * (n as f64).powi(3) / best / 1e9}));
    }
    Ok(())
}

/// Every `stride`-th golden feature, `n` in all: the evaluation slice's real length distribution.
fn spread(features: Features, n: usize) -> Features {
    let stride = (features.count / n.max(1)).max(1);
    let picks: Vec<usize> = (0..features.count).step_by(stride).take(n).collect();
    let m = features.max_length;
    let rows = |v: &[i64]| picks.iter().flat_map(|&i| v[i * m..(i + 1) * m].iter().copied()).collect::<Vec<_>>();
    Features {
        count: picks.len(),
        max_length: m,
        input_ids: rows(&features.input_ids),
        attention_mask: rows(&features.attention_mask),
        token_type_ids: rows(&features.token_type_ids),
        offsets: picks.iter().flat_map(|&i| features.offsets[i * m * 2..(i + 1) * m * 2].iter().copied()).collect(),
        example_index: picks.iter().map(|&i| features.example_index[i]).collect(),
        example_ids: picks.iter().map(|&i| features.example_ids[i].clone()).collect(),
    }
}

/// Runs every batch of `features` (`batch` features each, at `fixed` length or padded to each
/// batch's longest feature + 1 as verify does) on the engine's preferred number of threads.
fn run_all(
    engine: &dyn Engine,
    features: &Features,
    batch: usize,
    fixed: Option<usize>,
    cores: usize,
) -> anyhow::Result<()> {
    let length = |s: usize, e: usize| fixed.unwrap_or_else(|| qaforge_runtime::padded_length(features, s, e));
    engine.run_batches(features, batch, engine.preferred_threads(cores), &length, &|_, _, _, _| {})?;
    Ok(())
}

fn infer(artifact: &Path, engine_name: &str, n: usize, runs: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let bytes = std::fs::read(artifact)?;
    let model = qaforge_onnx::decode_model(&bytes, artifact)?;
    let choice = if engine_name == "tract" {
        qaforge_runtime::EngineChoice::Tract
    } else {
        qaforge_runtime::EngineChoice::OnnxRuntime { library: PathBuf::from(engine_name) }
    };
    let t = Instant::now();
    let layout = qaforge_runtime::check_inputs(&model, artifact, None)?;
    let engine = qaforge_runtime::load_engine(&choice, &model, &bytes, artifact, cores, layout)?;
    let load_s = t.elapsed().as_secs_f64();
    let features = spread(Features::load(Path::new("golden/squad"))?, n);
    let mean_length = (0..features.count).map(|i| features.length(i)).sum::<usize>() as f64 / features.count as f64;
    // One untimed pass warms caches and lets each engine finish lazy initialisation.
    run_all(engine.as_ref(), &features, 8, None, cores)?;
    for (label, fixed) in [("384", Some(features.max_length)), ("real", None)] {
        for batch in [1usize, 8] {
            let mut per_second = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                run_all(engine.as_ref(), &features, batch, fixed, cores)?;
                per_second.push(features.count as f64 / t.elapsed().as_secs_f64());
            }
            println!(
                "{}",
                serde_json::json!({"engine": engine.description(), "artifact": artifact, "length": label, "batch": batch,
                    "features": features.count, "mean_real_length": mean_length, "features_per_s": per_second, "load_s": load_s})
            );
        }
    }
    Ok(())
}
