//! qaforge: turns BERT-family extractive QA checkpoints into verified ONNX artifacts.
//!
//! This binary only parses arguments and calls the library crates; exit codes are 0 for
//! success, 1 for an artifact outside tolerance, 2 for bad input or usage, 3 for an artifact
//! that the chosen engine cannot compute on this machine as its target does (not verified).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use qaforge_verify::Engine;
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
        /// Emit weights holding NaN or Inf with a warning instead of refusing the checkpoint.
        #[arg(long)]
        allow_non_finite: bool,
        /// The engine the artifact is for: portable (standard ONNX, any engine) or onnxruntime
        /// (exact folds and com.microsoft fused ops that ONNX Runtime runs fastest; it runs in
        /// ONNX Runtime only, and is loaded there before it is written).
        #[arg(long = "for", value_enum, default_value_t = FlavourArg::Portable)]
        flavour: FlavourArg,
        /// libonnxruntime for --for onnxruntime (default: $ORT_DYLIB_PATH).
        #[arg(long, env = "ORT_DYLIB_PATH")]
        ort_library: Option<PathBuf>,
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
        /// The graph's inputs for token ids, attention mask and token types (the last for models
        /// that take them), comma-separated, when its input names are not the usual ones.
        #[arg(long, value_delimiter = ',')]
        input_names: Option<Vec<String>>,
        /// The engine int8-static calibration runs the float graph in: tract (built in), or ort
        /// (ONNX Runtime) for graphs tract cannot run (needs `--features ort` and libonnxruntime).
        #[arg(long, value_enum, default_value_t = EngineArg::Tract)]
        calibration_engine: EngineArg,
        /// libonnxruntime for `--calibration-engine ort` and `--for onnxruntime` (default: $ORT_DYLIB_PATH).
        #[arg(long, env = "ORT_DYLIB_PATH")]
        ort_library: Option<PathBuf>,
        /// The engine the artifact is for: portable (standard ONNX, any engine) or onnxruntime
        /// (exact folds before quantizing, com.microsoft fused ops after; ONNX Runtime only, and
        /// loaded there before it is written). int8 modes only.
        #[arg(long = "for", value_enum, default_value_t = FlavourArg::Portable)]
        flavour: FlavourArg,
    },
    /// Package an artifact for ONNX Runtime Mobile: an ORT-format model (ONNX Runtime's
    /// optimizations applied offline) and the required_operators.config of a reduced build.
    Package {
        /// The ONNX artifact (portable or --for onnxruntime).
        artifact: PathBuf,
        /// The package format.
        #[arg(long, value_enum)]
        format: PackageFormatArg,
        /// Where to write the ORT-format model (by convention *.ort).
        #[arg(short, long)]
        output: PathBuf,
        /// Where to write the operator list (default: required_operators.config beside --output).
        #[arg(long)]
        operators_config: Option<PathBuf>,
        /// libonnxruntime, which writes the package (default: $ORT_DYLIB_PATH).
        #[arg(long, env = "ORT_DYLIB_PATH")]
        ort_library: Option<PathBuf>,
    },
    /// Answer one question with an artifact: prints the answer span (or that there is none) and its score.
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
        /// The graph's inputs for token ids, attention mask and token types (the last for models
        /// that take them), comma-separated, when its input names are not the usual ones.
        #[arg(long, value_delimiter = ',')]
        input_names: Option<Vec<String>>,
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
        /// Features per reference batch.
        #[arg(long, default_value_t = 8)]
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
        /// The graph's inputs for token ids, attention mask and token types (the last for models
        /// that take them), comma-separated, when its input names are not the usual ones.
        #[arg(long, value_delimiter = ',')]
        input_names: Option<Vec<String>>,
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
        /// Features per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Write the JSON report here, and the Markdown report beside it (same name, .md).
        #[arg(long)]
        report: Option<PathBuf>,
        /// The engine that runs the artifact: tract (built in) or ort (ONNX Runtime, the runtime
        /// phones use; needs a build with `--features ort` and libonnxruntime).
        #[arg(long, value_enum, default_value_t = EngineArg::Tract)]
        engine: EngineArg,
        /// libonnxruntime for `--engine ort` (default: $ORT_DYLIB_PATH), e.g. the one inside the
        /// onnxruntime PyPI wheel (site-packages/onnxruntime/capi/libonnxruntime.so.*).
        #[arg(long, env = "ORT_DYLIB_PATH")]
        ort_library: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Fp16,
    Int8Dynamic,
    Int8Static,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FlavourArg {
    Portable,
    Onnxruntime,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PackageFormatArg {
    Ort,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Arm64,
    X86Vnni,
    X86Avx2,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
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

/// What `--max-f1-drop` asks of the sensitivity search.
struct Search {
    max_f1_drop: f64,
    /// A golden bundle to measure F1 on; without one the search is label-free.
    golden: Option<PathBuf>,
    /// Questions held back for the label-free search.
    held_back: usize,
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

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `qaforge eval ... | head` would panic in println! once head exits;
    // restore the default, under which a closed pipe ends the process quietly, as it does for
    // other Unix tools.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert { model_dir, output, opset, allow_non_finite, flavour, ort_library } => (|| {
            let onnxruntime = flavour_library(flavour, ort_library)?;
            convert(&model_dir, &output, qaforge_onnx::EmitOptions { opset, allow_non_finite }, onnxruntime.as_deref())
        })(),
        Command::Package { artifact, format: PackageFormatArg::Ort, output, operators_config, ort_library } => package(&artifact, &output, operators_config, ort_library),
        Command::Quantize { input, output, precision, calibration, tokenizer, samples, method, percentile, exclude, int8_qa_head, per_tensor, target, reduce_range, max_f1_drop, held_back, golden, batch_size, input_names, calibration_engine, ort_library, flavour } => (|| {
            let onnxruntime = flavour_library(flavour, ort_library.clone())?;
            let target = match target {
                TargetArg::Arm64 => qaforge_quantize::Target::Arm64,
                TargetArg::X86Vnni => qaforge_quantize::Target::X86Vnni,
                TargetArg::X86Avx2 => qaforge_quantize::Target::X86Avx2,
            };
            let options = qaforge_quantize::QuantizeOptions {
                precision: match precision {
                    PrecisionArg::Fp16 => qaforge_quantize::Precision::Fp16,
                    PrecisionArg::Int8Dynamic => qaforge_quantize::Precision::Int8Dynamic,
                    PrecisionArg::Int8Static => qaforge_quantize::Precision::Int8Static,
                },
                exclude,
                int8_qa_head,
                target,
                weights: qaforge_quantize::WeightOptions::for_target(target, per_tensor, reduce_range),
                method: match method {
                    MethodArg::Minmax => qaforge_quantize::CalibrationMethod::MinMax,
                    MethodArg::Percentile => qaforge_quantize::CalibrationMethod::Percentile(percentile),
                    MethodArg::Mse => qaforge_quantize::CalibrationMethod::Mse,
                    MethodArg::Entropy => anyhow::bail!(
                        "--method entropy was removed: its KL-divergence ranges clip BERT's outlier features (F1 -19.4 on the trained fixture golden/minilm-l6-squad2); use --method mse (squared-error-optimal ranges) or percentile"
                    ),
                },
                batch_size,
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                input_names,
                calibration_engine: engine_choice(calibration_engine, ort_library)?,
            };
            let search = max_f1_drop.map(|drop| Search { max_f1_drop: drop, golden, held_back });
            anyhow::ensure!(
                onnxruntime.is_none() || options.precision != qaforge_quantize::Precision::Fp16,
                "--for onnxruntime is for the int8 modes: ONNX Runtime's CPU kernels compute float16 slower than float32 (use the portable fp16 artifact for GPUs and NNAPI/CoreML)"
            );
            quantize(&input, &output, &options, calibration.as_deref(), tokenizer.as_deref(), samples, search, onnxruntime.as_deref())
        })(),
        Command::Table { reports } => table(&reports),
        Command::Answer { artifact, tokenizer, question, context, input_names } => answer(&artifact, &tokenizer, question, context, input_names.as_deref()),
        Command::Eval { data, predictions, out_file, na_prob_file, na_prob_thresh } => eval(&data, &predictions, out_file, na_prob_file, na_prob_thresh),
        Command::Golden { model_dir, data, output, limit, max_length, doc_stride, batch_size } => {
            golden(&model_dir, &data, &output, &qaforge_verify::BundleOptions { limit, max_length, doc_stride, batch_size })
        }
        Command::Verify { artifact, golden, shard, allow_other_checkpoint, input_names, max_abs_diff, max_f1_drop, min_cosine, min_agreement_f1, batch_size, report, engine, ort_library } => (|| {
            let overrides = qaforge_verify::ToleranceOverrides { max_abs_diff, max_f1_drop, min_cosine, min_agreement_f1 };
            let shard = shard.as_deref().map(qaforge_verify::Shard::parse).transpose().map_err(|e| anyhow::anyhow!("--shard {e}"))?.unwrap_or(qaforge_verify::Shard::WHOLE);
            let engine = engine_choice(engine, ort_library)?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let run = qaforge_verify::RunOptions { engine, batch_size, cores, shard, allow_other_checkpoint, input_names };
            verify(&artifact, &golden, overrides, &run, report)
        })(),
        Command::Merge { reports, golden, report } => merge(&reports, golden.as_deref(), report),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Verdict>() => {
            let verdict = err.downcast_ref::<Verdict>().map_or((2, "error"), |v| (v.code, v.label));
            eprintln!("qaforge: {}: {err}", verdict.1);
            ExitCode::from(verdict.0)
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

/// For `--for onnxruntime`, the ONNX Runtime library the artifact is checked in; `None` for the portable flavour.
fn flavour_library(flavour: FlavourArg, ort_library: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    if flavour == FlavourArg::Portable {
        return Ok(None);
    }
    match engine_choice(EngineArg::Ort, ort_library)? {
        qaforge_verify::EngineChoice::OnnxRuntime { library } => Ok(Some(library)),
        qaforge_verify::EngineChoice::Tract => anyhow::bail!("--for onnxruntime needs ONNX Runtime"),
    }
}

/// Checks that ONNX Runtime from `library` loads the artifact `bytes` about to be written to `output`.
fn check_loads_in_onnxruntime(library: &std::path::Path, bytes: &[u8], output: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(feature = "ort")]
    {
        qaforge_onnxruntime::package::check_loads(library, bytes, output).context("the artifact was not written")?;
        Ok(())
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (bytes, output);
        anyhow::bail!("{}: this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`", library.display())
    }
}

fn package(artifact: &std::path::Path, output: &std::path::Path, operators_config: Option<PathBuf>, ort_library: Option<PathBuf>) -> anyhow::Result<()> {
    let library = flavour_library(FlavourArg::Onnxruntime, ort_library)?.context("ONNX Runtime writes the package")?;
    let started = Instant::now();
    let bytes = std::fs::read(artifact).with_context(|| format!("reading {}", artifact.display()))?;
    anyhow::ensure!(!qaforge_verify::is_ort_format(&bytes), "{}: already an ORT-format model", artifact.display());
    let model = qaforge_onnx::decode_model(&bytes, artifact)?;
    let config = operators_config.unwrap_or_else(|| output.with_file_name("required_operators.config"));
    #[cfg(feature = "ort")]
    {
        let packaged = qaforge_onnxruntime::package::package_ort(&library, &model, artifact, &bytes, output, &config)?;
        println!("packaged {} -> {} (ORT format, ONNX Runtime's optimizations applied offline)", artifact.display(), packaged.ort_path.display());
        println!("  operators     {} (for a reduced build: --include_ops_by_config)", packaged.config_path.display());
        for (domain, by_opset) in &packaged.operators {
            for (opset, ops) in by_opset {
                println!("    {domain} opset {opset}: {}", ops.iter().cloned().collect::<Vec<_>>().join(", "));
            }
        }
        println!("  file          {} ({} bytes)", human_bytes(packaged.ort_bytes), packaged.ort_bytes);
        println!("  sha256        {}", packaged.ort_sha256);
        println!("  time          {:.3} s", started.elapsed().as_secs_f64());
        Ok(())
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (model, config, started, library);
        anyhow::bail!("this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`")
    }
}

/// Prints what the ONNX Runtime flavour's passes did and the com.microsoft ops they left in `model`.
fn print_flavour(summary: &qaforge_onnxruntime::FuseSummary, model: &qaforge_onnx::pb::ModelProto) {
    let fused: Vec<String> = qaforge_onnxruntime::op_counts(model).into_iter().filter(|(op, _)| op.starts_with(qaforge_onnxruntime::MS_DOMAIN)).map(|(op, n)| format!("{n} {op}")).collect();
    println!("  onnxruntime   {} ({})", summary.describe(), if fused.is_empty() { "no fused ops".to_string() } else { fused.join(", ") });
}

fn convert(model_dir: &std::path::Path, output: &std::path::Path, options: qaforge_onnx::EmitOptions, onnxruntime: Option<&std::path::Path>) -> anyhow::Result<()> {
    let opset = options.opset;
    let started = Instant::now();
    let checkpoint = qaforge_checkpoint::Checkpoint::open(model_dir)?;
    for key in &checkpoint.unknown_config_keys {
        eprintln!("qaforge: warning: {}: unknown config key `{key}` ignored", model_dir.join("config.json").display());
    }
    let emitted = qaforge_onnx::convert(&checkpoint, options)?;
    for (name, count) in &emitted.non_finite {
        eprintln!("qaforge: warning: tensor `{name}` holds {count} non-finite value(s) (NaN or Inf), emitted as they are (--allow-non-finite)");
    }
    let mut model = emitted.model;
    let mut flavour = qaforge_onnxruntime::FuseSummary::default();
    if onnxruntime.is_some() {
        qaforge_onnxruntime::fold(&mut model, &mut flavour)?;
        qaforge_onnxruntime::fuse(&mut model, &mut flavour)?;
    }
    let bytes = qaforge_onnx::encode_checked(&model, output)?;
    if let Some(library) = onnxruntime {
        check_loads_in_onnxruntime(library, &bytes, output)?;
    }
    // The printed sha256 is computed while the file is written.
    let (written, sha256) = std::thread::scope(|scope| {
        let sha256 = scope.spawn(|| qaforge_onnx::sha256_hex(&bytes));
        (qaforge_onnx::write_atomically(output, &bytes), sha256.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    written?;
    let c = &checkpoint.config;
    println!("converted {} -> {}", model_dir.display(), output.display());
    println!("  architecture  {}: {}", c.architecture(), c.describe());
    println!("  weights       {} ({})", checkpoint.format, checkpoint.weights.files().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    println!("  parameters    {}", emitted.parameters);
    println!("  tensors read  {} of {}", emitted.tensors_used, checkpoint.weights.len());
    if !emitted.unused_tensors.is_empty() {
        println!("  unused        {}", emitted.unused_tensors.join(", "));
    }
    let graph = model.graph.as_ref().map_or(0, |g| g.node.len());
    let inputs = model.graph.as_ref().map_or_else(Vec::new, |g| g.input.iter().map(|i| i.name.as_str()).collect());
    println!("  graph         opset {opset}, {graph} nodes, inputs {} [batch, sequence]", inputs.join("/"));
    if onnxruntime.is_some() {
        print_flavour(&flavour, &model);
    }
    println!("  file          {} ({} bytes)", human_bytes(bytes.len() as u64), bytes.len());
    println!("  sha256        {sha256}");
    println!("  time          {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn quantize(
    input: &std::path::Path,
    output: &std::path::Path,
    options: &qaforge_quantize::QuantizeOptions,
    calibration: Option<&std::path::Path>,
    tokenizer: Option<&std::path::Path>,
    samples: usize,
    search: Option<Search>,
    onnxruntime: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let input_bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let mut model = qaforge_onnx::decode_model(&input_bytes, input)?;
    // The ONNX Runtime flavour folds the float graph first, so that int8 weights are quantized
    // from the folded values and calibration measures the graph that will run.
    let mut flavour = qaforge_onnxruntime::FuseSummary::default();
    if onnxruntime.is_some() {
        qaforge_onnxruntime::fold(&mut model, &mut flavour)?;
    }
    // The calibration file's features: int8-static calibrates on the first `samples`; the
    // label-free search measures on questions held back after them.
    let label_free = search.as_ref().is_some_and(|s| s.golden.is_none());
    let calibration_data = match (calibration, tokenizer) {
        (Some(data), Some(tokenizer)) if options.precision == qaforge_quantize::Precision::Int8Static || label_free => {
            let squad = qaforge_squad::SquadFile::load(data)?;
            println!("calibration data {}: {}", data.display(), squad.summary());
            let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(tokenizer)?;
            // Calibration reads the first `samples` features, and every question gives at least
            // one: its first `samples` questions are enough, unless the label-free search also
            // needs the questions held back after them (a dev-set-sized file is not tokenized whole).
            let needed = if label_free { squad.examples.len() } else { samples.min(squad.examples.len()) };
            let features = tokenizer.features(&squad.examples[..needed], &qaforge_squad::FeatureOptions::default())?;
            Some((squad, features))
        }
        _ if options.precision == qaforge_quantize::Precision::Int8Static => {
            anyhow::bail!("int8-static needs --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>")
        }
        _ if label_free => anyhow::bail!("--max-f1-drop without --golden measures on held-back questions: it needs --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>"),
        _ => None,
    };
    let calibration_count = if options.precision == qaforge_quantize::Precision::Int8Static { samples } else { 0 };
    let features = match &calibration_data {
        Some((_, f)) if options.precision == qaforge_quantize::Precision::Int8Static => Some(f.clone().truncated(samples)),
        _ => None,
    };
    let passes = if options.method == qaforge_quantize::CalibrationMethod::MinMax { 1 } else { 2 };
    let bar = indicatif::ProgressBar::new(features.as_ref().map_or(0, |f| f.count * passes) as u64);
    let input_sha256 = qaforge_onnx::sha256_hex(&input_bytes);
    // The sensitivity search, on whichever slice --max-f1-drop measures with the cosine floor
    // verify applies to this precision.
    let min_cosine = qaforge_verify::Tolerances::for_precision(options.precision.as_str()).min_cosine.unwrap_or(0.0);
    let search_on = |slice: &qaforge_quantize::sensitivity::EvaluationSlice<'_>, max_f1_drop: f64| {
        qaforge_quantize::sensitivity::search(&model, options, features.as_ref(), slice, max_f1_drop, min_cosine, &input_sha256, &|n| bar.inc(n as u64))
    };
    let (model, summary, search_log) = match search {
        None => {
            let (m, s) = qaforge_quantize::quantize(&model, options, features.as_ref(), &input_sha256, &|n| bar.inc(n as u64))?;
            (m, s, None)
        }
        Some(Search { max_f1_drop, golden: Some(golden), .. }) => {
            let bundle = qaforge_verify::Bundle::open(&golden)?;
            let slice = qaforge_quantize::sensitivity::EvaluationSlice { data: &bundle.data, features: &bundle.features, reference_f1: bundle.reference_f1() };
            let (m, s, log) = search_on(&slice, max_f1_drop)?;
            (m, s, Some(log))
        }
        Some(Search { max_f1_drop, golden: None, held_back }) => {
            let (squad, all) = calibration_data.as_ref().context("checked above")?;
            let (data, held) = qaforge_quantize::sensitivity::held_back(squad, all, calibration_count, held_back)
                .with_context(|| format!("--calibration has no questions left after the {calibration_count} calibration features to hold back for the label-free search"))?;
            println!("label-free search on {} held-back questions ({} features): F1 against the float artifact's own predictions", data.examples.len(), held.count);
            let (pseudo, reference_f1) = qaforge_quantize::sensitivity::label_free(&model, &data, &held, options)?;
            let slice = qaforge_quantize::sensitivity::EvaluationSlice { data: &pseudo, features: &held, reference_f1 };
            let (m, s, log) = search_on(&slice, max_f1_drop)?;
            (m, s, Some(log))
        }
    };
    bar.finish_and_clear();
    let mut model = model;
    if onnxruntime.is_some() {
        qaforge_onnxruntime::fuse(&mut model, &mut flavour)?;
    }
    let bytes = qaforge_onnx::encode_checked(&model, output)?;
    if let Some(library) = onnxruntime {
        check_loads_in_onnxruntime(library, &bytes, output)?;
    }
    qaforge_onnx::write_atomically(output, &bytes)?;
    println!("quantized {} -> {} ({})", input.display(), output.display(), options.precision.as_str());
    if options.precision == qaforge_quantize::Precision::Fp16 {
        println!("  float16 nodes   {}", summary.converted.len());
        println!("  casts inserted  {}", summary.casts);
    } else {
        println!("  int8 MatMuls    {}", summary.converted.len());
        println!("  int8 tables     {}", summary.int8_tables.join(", "));
    }
    if onnxruntime.is_some() {
        print_flavour(&flavour, &model);
    }
    if let Some(f) = &features {
        println!("  calibration     {} features, {} ({} activation ranges)", f.count, options.method, summary.ranges.len());
    }
    // Group the kept-float reasons: one line per reason with a count and a few names.
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (name, reason) in &summary.kept_float {
        by_reason.entry(reason).or_default().push(name);
    }
    for (reason, nodes) in by_reason {
        let shown: Vec<&str> = nodes.iter().take(3).copied().collect();
        let more = if nodes.len() > 3 { format!(", … {} more", nodes.len() - 3) } else { String::new() };
        println!("  kept float      {} node(s): {reason} ({}{more})", nodes.len(), shown.join(", "));
    }
    println!(
        "  size            {} -> {} ({:.1}%)",
        human_bytes(input_bytes.len() as u64),
        human_bytes(bytes.len() as u64),
        100.0 * bytes.len() as f64 / input_bytes.len() as f64
    );
    if let Some(log) = search_log {
        for step in &log.steps {
            println!("  search          F1 drop {:+.2}, cosine {:.6} with {} group(s) float: {}", step.f1_drop, step.cosine, step.kept_float.len(), step.kept_float.join(", "));
        }
        if let Some((worst, mse)) = log.sensitivity.first() {
            println!("  sensitivity     most harmful group {worst} (logit MSE {mse:.3e} when quantized alone)");
        }
    }
    println!("  sha256          {}", qaforge_onnx::sha256_hex(&bytes));
    println!("  time            {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn answer(artifact: &std::path::Path, tokenizer: &std::path::Path, question: String, context: String, input_names: Option<&[String]>) -> anyhow::Result<()> {
    anyhow::ensure!(!context.trim().is_empty(), "the context is empty");
    let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(tokenizer)?;
    let example = qaforge_squad::Example { id: "question".into(), title: String::new(), question, context, answers: vec![] };
    let features = tokenizer.features(std::slice::from_ref(&example), &qaforge_squad::FeatureOptions::default())?;
    // Decoded by qaforge first, so that a hostile file is refused with its problem named before
    // tract reads tensors by their claimed dims.
    let model = qaforge_onnx::read_model(artifact)?;
    let layout = qaforge_verify::check_inputs(&model, artifact, input_names)?;
    qaforge_verify::check_token_ids(&model, &layout, &features, artifact)?;
    let session = qaforge_verify::TractSession::with_layout(&model, &artifact.display().to_string(), layout)?;
    let logits = session.run_features(&features, 8, 1, &|_| {})?;
    let squad = qaforge_squad::SquadFile { examples: vec![example], articles: 1, paragraphs: 1 };
    let options = qaforge_squad::PostprocessOptions::default();
    let prediction = qaforge_squad::predict_all(&squad, &features, &logits.start, &logits.end, &options, true).remove("question");
    let prediction = prediction.context("no prediction")?;
    if prediction.text.is_empty() {
        println!("no answer (null score beats the best span by {:.3})", prediction.null_odds);
    } else {
        println!("{}", prediction.text);
        println!("(best span beats the null score by {:.3}; {} window(s))", -prediction.null_odds, features.count);
    }
    Ok(())
}

fn table(reports: &[PathBuf]) -> anyhow::Result<()> {
    println!("{}", qaforge_verify::MARKDOWN_HEADER);
    for path in reports {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))?;
        let row = report["table_row"].as_str().with_context(|| format!("{}: not a qaforge verify report (no table_row)", path.display()))?;
        println!("{row}");
    }
    Ok(())
}

fn eval(data: &std::path::Path, predictions_path: &std::path::Path, out_file: Option<PathBuf>, na_prob_file: Option<PathBuf>, na_prob_thresh: f64) -> anyhow::Result<()> {
    let squad = qaforge_squad::SquadFile::load(data)?;
    let predictions = qaforge_squad::load_predictions(predictions_path)?;
    let scored = squad.examples.iter().filter(|e| predictions.contains_key(&e.id)).count();
    anyhow::ensure!(scored > 0, "{}: none of its {} predictions is a question of {}", predictions_path.display(), predictions.len(), data.display());
    let na_probs = na_prob_file.as_deref().map(qaforge_squad::NoAnswerProbabilities::load).transpose()?;
    let metrics = qaforge_squad::evaluate_with_thresholds(&squad, &predictions, na_probs.as_ref(), na_prob_thresh)?;
    // stdout carries exactly the official script's JSON; the summary goes to stderr.
    eprintln!("{}: {}; {} predicted", data.display(), squad.summary(), scored);
    if scored < squad.examples.len() {
        eprintln!("warning: {} questions have no prediction and are left out of the totals", squad.examples.len() - scored);
    }
    let json = serde_json::to_string_pretty(&metrics)?;
    println!("{json}");
    if let Some(path) = out_file {
        qaforge_onnx::write_atomically(&path, format!("{json}\n").as_bytes())?;
    }
    Ok(())
}

fn engine_choice(engine: EngineArg, ort_library: Option<PathBuf>) -> anyhow::Result<qaforge_verify::EngineChoice> {
    Ok(match engine {
        EngineArg::Tract => qaforge_verify::EngineChoice::Tract,
        EngineArg::Ort => {
            anyhow::ensure!(cfg!(feature = "ort"), "this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`");
            let library = ort_library.context("ONNX Runtime needs libonnxruntime: pass --ort-library or set ORT_DYLIB_PATH")?;
            anyhow::ensure!(library.is_file(), "{}: no such file (libonnxruntime for --engine ort)", library.display());
            qaforge_verify::EngineChoice::OnnxRuntime { library }
        }
    })
}

fn verify(artifact: &std::path::Path, golden: &std::path::Path, overrides: qaforge_verify::ToleranceOverrides, run: &qaforge_verify::RunOptions, report: Option<PathBuf>) -> anyhow::Result<()> {
    let bundle = qaforge_verify::Bundle::open(golden)?;
    let bar = indicatif::ProgressBar::new(0);
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.inc(done as u64);
    };
    let result = qaforge_verify::verify(artifact, &bundle, overrides, run, &progress)?;
    bar.finish_and_clear();
    conclude(&result, report)
}

/// Writes the report (JSON and Markdown), prints its row and summary, and turns its verdict into
/// the exit code: PASS and PARTIAL 0, FAIL 1, NOT VERIFIED 3.
fn conclude(result: &qaforge_verify::Report, report: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = report {
        let json = serde_json::to_string_pretty(result)?;
        qaforge_onnx::write_atomically(&path, format!("{json}\n").as_bytes()).context("writing the JSON report")?;
        qaforge_onnx::write_atomically(&path.with_extension("md"), result.markdown().as_bytes()).context("writing the Markdown report")?;
    }
    println!("{}\n{}", qaforge_verify::MARKDOWN_HEADER, result.markdown_row());
    println!(
        "{}: {}; {} features in {:.2} s ({} on {}); reference F1 {:.2}; {} of {} predictions identical",
        result.artifact.display(),
        result.data,
        result.features,
        result.seconds,
        result.engine,
        result.cpu,
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
    println!("PASS ({} tolerances)", result.precision);
    Ok(())
}

fn merge(paths: &[PathBuf], golden: Option<&std::path::Path>, report: Option<PathBuf>) -> anyhow::Result<()> {
    let mut parts = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let part: qaforge_verify::Report = serde_json::from_slice(&bytes).with_context(|| format!("{}: not a qaforge verify report", path.display()))?;
        parts.push(part);
    }
    let bundle_dir = match golden {
        Some(dir) => dir.to_owned(),
        None => parts.first().map(|p| p.golden.clone()).context("no reports")?,
    };
    let bundle = qaforge_verify::Bundle::open(&bundle_dir)?;
    let merged = qaforge_verify::merge(&parts, &bundle)?;
    conclude(&merged, report)
}

fn golden(model_dir: &std::path::Path, data: &std::path::Path, output: &std::path::Path, options: &qaforge_verify::BundleOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.inc(done as u64);
    };
    let manifest = qaforge_verify::make_bundle(model_dir, data, output, options, &progress)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!("golden bundle {} -> {}", model_dir.display(), output.display());
    println!("  model       {} (checkpoint sha256 {})", manifest.model.architecture, manifest.model.source_sha256);
    println!("  data        {}: {} questions{}", manifest.data.name, manifest.data.questions, manifest.data.limit.map_or(String::new(), |l| format!(" (first {l})")));
    println!("  features    {} (max_length {}, doc_stride {})", manifest.features, manifest.settings.max_length, manifest.settings.doc_stride);
    println!("  reference   {}", manifest.reference);
    println!("  time        {seconds:.2} s ({:.1} features/s)", manifest.features as f64 / seconds.max(1e-9));
    println!("reference EM {:.2}, F1 {:.2} on {} questions", manifest.scores.exact, manifest.scores.f1, manifest.data.questions);
    Ok(())
}
