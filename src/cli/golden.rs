//! `qaforge golden`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Make a golden bundle: run_qa.py features of a SQuAD-format file built with the model's
/// tokenizer, reference logits computed from the checkpoint (candle, no Python), predictions,
/// metrics and a manifest of sha256s. `verify --golden` and `quantize --golden` read it.
#[derive(Args)]
pub struct GoldenArgs {
    /// The Hugging Face model directory (config.json, weights, tokenizer).
    model_dir: PathBuf,
    /// SQuAD v2-format JSON to build the features from.
    #[arg(long)]
    data: PathBuf,
    /// The bundle directory to write (replaced if it is a bundle).
    #[arg(short, long)]
    output: PathBuf,
    /// Keep only the data's first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Tokens per feature.
    #[arg(long, default_value_t = 384)]
    max_length: usize,
    /// Overlap of consecutive windows of a long context.
    #[arg(long, default_value_t = 128)]
    doc_stride: usize,
    /// Features per reference batch. 1 computes each feature at its own length, no padding:
    /// the reference's fastest (batches of 8 pad the SQuAD v2 dev set's features with 21% more
    /// tokens and run no faster per token).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
}

/// Makes the bundle and prints what it holds.
pub fn run(args: GoldenArgs) -> anyhow::Result<ExitCode> {
    let request = qaforge_pipeline::GoldenRequest {
        model_dir: args.model_dir,
        data: args.data,
        output: args.output,
        options: qaforge_verify::BundleOptions {
            limit: args.limit,
            max_length: args.max_length,
            doc_stride: args.doc_stride,
            batch_size: args.batch_size,
        },
    };
    let (bar, progress) = super::progress_bar();
    let done = qaforge_pipeline::golden(&request, &progress);
    bar.finish_and_clear();
    println!("{}", done?);
    Ok(ExitCode::SUCCESS)
}
