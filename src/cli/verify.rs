//! `qaforge verify` and `qaforge merge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use qaforge_provenance::Precision;
use qaforge_verify::{Report, Shard, ToleranceOverrides};

use super::{named, EngineArgs, InputNamesArg};

/// Run an ONNX artifact (tract, or ONNX Runtime) on a golden bundle's features: logits against
/// the reference's, SQuAD scores against the gold answers and the reference predictions,
/// tolerances by precision.
#[derive(Args)]
pub struct VerifyArgs {
    /// The ONNX artifact.
    artifact: PathBuf,
    /// The golden bundle (`qaforge golden`'s output, or a shipped fixture golden/FIXTURE).
    #[arg(long)]
    golden: PathBuf,
    /// Verify only shard K of N (1-based, e.g. 2/4): a deterministic slice of the questions;
    /// the report is partial, for `qaforge merge`.
    #[arg(long, value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Compare even when the artifact's provenance names another checkpoint or tokenizer than
    /// the bundle's.
    #[arg(long)]
    allow_other_checkpoint: bool,
    #[command(flatten)]
    inputs: InputNamesArg,
    /// Largest tolerated |Δ| between the artifact's logits and the reference (default: 1e-4 for fp32).
    #[arg(long)]
    max_abs_diff: Option<f64>,
    /// Largest tolerated F1 drop in points versus the reference (default: 0.1 for fp16, 1.0 for int8).
    #[arg(long)]
    max_f1_drop: Option<f64>,
    /// Smallest tolerated logit cosine (default: 0.999 for fp16, 0.99 for int8).
    #[arg(long)]
    min_cosine: Option<f64>,
    /// Smallest tolerated agreement F1 (percent) of the artifact's predictions with the
    /// reference's (default: none): how closely the artifact follows the float model.
    #[arg(long)]
    min_agreement_f1: Option<f64>,
    /// Judge with this precision's tolerances instead of the artifact's own (its metadata's,
    /// or for an artifact without qaforge metadata, the one its operators show).
    #[arg(long, value_parser = named::<Precision>())]
    precision: Option<Precision>,
    /// Features per batch [default: 1 for int8-dynamic artifacts, 8 otherwise]. int8-dynamic
    /// scales each activation over its whole batch, so its logits depend on the batch they
    /// run in: batch 1 is how an app runs it. The report records the batch size used.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Write the JSON report here, and the Markdown report beside it (same name, .md).
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Judge logits computed elsewhere (a phone, an emulator, a browser) instead of running
    /// the artifact: safetensors with start_logits and end_logits, float32 [features,
    /// max_length] in the order of the bundle's features (tools/run_on_device.py writes them).
    /// An .ort artifact is read with --engine ort.
    #[arg(long)]
    logits: Option<PathBuf>,
    /// The runtime and device that computed --logits, for the report (default: what the file records).
    #[arg(long, requires = "logits")]
    runtime: Option<String>,
}

/// Verifies, prints the report's row and summary, and exits with its verdict's code.
pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (engine, exact_fallback) = args.engine.resolve()?;
    let request = qaforge_pipeline::VerifyRequest {
        artifact: args.artifact,
        golden: args.golden,
        shard: args.shard.unwrap_or(Shard::WHOLE),
        overrides: ToleranceOverrides {
            precision: args.precision,
            max_abs_diff: args.max_abs_diff,
            max_f1_drop: args.max_f1_drop,
            min_cosine: args.min_cosine,
            min_agreement_f1: args.min_agreement_f1,
        },
        engine,
        exact_fallback,
        batch_size: args.batch_size,
        cores: super::cores(),
        allow_other_checkpoint: args.allow_other_checkpoint,
        input_names: args.inputs.input_names,
        logits: args.logits.map(|logits| (logits, args.runtime)),
        report: args.report,
    };
    let (bar, progress) = super::progress_bar();
    let report = qaforge_pipeline::verify(&request, &progress);
    bar.finish_and_clear();
    Ok(conclude(&report?))
}

/// Merge the partial reports of `verify --shard K/N` (all N shards) into the report one
/// unsharded run gives, with its verdict and exit code.
#[derive(Args)]
pub struct MergeArgs {
    /// Partial reports (the JSON files of `verify --shard K/N --report`).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// The golden bundle the shards verified against (default: the one the reports name).
    #[arg(long)]
    golden: Option<PathBuf>,
    /// Write the merged JSON report here, and the Markdown report beside it.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Merges, writes the report where asked, and exits with its verdict's code.
pub fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let report = qaforge_pipeline::reports::merge(&args.reports, args.golden.as_deref())?;
    if let Some(path) = &args.report {
        qaforge_pipeline::reports::write_report(&report, path)?;
    }
    Ok(conclude(&report))
}

/// Prints the report's table row and summary, its provenance warnings, and its verdict.
fn conclude(report: &Report) -> ExitCode {
    println!("{}\n{}", qaforge_verify::MARKDOWN_HEADER, report.markdown_row());
    println!("{}", report.summary());
    for note in &report.run.provenance {
        eprintln!("qaforge: warning: {note}");
    }
    super::verdict_exit(report)
}
