//! `qaforge answer`: one question, or with `--batch` a file of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{EngineArgs, InputNamesArg};

/// Answer one question with an artifact (tract, or ONNX Runtime): prints the answer span (or that
/// there is none) and its score. With --batch, answer every question of a SQuAD-format file or of
/// JSON Lines ({"id", "question", "context"} a line) in batches padded only to their longest
/// window, and write predictions that `qaforge eval` reads.
#[derive(Args)]
pub struct AnswerArgs {
    /// The ONNX artifact.
    artifact: PathBuf,
    /// Model directory with tokenizer.json or vocab.txt.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The question.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    question: Option<String>,
    /// The context paragraph.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    context: Option<String>,
    /// Answer every question of this file (SQuAD v2-format JSON, or JSON Lines).
    #[arg(long, requires = "output")]
    batch: Option<PathBuf>,
    /// --batch: where to write the predictions (question id → answer text, "" for no answer).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// --batch: also write the no-answer odds (question id → null score minus the best span's),
    /// the file `qaforge eval --na-prob-file` reads.
    #[arg(long, requires = "batch")]
    null_odds: Option<PathBuf>,
    /// --batch: the padded cost one batch may reach (windows × its longest window, in tokens).
    #[arg(long, default_value_t = qaforge_pipeline::batch::BatchOptions::default().max_batch_tokens)]
    max_batch_tokens: usize,
    /// --batch: windows sorted by length together (a bounded look-ahead: memory stays flat, and
    /// the answers and their order never depend on it).
    #[arg(long, default_value_t = qaforge_pipeline::batch::BatchOptions::default().lookahead)]
    lookahead: usize,
    /// --batch: ONNX Runtime sessions run side by side, the cores split between them (1: one
    /// session with every core). Default: one a core, each of one thread.
    #[arg(long)]
    sessions: Option<usize>,
    #[command(flatten)]
    inputs: InputNamesArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the answer as JSON ({"text", "start", "end", "score", "null_odds", "margin",
    /// "windows"}; text "" for no answer), or with --batch the summary ({"questions", "windows",
    /// "seconds", "load_seconds", "questions_per_second", ...}).
    #[arg(long)]
    json: bool,
}

/// Answers and prints the answer, or the batch's summary.
pub fn run(args: AnswerArgs) -> anyhow::Result<ExitCode> {
    let (engine, exact_fallback) = args.engine.resolve()?;
    if let (Some(input), Some(output)) = (args.batch, args.output) {
        let request = qaforge_pipeline::batch::BatchRequest {
            artifact: args.artifact,
            tokenizer: args.tokenizer,
            input,
            output,
            null_odds: args.null_odds,
            input_names: args.inputs.input_names,
            engine,
            exact_fallback,
            cores: super::cores(),
            options: qaforge_pipeline::batch::BatchOptions {
                max_batch_tokens: args.max_batch_tokens,
                lookahead: args.lookahead,
                sessions: args.sessions.unwrap_or_else(super::cores),
            },
        };
        let (bar, progress) = super::progress_bar();
        let done = qaforge_pipeline::batch::answer_batch(&request, &progress);
        bar.finish_and_clear();
        let done = done?;
        if args.json {
            println!("{}", done.to_json());
        } else {
            println!("{done}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let request = qaforge_pipeline::AnswerRequest {
        artifact: args.artifact,
        tokenizer: args.tokenizer,
        question: args.question.unwrap_or_default(),
        context: args.context.unwrap_or_default(),
        input_names: args.inputs.input_names,
        engine,
        exact_fallback,
        cores: super::cores(),
    };
    let answer = qaforge_pipeline::answer(&request)?;
    if args.json {
        println!("{}", answer.to_json());
    } else {
        println!("{answer}");
    }
    Ok(ExitCode::SUCCESS)
}
