//! qaforge: turns BERT-family extractive QA checkpoints into verified ONNX artifacts.
//!
//! This binary only parses arguments and calls the library crates; exit codes are 0 for
//! success, 1 for an artifact outside tolerance, 2 for bad input or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qaforge", version, about = "Turns BERT-family extractive QA checkpoints into verified ONNX artifacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face model directory (config.json + weights) into an ONNX graph.
    Convert {
        /// The model directory: config.json and model.safetensors, model.safetensors.index.json or pytorch_model.bin.
        model_dir: PathBuf,
        /// Where to write the ONNX model.
        #[arg(short, long)]
        output: PathBuf,
        /// ONNX opset to emit (17 to 21).
        #[arg(long, default_value_t = qaforge_onnx::DEFAULT_OPSET)]
        opset: i64,
    },
    /// Score SQuAD v2 predictions like the official evaluate-v2.0.py and print its JSON.
    Eval {
        /// The SQuAD v2 data file.
        data: PathBuf,
        /// Predictions: a JSON object from question id to answer text ("" for no answer).
        predictions: PathBuf,
        /// Also write the JSON here.
        #[arg(long)]
        out_file: Option<PathBuf>,
    },
    /// Run an ONNX artifact with tract on a fixture's golden features and compare its logits with PyTorch's.
    Verify {
        /// The ONNX artifact.
        artifact: PathBuf,
        /// The fixture directory (golden/<fixture>), whose golden/logits.safetensors holds the reference.
        #[arg(long)]
        golden: PathBuf,
        /// The golden SQuAD directory with features.safetensors (default: <golden>/../squad).
        #[arg(long)]
        squad: Option<PathBuf>,
        /// Largest tolerated |Δ| between the artifact's logits and the reference.
        #[arg(long, default_value_t = 1e-4)]
        max_abs_diff: f64,
        /// Features per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Write a JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

/// A failure that maps to exit code 1 (the artifact ran but is outside tolerance).
#[derive(Debug)]
struct OutOfTolerance(String);

impl std::fmt::Display for OutOfTolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutOfTolerance {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert { model_dir, output, opset } => convert(&model_dir, &output, opset),
        Command::Eval { data, predictions, out_file } => eval(&data, &predictions, out_file),
        Command::Verify { artifact, golden, squad, max_abs_diff, batch_size, report } => {
            verify(&artifact, &golden, squad, max_abs_diff, batch_size, report)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<OutOfTolerance>() => {
            eprintln!("qaforge: FAIL: {err}");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("qaforge: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn convert(model_dir: &std::path::Path, output: &std::path::Path, opset: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let checkpoint = qaforge_checkpoint::Checkpoint::open(model_dir)?;
    for key in &checkpoint.unknown_config_keys {
        eprintln!("qaforge: warning: {}: unknown config key `{key}` ignored", model_dir.join("config.json").display());
    }
    let emitted = qaforge_onnx::convert(&checkpoint, opset)?;
    let bytes = qaforge_onnx::encode(&emitted.model);
    qaforge_onnx::write_atomically(output, &bytes)?;
    let c = &checkpoint.config;
    println!("converted {} -> {}", model_dir.display(), output.display());
    println!(
        "  architecture  MobileBertForQuestionAnswering: {} layers, hidden {}, bottleneck {}, embedding {}, {} heads, {} FFN(s), {}, {}{}",
        c.num_hidden_layers,
        c.hidden_size,
        if c.use_bottleneck { c.intra_bottleneck_size.to_string() } else { "none".into() },
        c.embedding_size,
        c.num_attention_heads,
        c.num_feedforward_networks,
        c.hidden_act,
        match c.normalization {
            qaforge_checkpoint::Normalization::NoNorm => "NoNorm",
            qaforge_checkpoint::Normalization::LayerNorm => "LayerNorm",
        },
        if c.trigram_input { ", trigram input" } else { "" },
    );
    println!("  weights       {} ({})", checkpoint.format, checkpoint.weights.files().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    println!("  parameters    {}", emitted.parameters);
    println!("  tensors read  {} of {}", emitted.tensors_used, checkpoint.weights.len());
    if !emitted.unused_tensors.is_empty() {
        println!("  unused        {}", emitted.unused_tensors.join(", "));
    }
    let graph = emitted.model.graph.as_ref().map_or(0, |g| g.node.len());
    println!("  graph         opset {opset}, {graph} nodes, inputs input_ids/attention_mask/token_type_ids [batch, sequence]");
    println!("  file          {} ({} bytes)", human_bytes(bytes.len() as u64), bytes.len());
    println!("  sha256        {}", qaforge_onnx::sha256_hex(&bytes));
    println!("  time          {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn eval(data: &std::path::Path, predictions: &std::path::Path, out_file: Option<PathBuf>) -> anyhow::Result<()> {
    let squad = qaforge_squad::SquadFile::load(data)?;
    let predictions = qaforge_squad::load_predictions(predictions)?;
    let metrics = qaforge_squad::evaluate(&squad, &predictions);
    let json = serde_json::to_string_pretty(&metrics)?;
    println!("{json}");
    if let Some(path) = out_file {
        qaforge_onnx::write_atomically(&path, format!("{json}\n").as_bytes())?;
    }
    Ok(())
}

fn verify(
    artifact: &std::path::Path,
    golden: &std::path::Path,
    squad: Option<PathBuf>,
    max_abs_diff: f64,
    batch_size: usize,
    report: Option<PathBuf>,
) -> anyhow::Result<()> {
    use qaforge_verify::{GoldenFeatures, GoldenLogits, LogitStats, TractSession};
    let started = Instant::now();
    let squad = squad.unwrap_or_else(|| golden.join("..").join("squad"));
    let features = GoldenFeatures::load(&squad)?;
    let reference = GoldenLogits::load(golden, &features)?;
    let session = TractSession::load(artifact)?;
    let bar = indicatif::ProgressBar::new(features.count as u64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let logits = session.run_features(&features, batch_size, threads, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let stats = LogitStats::over_features(&features, &logits, &reference);
    let pass = stats.within(max_abs_diff);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = report {
        let json = serde_json::json!({
            "artifact": artifact.display().to_string(),
            "golden": golden.display().to_string(),
            "features": features.count,
            "logits": stats,
            "max_abs_diff_tolerance": max_abs_diff,
            "pass": pass,
            "seconds": seconds,
        });
        qaforge_onnx::write_atomically(&path, format!("{json:#}\n").as_bytes()).context("writing the report")?;
    }
    println!(
        "{}: {} features, max |Δ| {:.3e}, mean |Δ| {:.3e}, cosine {:.6}, {:.2} s",
        artifact.display(),
        features.count,
        stats.max_abs_diff,
        stats.mean_abs_diff,
        stats.cosine,
        seconds
    );
    if !pass {
        return Err(OutOfTolerance(if stats.non_finite > 0 {
            format!("{} non-finite logits", stats.non_finite)
        } else {
            format!("max |Δ| {:.3e} > tolerance {max_abs_diff:.1e}", stats.max_abs_diff)
        })
        .into());
    }
    println!("PASS");
    Ok(())
}
