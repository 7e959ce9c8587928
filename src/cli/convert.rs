//! `qaforge convert`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{FlavourArgs, OrtLibraryArg};

/// Convert a Hugging Face model directory (config.json + weights) into an ONNX graph.
#[derive(Args)]
pub struct ConvertArgs {
    /// The model directory: config.json and model.safetensors, model.safetensors.index.json or pytorch_model.bin.
    model_dir: PathBuf,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    output: PathBuf,
    /// ONNX opset to emit (17 to 21).
    #[arg(long, default_value_t = qaforge_onnx::DEFAULT_OPSET)]
    opset: i64,
    /// Emit weights holding NaN or Inf with a warning instead of refusing the checkpoint.
    #[arg(long)]
    allow_non_finite: bool,
    #[command(flatten)]
    flavour: FlavourArgs,
    #[command(flatten)]
    onnxruntime: OrtLibraryArg,
}

/// Converts and prints the summary.
pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let request = qaforge_pipeline::ConvertRequest {
        flavour: args.flavour.resolve(&args.onnxruntime)?,
        model_dir: args.model_dir,
        output: args.output,
        emit: qaforge_onnx::EmitOptions { opset: args.opset, allow_non_finite: args.allow_non_finite },
    };
    let done = qaforge_pipeline::convert(&request)?;
    for warning in &done.warnings {
        eprintln!("qaforge: warning: {warning}");
    }
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}
