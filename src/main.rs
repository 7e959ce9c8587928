//! qaforge: turns BERT-family extractive QA checkpoints into verified ONNX artifacts.
//!
//! This binary parses arguments into the library's requests and prints their outcomes; the
//! workflows live in qaforge-pipeline and the stage crates. Exit codes are 0 for success, 1 for
//! an artifact outside tolerance, 2 for bad input or usage, 3 for an artifact that the chosen
//! engine cannot compute on this machine as its target does (not verified).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use qaforge_pipeline::{human_bytes, EngineChoice, Flavour, PipelineError};
use qaforge_quantize::Precision;

#[derive(Parser)]
#[command(name = "qaforge", version, about = "Turns BERT-family extractive QA checkpoints into verified ONNX artifacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--ort-library`, shared by every command that can load ONNX Runtime.
#[derive(Args)]
struct OrtLibraryArg {
    /// libonnxruntime, for `--engine ort`, `--calibration-engine ort`, `--for onnxruntime` and
    /// `package` (default: $ORT_DYLIB_PATH), e.g. the one inside the onnxruntime PyPI wheel
    /// (site-packages/onnxruntime/capi/libonnxruntime.so.*).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_library: Option<PathBuf>,
}

/// `--input-names`, shared by every command that feeds a graph.
#[derive(Args)]
struct InputNamesArg {
    /// The graph's inputs for token ids, attention mask and token types (the last for models
    /// that take them), comma-separated, when its input names are not the usual ones.
    #[arg(long, value_delimiter = ',')]
    input_names: Option<Vec<String>>,
}

/// `--for`, shared by convert and quantize.
#[derive(Args)]
struct FlavourArgs {
    /// The engine the artifact is for: portable (standard ONNX, any engine) or onnxruntime
    /// (exact folds before quantizing, the fused ops that ONNX Runtime runs fastest: com.microsoft
    /// ones, and ONNX Attention at opset 23; ONNX Runtime 1.23 or newer only, and loaded there
    /// before it is written; quantize: int8 modes only).
    #[arg(long = "for", value_enum, default_value_t = FlavourArg::Portable)]
    flavour: FlavourArg,
}

/// `--engine` and its library, shared by the commands that run an artifact.
#[derive(Args)]
struct EngineArgs {
    /// The engine that runs the artifact: tract (built in), ort (ONNX Runtime, the runtime
    /// phones use; needs a build with `--features ort` and libonnxruntime), or auto: ONNX Runtime
    /// where its library is given (--ort-library or $ORT_DYLIB_PATH) and computes the artifact
    /// exactly on this CPU, tract otherwise (the report's engine says which, and why).
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    #[command(flatten)]
    onnxruntime: OrtLibraryArg,
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
        /// Emit weights holding NaN or Inf with a warning instead of refusing the checkpoint.
        #[arg(long)]
        allow_non_finite: bool,
        #[command(flatten)]
        flavour: FlavourArgs,
        #[command(flatten)]
        onnxruntime: OrtLibraryArg,
    },
    /// Quantize a float32 ONNX artifact: fp16, int8 with dynamic activations, or int8 calibrated on SQuAD.
    Quantize {
        /// The float32 ONNX artifact (from `qaforge convert`).
        input: PathBuf,
        /// Where to write the quantized artifact.
        #[arg(short, long)]
        output: PathBuf,
        /// Target precision.
        #[arg(long, value_enum)]
        precision: PrecisionArg,
        /// SQuAD v2 JSON whose questions calibrate int8-static (use a slice disjoint from evaluation).
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Model directory with tokenizer.json or vocab.txt, to build calibration features.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Calibration features (windows of 384 tokens) to run.
        #[arg(long, default_value_t = 128)]
        samples: usize,
        /// How calibrated ranges are chosen.
        #[arg(long, value_enum, default_value_t = MethodArg::Minmax)]
        method: MethodArg,
        /// Percentile of |x| kept by --method percentile.
        #[arg(long, default_value_t = 99.999)]
        percentile: f64,
        /// int4: weights per block (one float16-exact scale each) along the reduced dimension: 16, 32,
        /// 64, 128 or 256.
        #[arg(long, default_value_t = 32)]
        block_size: usize,
        /// int4: how embedding tables are stored (4-bit blocks in GatherBlockQuantized, or int8).
        #[arg(long, value_enum, default_value_t = TableBitsArg::Int4)]
        embeddings: TableBitsArg,
        /// int4: how weights are rounded to their blocks: search (each block's least-error grid)
        /// or gptq (errors compensated with the inputs' statistics over --calibration features).
        #[arg(long, value_enum, default_value_t = RoundingArg::Search)]
        rounding: RoundingArg,
        /// int4: the largest artifact (bytes, or with kB/MB/GB or KiB/MiB/GiB): each weight product
        /// then gets 2 or 4 bits, int8 or float, whatever fits with the least output error over
        /// --calibration features. --report lists each product's choice.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Write what quantize chose (JSON, and Markdown beside it).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Keep nodes float whose name or op type matches (`*` wildcards; repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Quantize the QA head too (int8 modes). It stays float by default: it decides every
        /// answer and holds 2 × hidden weights (README: what each default costs and buys).
        #[arg(long)]
        int8_qa_head: bool,
        /// One weight scale per tensor instead of per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// The CPUs the int8 artifact is for: its weights are stored so that ONNX Runtime's integer
        /// kernels there compute it exactly. arm64 (phones) and x86-vnni: int8 weights; x86-avx2
        /// (x86 without VNNI, whose u8 × s8 kernels saturate): uint8 weights offset by 128.
        #[arg(long, value_enum, default_value_t = TargetArg::Arm64)]
        target: TargetArg,
        /// 7-bit int8 weights (ONNX Runtime's reduce_range) instead of the target's storage: exact
        /// on every CPU, one bit coarser.
        #[arg(long)]
        reduce_range: bool,
        /// Keep the most harmful layers float until the F1 drop is at most this many points: on a
        /// golden bundle's questions with --golden, else label-free, as disagreement with the
        /// float artifact's own predictions on questions of --calibration held back from
        /// calibration (no gold answers needed).
        #[arg(long)]
        max_f1_drop: Option<f64>,
        /// Questions of --calibration held back for the label-free search.
        #[arg(long, default_value_t = 200)]
        held_back: usize,
        /// Golden bundle (or golden/<fixture>) whose data and reference logits the sensitivity
        /// search measures F1 against.
        #[arg(long, requires = "max_f1_drop")]
        golden: Option<PathBuf>,
        /// Features per calibration batch (memory grows with it: every calibrated activation of a
        /// batch is held at once, about 1.8 GB per thread at 8 for full-size MobileBERT).
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
        #[command(flatten)]
        inputs: InputNamesArg,
        /// The engine int8-static calibration and int4's input statistics (GPTQ, --max-size) run
        /// the float graph in: tract (built in, the same ranges on every CPU), or ort (ONNX Runtime; needs `--features ort` and libonnxruntime).
        /// With tract, a graph tract cannot run is calibrated in ONNX Runtime where its library is
        /// at hand (--ort-library or $ORT_DYLIB_PATH), with a note on stderr.
        #[arg(long, value_enum, default_value_t = CalibrationEngineArg::Tract)]
        calibration_engine: CalibrationEngineArg,
        #[command(flatten)]
        onnxruntime: OrtLibraryArg,
        #[command(flatten)]
        flavour: FlavourArgs,
    },
    /// Package an artifact: for ONNX Runtime Mobile (`--format ort`: an ORT-format model with
    /// ONNX Runtime's optimizations applied offline, and the required_operators.config of a
    /// reduced build), or for browsers (`--format web`: a static site that answers questions in
    /// the browser with onnxruntime-web).
    Package {
        /// The ONNX artifact (portable or --for onnxruntime).
        artifact: PathBuf,
        /// The package format.
        #[arg(long, value_enum)]
        format: PackageFormatArg,
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
    },
    /// Answer one question with an artifact (tract, or ONNX Runtime): prints the answer span (or that there is none) and its score.
    Answer {
        /// The ONNX artifact.
        artifact: PathBuf,
        /// Model directory with tokenizer.json or vocab.txt.
        #[arg(long)]
        tokenizer: PathBuf,
        /// The question.
        #[arg(long)]
        question: String,
        /// The context paragraph.
        #[arg(long)]
        context: String,
        #[command(flatten)]
        inputs: InputNamesArg,
        #[command(flatten)]
        engine: EngineArgs,
        /// Print the answer as JSON ({"text", "null_odds", "margin", "windows"}; text "" for no answer).
        #[arg(long)]
        json: bool,
    },
    /// Merge the partial reports of `verify --shard K/N` (all N shards) into the report one
    /// unsharded run gives, with its verdict and exit code.
    Merge {
        /// Partial reports (the JSON files of `verify --shard K/N --report`).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// The golden bundle the shards verified against (default: the one the reports name).
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Write the merged JSON report here, and the Markdown report beside it.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Print the Markdown comparison table of verify reports (the JSON files of `verify --report`).
    Table {
        /// Report files.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
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
        /// No-answer probabilities (question id → number, e.g. run_qa.py's null_odds.json): adds
        /// best_exact, best_exact_thresh, best_f1 and best_f1_thresh.
        #[arg(long)]
        na_prob_file: Option<PathBuf>,
        /// Count a question as answered with "" when its no-answer probability exceeds this.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        na_prob_thresh: f64,
    },
    /// Make a golden bundle: run_qa.py features of a SQuAD-format file built with the model's
    /// tokenizer, reference logits computed from the checkpoint (candle, no Python), predictions,
    /// metrics and a manifest of sha256s. `verify --golden` and `quantize --golden` read it.
    Golden {
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
    },
    /// Run an ONNX artifact (tract, or ONNX Runtime) on a golden bundle's features: logits against
    /// the reference's, SQuAD scores against the gold answers and the reference predictions,
    /// tolerances by precision.
    Verify {
        /// The ONNX artifact.
        artifact: PathBuf,
        /// The golden bundle (`qaforge golden`'s output, or a shipped fixture golden/<fixture>).
        #[arg(long)]
        golden: PathBuf,
        /// Verify only shard K of N (1-based, e.g. 2/4): a deterministic slice of the questions;
        /// the report is partial, for `qaforge merge`.
        #[arg(long)]
        shard: Option<String>,
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
        #[arg(long, value_enum)]
        precision: Option<VerifyPrecisionArg>,
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
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Fp16,
    Int8Dynamic,
    Int8Static,
    /// 4-bit block-wise weights (ONNX Runtime's MatMulNBits and GatherBlockQuantized), float
    /// activations.
    Int4,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoundingArg {
    Search,
    Gptq,
}

/// A size in bytes: a number, optionally with kB, MB, GB (powers of 1000) or KiB, MiB, GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_bytes: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}` (bytes, kB, MB, GB, KiB, MiB or GiB)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a size (e.g. 12MB or 12000000)"))?;
    let bytes = value * unit_bytes;
    if !(bytes >= 1.0 && bytes < 1e15) {
        return Err(format!("`{text}`: a size from 1 byte to 1 PB"));
    }
    Ok(bytes.round() as u64)
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TableBitsArg {
    Int4,
    Int8,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VerifyPrecisionArg {
    Fp32,
    Fp16,
    Int8Dynamic,
    Int8Static,
    Int4,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FlavourArg {
    Portable,
    Onnxruntime,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PackageFormatArg {
    /// ONNX Runtime Mobile's ORT format.
    Ort,
    /// A static web site (onnxruntime-web, WebAssembly).
    Web,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Arm64,
    X86Vnni,
    X86Avx2,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Auto,
    Tract,
    Ort,
}

/// `--calibration-engine`: calibration has no auto (tract's ranges are the same on every CPU,
/// ONNX Runtime's are not, so the choice is the user's; tract falls back by itself).
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum CalibrationEngineArg {
    Tract,
    Ort,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    Mse,
    /// Removed (see the README): refused with an explanation.
    #[value(hide = true)]
    Entropy,
}

impl FlavourArgs {
    fn resolve(&self, onnxruntime: &OrtLibraryArg) -> Result<Flavour, PipelineError> {
        Flavour::new(self.flavour == FlavourArg::Onnxruntime, onnxruntime.ort_library.as_deref())
    }
}

/// The engine verify and answer start from, and whether `--engine auto` may move the artifact to
/// tract where that engine is not exact on this CPU: auto is ONNX Runtime where this build has it
/// and its library is given, tract otherwise.
fn engine_choice(engine: EngineArg, onnxruntime: &OrtLibraryArg) -> Result<(EngineChoice, bool), PipelineError> {
    let library = onnxruntime.ort_library.as_deref();
    match engine {
        EngineArg::Tract => Ok((EngineChoice::Tract, false)),
        EngineArg::Ort => Ok((qaforge_pipeline::onnxruntime(library)?, false)),
        EngineArg::Auto if qaforge_pipeline::WITH_ONNXRUNTIME && library.is_some() => Ok((qaforge_pipeline::onnxruntime(library)?, true)),
        EngineArg::Auto => Ok((EngineChoice::Tract, false)),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A verification outcome that is not success: exit code 1 (FAIL, outside tolerance) or 3 (NOT
/// VERIFIED, the engine does not compute the artifact exactly on this machine).
#[derive(Debug)]
struct Verdict {
    code: u8,
    label: &'static str,
    message: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Verdict {}

/// A progress bar for the library's (done, total) callbacks.
fn progress_bar() -> (indicatif::ProgressBar, impl Fn(usize, usize) + Sync) {
    let bar = indicatif::ProgressBar::new(0);
    let handle = bar.clone();
    (bar, move |done: usize, total: usize| {
        handle.set_length(total as u64);
        handle.inc(done as u64);
    })
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
    let result = run(Cli::parse().command);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<Verdict>() {
            Some(verdict) => {
                eprintln!("qaforge: {}: {err}", verdict.label);
                ExitCode::from(verdict.code)
            }
            None => {
                eprintln!("qaforge: error: {}", error_text(&err));
                ExitCode::from(2)
            }
        },
    }
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

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Convert { model_dir, output, opset, allow_non_finite, flavour, onnxruntime } => {
            let request = qaforge_pipeline::ConvertRequest { model_dir, output, emit: qaforge_onnx::EmitOptions { opset, allow_non_finite }, flavour: flavour.resolve(&onnxruntime)? };
            let done = qaforge_pipeline::convert(&request)?;
            for warning in &done.warnings {
                eprintln!("qaforge: warning: {warning}");
            }
            println!("converted {} -> {}", request.model_dir.display(), request.output.display());
            println!("  architecture  {}", done.architecture);
            println!("  weights       {}", done.weights);
            println!("  parameters    {}", done.parameters);
            println!("  tensors read  {} of {}", done.tensors_read.0, done.tensors_read.1);
            if !done.unused_tensors.is_empty() {
                println!("  unused        {}", done.unused_tensors.join(", "));
            }
            println!("  graph         {}", done.graph);
            if let Some(flavour) = &done.flavour {
                println!("  onnxruntime   {flavour}");
            }
            println!("  file          {} ({} bytes)", human_bytes(done.bytes), done.bytes);
            println!("  sha256        {}", done.sha256);
            println!("  time          {:.3} s", done.seconds);
        }
        Command::Quantize { input, output, precision, calibration, tokenizer, samples, method, percentile, block_size, embeddings, rounding, max_size, report, exclude, int8_qa_head, per_tensor, target, reduce_range, max_f1_drop, held_back, golden, batch_size, inputs, calibration_engine, onnxruntime, flavour } => {
            let target = match target {
                TargetArg::Arm64 => qaforge_quantize::Target::Arm64,
                TargetArg::X86Vnni => qaforge_quantize::Target::X86Vnni,
                TargetArg::X86Avx2 => qaforge_quantize::Target::X86Avx2,
            };
            let options = qaforge_quantize::QuantizeOptions {
                precision: match precision {
                    PrecisionArg::Fp16 => Precision::Fp16,
                    PrecisionArg::Int8Dynamic => Precision::Int8Dynamic,
                    PrecisionArg::Int8Static => Precision::Int8Static,
                    PrecisionArg::Int4 => Precision::Int4,
                },
                exclude,
                int8_qa_head,
                target,
                weights: qaforge_quantize::WeightOptions::for_target(target, per_tensor, reduce_range),
                int4: qaforge_quantize::Int4Options {
                    block_size,
                    tables: match embeddings {
                        TableBitsArg::Int4 => qaforge_quantize::TableBits::Int4,
                        TableBitsArg::Int8 => qaforge_quantize::TableBits::Int8,
                    },
                    rounding: match rounding {
                        RoundingArg::Search => qaforge_quantize::Rounding::Search,
                        RoundingArg::Gptq => qaforge_quantize::Rounding::Gptq,
                    },
                    max_size,
                },
                method: match method {
                    MethodArg::Minmax => qaforge_quantize::CalibrationMethod::MinMax,
                    MethodArg::Percentile => qaforge_quantize::CalibrationMethod::Percentile(percentile),
                    MethodArg::Mse => qaforge_quantize::CalibrationMethod::Mse,
                    MethodArg::Entropy => anyhow::bail!(
                        "--method entropy was removed: its KL-divergence ranges clip BERT's outlier features (F1 -19.4 on the trained fixture golden/minilm-l6-squad2); use --method mse (squared-error-optimal ranges) or percentile"
                    ),
                },
                batch_size,
                threads: cores(),
                input_names: inputs.input_names,
                calibration_fallback: match calibration_engine {
                    CalibrationEngineArg::Tract => qaforge_pipeline::onnxruntime(onnxruntime.ort_library.as_deref()).ok(),
                    CalibrationEngineArg::Ort => None,
                },
                calibration_engine: match calibration_engine {
                    CalibrationEngineArg::Tract => EngineChoice::Tract,
                    CalibrationEngineArg::Ort => qaforge_pipeline::onnxruntime(onnxruntime.ort_library.as_deref())?,
                },
            };
            let request = qaforge_pipeline::QuantizeRequest {
                flavour: flavour.resolve(&onnxruntime)?,
                input,
                output,
                options,
                calibration,
                tokenizer,
                samples,
                search: max_f1_drop.map(|max_f1_drop| qaforge_pipeline::Search { max_f1_drop, golden, held_back }),
            };
            let (bar, progress) = progress_bar();
            let done = qaforge_pipeline::quantize(&request, &progress);
            bar.finish_and_clear();
            let done = done?;
            print_quantized(&request, &done);
            if let Some(path) = report {
                qaforge_pipeline::write_quantize_report(&request, &done, &path).context("writing the report")?;
                println!("  report          {} (and .md)", path.display());
            }
        }
        Command::Package { artifact, format: PackageFormatArg::Web, output, tokenizer, web_runtime, inputs, operators_config, .. } => {
            if operators_config.is_some() {
                anyhow::bail!("--operators-config is for --format ort (the web package's page needs no operator list)");
            }
            let tokenizer = tokenizer.ok_or_else(|| anyhow::anyhow!("--format web needs --tokenizer MODEL_DIR (the model directory whose tokenizer the page uses)"))?;
            let request = qaforge_pipeline::WebPackageRequest { artifact, tokenizer, output, node_modules: web_runtime, input_names: inputs.input_names };
            let done = qaforge_pipeline::package_web(&request)?;
            let site = &done.site;
            println!("packaged {} -> {}/ (a static site: serve the folder and open index.html)", request.artifact.display(), site.dir.display());
            println!("  runtime       onnxruntime-web {} (WebAssembly), @huggingface/tokenizers {}", site.onnxruntime_web, site.tokenizers);
            println!("  files         {} ({} bytes in all)", site.files.len(), site.total_bytes());
            println!("  model sha256  {}", site.artifact_sha256);
            println!("  time          {:.3} s", done.seconds);
        }
        Command::Package { artifact, format: PackageFormatArg::Ort, output, operators_config, onnxruntime, tokenizer, .. } => {
            if tokenizer.is_some() {
                anyhow::bail!("--tokenizer is for --format web (an .ort package holds the model only)");
            }
            let request = qaforge_pipeline::PackageRequest { artifact, output, operators_config, library: onnxruntime.ort_library };
            let done = qaforge_pipeline::package(&request)?;
            println!("packaged {} -> {} (ORT format, ONNX Runtime's optimizations applied offline)", request.artifact.display(), done.ort_path.display());
            println!("  operators     {} (for a reduced build: --include_ops_by_config)", done.config_path.display());
            for (domain, opset, ops) in &done.operators {
                println!("    {domain} opset {opset}: {}", ops.join(", "));
            }
            println!("  file          {} ({} bytes)", human_bytes(done.ort_bytes), done.ort_bytes);
            println!("  sha256        {}", done.ort_sha256);
            println!("  time          {:.3} s", done.seconds);
        }
        Command::Answer { artifact, tokenizer, question, context, inputs, engine, json } => {
            let (engine, exact_fallback) = engine_choice(engine.engine, &engine.onnxruntime)?;
            let request = qaforge_pipeline::AnswerRequest { artifact, tokenizer, question, context, input_names: inputs.input_names, engine, exact_fallback, cores: cores() };
            let answer = qaforge_pipeline::answer(&request)?;
            if json {
                println!("{}", serde_json::json!({"text": answer.text, "null_odds": answer.null_odds, "margin": answer.margin, "windows": answer.windows}));
            } else if answer.text.is_empty() {
                println!("no answer (null score beats the best span by {:.3})", answer.null_odds);
            } else {
                println!("{}", answer.text);
                println!("(best span beats the null score by {:.3}; {} window(s))", -answer.null_odds, answer.windows);
            }
        }
        Command::Table { reports } => {
            println!("{}", qaforge_verify::MARKDOWN_HEADER);
            for row in qaforge_pipeline::reports::table_rows(&reports)? {
                println!("{row}");
            }
        }
        Command::Eval { data, predictions, out_file, na_prob_file, na_prob_thresh } => {
            let evaluation = qaforge_pipeline::reports::evaluate(&data, &predictions, na_prob_file.as_deref(), na_prob_thresh)?;
            // stdout carries exactly the official script's JSON; the summary goes to stderr.
            eprintln!("{}", evaluation.summary);
            if evaluation.unpredicted > 0 {
                eprintln!("warning: {} questions have no prediction and are left out of the totals", evaluation.unpredicted);
            }
            println!("{}", evaluation.json);
            if let Some(path) = out_file {
                qaforge_onnx::write_atomically(&path, format!("{}\n", evaluation.json).as_bytes())?;
            }
        }
        Command::Golden { model_dir, data, output, limit, max_length, doc_stride, batch_size } => {
            let started = std::time::Instant::now();
            let (bar, progress) = progress_bar();
            let manifest = qaforge_verify::make_bundle(&model_dir, &data, &output, &qaforge_verify::BundleOptions { limit, max_length, doc_stride, batch_size }, &progress);
            bar.finish_and_clear();
            let manifest = manifest?;
            let seconds = started.elapsed().as_secs_f64();
            println!("golden bundle {} -> {}", model_dir.display(), output.display());
            println!("  model       {} (checkpoint sha256 {})", manifest.model.architecture, manifest.model.source_sha256);
            println!("  data        {}: {} questions{}", manifest.data.name, manifest.data.questions, manifest.data.limit.map_or(String::new(), |l| format!(" (first {l})")));
            println!("  features    {} (max_length {}, doc_stride {})", manifest.features, manifest.settings.max_length, manifest.settings.doc_stride);
            println!("  reference   {}", manifest.reference);
            println!("  time        {seconds:.2} s ({:.1} features/s)", manifest.features as f64 / seconds.max(1e-9));
            println!("reference EM {:.2}, F1 {:.2} on {} questions", manifest.scores.exact, manifest.scores.f1, manifest.data.questions);
        }
        Command::Verify { artifact, golden, shard, allow_other_checkpoint, inputs, max_abs_diff, max_f1_drop, min_cosine, min_agreement_f1, precision, batch_size, report, engine, logits, runtime } => {
            let precision = precision.map(|p| match p {
                VerifyPrecisionArg::Fp32 => Precision::Fp32,
                VerifyPrecisionArg::Fp16 => Precision::Fp16,
                VerifyPrecisionArg::Int8Dynamic => Precision::Int8Dynamic,
                VerifyPrecisionArg::Int8Static => Precision::Int8Static,
                VerifyPrecisionArg::Int4 => Precision::Int4,
            });
            let overrides = qaforge_verify::ToleranceOverrides { precision, max_abs_diff, max_f1_drop, min_cosine, min_agreement_f1 };
            let shard = shard.as_deref().map(qaforge_verify::Shard::parse).transpose().map_err(|e| anyhow::anyhow!("--shard {e}"))?.unwrap_or(qaforge_verify::Shard::WHOLE);
            let (engine, exact_fallback) = engine_choice(engine.engine, &engine.onnxruntime)?;
            let bundle = qaforge_verify::Bundle::open(&golden)?;
            let result = match logits {
                // Verify's second step only, on logits a device computed.
                Some(logits) => {
                    let artifact = qaforge_verify::Artifact::open(&artifact, &bundle, &engine, allow_other_checkpoint)?;
                    let computed = qaforge_verify::read_logits(&logits, &bundle, &artifact, shard, runtime.as_deref())?;
                    qaforge_verify::judge(&artifact, &bundle, shard, computed, overrides)
                }
                None => {
                    let run = qaforge_verify::RunOptions { engine, batch_size, cores: cores(), shard, allow_other_checkpoint, input_names: inputs.input_names, exact_fallback };
                    let (bar, progress) = progress_bar();
                    let result = qaforge_verify::verify(&artifact, &bundle, overrides, &run, &progress);
                    bar.finish_and_clear();
                    result
                }
            };
            conclude(&result?, report)?;
        }
        Command::Merge { reports, golden, report } => conclude(&qaforge_pipeline::reports::merge(&reports, golden.as_deref())?, report)?,
    }
    Ok(())
}

/// Prints what quantize did.
fn print_quantized(request: &qaforge_pipeline::QuantizeRequest, done: &qaforge_pipeline::QuantizeOutcome) {
    for note in &done.notes {
        println!("{note}");
    }
    if let Some(why) = &done.summary.calibration_fallback {
        // int8-static calibrates ranges; int4 (GPTQ, --max-size) collects input statistics.
        let what = if request.options.precision == Precision::Int4 { "input statistics collected" } else { "calibrated" };
        eprintln!("note: {what} in ONNX Runtime, because {why} (recorded in the artifact's provenance; ONNX Runtime's ranges and statistics may differ from another CPU's)");
    }
    let precision = request.options.precision;
    println!("quantized {} -> {} ({precision})", request.input.display(), request.output.display());
    if precision == Precision::Fp16 {
        println!("  float16 nodes   {}", done.summary.converted.len());
        println!("  casts inserted  {}", done.summary.casts);
    } else if precision == Precision::Int4 {
        let rounding = request.options.int4.rounding.as_str();
        println!("  4-bit MatMuls   {} (blocks of {}, rounding: {rounding})", done.summary.converted.len(), request.options.int4.block_size);
        if let Some(max_size) = request.options.int4.max_size {
            println!("  2-bit MatMuls   {} (size budget {max_size} bytes)", done.summary.two_bit.len());
        }
        if done.summary.statistics_features > 0 {
            let engine = done.summary.calibration_engine.unwrap_or("tract");
            println!("  statistics      {} features in {engine} (Gram matrices of the inputs of {} products)", done.summary.statistics_features, done.summary.layers.len());
        }
        println!("  4-bit tables    {}", done.summary.int4_tables.join(", "));
        println!("  int8 tables     {}", done.summary.int8_tables.join(", "));
    } else {
        println!("  int8 MatMuls    {}", done.summary.converted.len());
        println!("  int8 tables     {}", done.summary.int8_tables.join(", "));
    }
    if let Some(flavour) = &done.flavour {
        println!("  onnxruntime   {flavour}");
    }
    if let Some(count) = done.calibration_features {
        let engine = done.summary.calibration_engine.unwrap_or("tract");
        println!("  calibration     {count} features, {} in {engine} ({} activation ranges)", request.options.method, done.summary.ranges.len());
    }
    // One line per kept-float reason, with a count and a few names.
    for (reason, nodes) in done.kept_float_by_reason() {
        let shown: Vec<&str> = nodes.iter().take(3).copied().collect();
        let more = if nodes.len() > 3 { format!(", … {} more", nodes.len() - 3) } else { String::new() };
        println!("  kept float      {} node(s): {reason} ({}{more})", nodes.len(), shown.join(", "));
    }
    let (before, after) = done.sizes;
    println!("  size            {} -> {} ({:.1}%)", human_bytes(before), human_bytes(after), 100.0 * after as f64 / before as f64);
    if let Some(log) = &done.search {
        for step in &log.steps {
            println!("  search          F1 drop {:+.2}, cosine {:.6} with {} group(s) float: {}", step.f1_drop, step.cosine, step.kept_float.len(), step.kept_float.join(", "));
        }
        if let Some((worst, mse)) = log.sensitivity.first() {
            println!("  sensitivity     most harmful group {worst} (logit MSE {mse:.3e} when quantized alone)");
        }
    }
    println!("  sha256          {}", done.sha256);
    println!("  time            {:.3} s", done.seconds);
}

/// Writes the report (JSON and Markdown), prints its row and summary, and turns its verdict into
/// the exit code: PASS and PARTIAL 0, FAIL 1, NOT VERIFIED 3.
fn conclude(result: &qaforge_verify::Report, report: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = report {
        qaforge_pipeline::reports::write_report(result, &path).context("writing the report")?;
    }
    println!("{}\n{}", qaforge_verify::MARKDOWN_HEADER, result.markdown_row());
    println!(
        "{}: {}; {} features in {:.2} s ({}); reference F1 {:.2}; {} of {} predictions identical",
        result.artifact.display(),
        result.data,
        result.features,
        result.seconds,
        result.computed_on(),
        result.squad.reference.f1,
        result.squad.identical_predictions,
        result.squad.questions
    );
    for note in &result.provenance {
        eprintln!("qaforge: warning: {note}");
    }
    if let Some(note) = &result.engine_note {
        return Err(Verdict { code: 3, label: "NOT VERIFIED", message: note.clone() }.into());
    }
    if let Some(part) = &result.part {
        println!("PARTIAL (shard {}/{}): merge every shard's report with `qaforge merge`", part.shard.index + 1, part.shard.count);
        return Ok(());
    }
    if !result.pass {
        return Err(Verdict { code: 1, label: "FAIL", message: result.failures.join("; ") }.into());
    }
    println!("PASS ({} tolerances; precision {})", result.precision, result.precision_source);
    Ok(())
}
