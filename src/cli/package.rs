//! `qaforge package`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use qaforge_pipeline::PackageFormat;

use super::{named, InputNamesArg, OrtLibraryArg};

/// Package an artifact: for ONNX Runtime Mobile (`--format ort`: an ORT-format model with ONNX
/// Runtime's optimizations applied offline, and the required_operators.config of a reduced
/// build), or for browsers (`--format web`: a static site that answers questions in the browser
/// with onnxruntime-web).
#[derive(Args)]
pub struct PackageArgs {
    /// The ONNX artifact (portable or --for onnxruntime).
    artifact: PathBuf,
    /// The package format.
    #[arg(long, value_parser = named::<PackageFormat>())]
    format: PackageFormat,
    /// Where to write the ORT-format model (by convention *.ort), or the site's folder (web).
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write the operator list (ort; default: required_operators.config beside --output).
    #[arg(long)]
    operators_config: Option<PathBuf>,
    /// The model directory with tokenizer.json or vocab.txt (web: the page tokenizes with it).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The node_modules folder holding the pinned onnxruntime-web and @huggingface/tokenizers
    /// (web; `npm ci --prefix web` installs them there).
    #[arg(long, env = "QAFORGE_WEB_RUNTIME", default_value = "web/node_modules")]
    web_runtime: PathBuf,
    #[command(flatten)]
    inputs: InputNamesArg,
    #[command(flatten)]
    onnxruntime: OrtLibraryArg,
}

/// Packages and prints what was written.
pub fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let request = qaforge_pipeline::PackageRequest {
        artifact: args.artifact,
        format: args.format,
        output: args.output,
        operators_config: args.operators_config,
        tokenizer: args.tokenizer,
        web_runtime: args.web_runtime,
        input_names: args.inputs.input_names,
        library: args.onnxruntime.ort_library,
    };
    println!("{}", qaforge_pipeline::package(&request)?);
    Ok(ExitCode::SUCCESS)
}
