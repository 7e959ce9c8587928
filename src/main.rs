//! qaforge: turns BERT-family extractive QA checkpoints into verified ONNX artifacts, and puts
//! them to work.
//!
//! This binary only parses arguments (`cli/`, one module per command, straight into the library's
//! types), calls qaforge-pipeline (or qaforge-serve) and prints the outcome. Exit codes: 0
//! success, 1 an artifact outside tolerance, 2 bad input or usage, 3 an artifact that the chosen
//! engine cannot compute on this machine as its target does (not verified).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "qaforge",
    version,
    about = "Turns BERT-family extractive QA checkpoints into verified ONNX artifacts, and serves them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Convert(cli::convert::ConvertArgs),
    Quantize(cli::quantize::QuantizeArgs),
    Package(cli::package::PackageArgs),
    Answer(cli::answer::AnswerArgs),
    Serve(cli::serve::ServeArgs),
    Merge(cli::verify::MergeArgs),
    Table(cli::eval::TableArgs),
    Eval(cli::eval::EvalArgs),
    Golden(cli::golden::GoldenArgs),
    Verify(cli::verify::VerifyArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `qaforge eval ... | head` would panic in println! once head exits;
    // restore the default, under which a closed pipe ends the process quietly, as it does for
    // other Unix tools.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let outcome = match Cli::parse().command {
        Command::Convert(args) => cli::convert::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Package(args) => cli::package::run(args),
        Command::Answer(args) => cli::answer::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Merge(args) => cli::verify::merge(args),
        Command::Table(args) => cli::eval::table(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Golden(args) => cli::golden::run(args),
        Command::Verify(args) => cli::verify::run(args),
    };
    outcome.unwrap_or_else(|err| {
        eprintln!("qaforge: error: {}", error_text(&err));
        ExitCode::from(2)
    })
}

/// The error and its causes, `: `-separated, each cause left out where the text so far already
/// quotes it: the library errors name the file and quote the OS's words in their own message
/// (`{path}: {source}`) and keep the OS error as their source too, which `{:#}` would print twice.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
