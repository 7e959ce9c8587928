//! `qaforge eval` and `qaforge table`: scoring predictions and tabulating reports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Score SQuAD v2 predictions like the official evaluate-v2.0.py and print its JSON.
#[derive(Args)]
pub struct EvalArgs {
    /// The SQuAD v2 data file.
    data: PathBuf,
    /// Predictions: a JSON object from question id to answer text ("" for no answer).
    predictions: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    out_file: Option<PathBuf>,
    /// No-answer probabilities (question id → number, e.g. run_qa.py's null_odds.json): adds
    /// best_exact, best_exact_thresh, best_f1 and best_f1_thresh.
    #[arg(long)]
    na_prob_file: Option<PathBuf>,
    /// Count a question as answered with "" when its no-answer probability exceeds this.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    na_prob_thresh: f64,
}

/// Scores and prints the official script's JSON (stdout) and a summary (stderr).
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let evaluation = qaforge_pipeline::reports::evaluate(
        &args.data,
        &args.predictions,
        args.na_prob_file.as_deref(),
        args.na_prob_thresh,
        args.out_file.as_deref(),
    )?;
    // stdout carries exactly the official script's JSON; the summary goes to stderr.
    eprintln!("{}", evaluation.summary);
    if evaluation.unpredicted > 0 {
        eprintln!("warning: {} questions have no prediction and are left out of the totals", evaluation.unpredicted);
    }
    println!("{}", evaluation.json);
    Ok(ExitCode::SUCCESS)
}

/// Print the Markdown comparison table of verify reports (the JSON files of `verify --report`).
#[derive(Args)]
pub struct TableArgs {
    /// Report files.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
}

/// Prints the table.
pub fn table(args: TableArgs) -> anyhow::Result<ExitCode> {
    println!("{}", qaforge_verify::MARKDOWN_HEADER);
    for row in qaforge_pipeline::reports::table_rows(&args.reports)? {
        println!("{row}");
    }
    Ok(ExitCode::SUCCESS)
}
