//! `qaforge quantize`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use qaforge_pipeline::CalibrationEngine;
use qaforge_quantize::sensitivity::{SearchKeep, SearchUnit};
use qaforge_quantize::{ActivationScales, MethodName, Precision, Rounding, TableBits, Target};

use super::{named, named_of, FlavourArgs, InputNamesArg, OrtLibraryArg};

/// Quantize a float32 ONNX artifact: fp16, int8 with dynamic activations, int8 calibrated on SQuAD, or int4.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float32 ONNX artifact (from `qaforge convert`).
    input: PathBuf,
    /// Where to write the quantized artifact.
    #[arg(short, long)]
    output: PathBuf,
    /// Target precision (int4: 4-bit block-wise weights in ONNX Runtime's MatMulNBits and
    /// GatherBlockQuantized, float activations).
    #[arg(long, value_parser = named_of(&Precision::QUANTIZED))]
    precision: Precision,
    /// SQuAD v2 JSON whose questions calibrate int8-static (use a slice disjoint from evaluation).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Model directory with tokenizer.json or vocab.txt, to build calibration features.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Calibration features (windows of 384 tokens) to run.
    #[arg(long, default_value_t = 128)]
    samples: usize,
    /// How calibrated ranges are chosen: minmax, percentile or mse.
    #[arg(long, default_value = MethodName::MinMax.as_str())]
    method: MethodName,
    /// Percentile of |x| kept by --method percentile.
    #[arg(long, default_value_t = 99.999)]
    percentile: f64,
    /// int4: weights per block (one float16-exact scale each) along the reduced dimension: 16, 32,
    /// 64, 128 or 256.
    #[arg(long, default_value_t = 32)]
    block_size: usize,
    /// int4: how embedding tables are stored (4-bit blocks in GatherBlockQuantized, or int8).
    #[arg(long, value_parser = named::<TableBits>(), default_value = TableBits::Int4.as_str())]
    embeddings: TableBits,
    /// int4: how weights are rounded to their blocks: search (each block's least-error grid)
    /// or gptq (errors compensated with the inputs' statistics over --calibration features).
    #[arg(long, value_parser = named::<Rounding>(), default_value = Rounding::Search.as_str())]
    rounding: Rounding,
    /// int4: the largest artifact (bytes, or with kB/MB/GB or KiB/MiB/GiB): each weight product
    /// then gets 2 or 4 bits, int8 or float, whatever fits with the least output error over
    /// --calibration features. --report lists each product's choice.
    #[arg(long, value_parser = qaforge_quantize::options::parse_size)]
    max_size: Option<u64>,
    /// Write what quantize chose (JSON, and Markdown beside it).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep nodes float whose name or op type matches (`*` wildcards; repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// int8 modes: products whose name or op type matches (`*` wildcards; repeatable) keep
    /// int8 weights but float activations: no size price, the activation grid's error gone for
    /// them (those products run in float on dequantized weights).
    #[arg(long)]
    float_activations: Vec<String>,
    /// Quantize the QA head too (int8 modes). It stays float by default: it decides every
    /// answer and holds 2 × hidden weights (docs/commands.md: what each default costs and buys).
    #[arg(long)]
    int8_qa_head: bool,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// The CPUs the int8 artifact is for: its weights are stored so that ONNX Runtime's integer
    /// kernels there compute it exactly. arm64 (phones) and x86-vnni: int8 weights; x86-avx2
    /// (x86 without VNNI, whose u8 × s8 kernels saturate): uint8 weights offset by 128.
    #[arg(long, value_parser = named::<Target>(), default_value = Target::Arm64.as_str())]
    target: Target,
    /// 7-bit int8 weights (ONNX Runtime's reduce_range) instead of the target's storage: exact
    /// on every CPU, one bit coarser.
    #[arg(long)]
    reduce_range: bool,
    /// int8-dynamic: quantize each product's input at run time with one range per `tensor` (one
    /// fused DynamicQuantizeLinear, as ONNX Runtime's quantize_dynamic) or per `token` (each
    /// row its own range: closer to float, and what a question is batched with moves its logits
    /// by float rounding only; slower: more element-wise ops per product).
    #[arg(long, value_parser = named::<ActivationScales>(), default_value = ActivationScales::Tensor.as_str())]
    activation_scales: ActivationScales,
    /// Before int8, migrate each product group's activation range partly into its weights
    /// (SmoothQuant), with the strength (none, α 0.5 or 0.75) that gives the group's int8
    /// products the least error on --calibration features; needs --calibration and --tokenizer,
    /// for int8-dynamic too. --report lists each group's choice.
    #[arg(long)]
    smooth: bool,
    /// Keep the most harmful layers (or products, --search-unit) float until the F1 drop is at
    /// most this many points: on a golden bundle's questions with --golden, else label-free, as
    /// disagreement with the float artifact's own predictions on questions of --calibration held
    /// back from calibration (no gold answers needed).
    #[arg(long)]
    max_f1_drop: Option<f64>,
    /// What the sensitivity search keeps float at a time: a whole layer (few to rank), or one
    /// weight product (one forward each to rank; a smaller size price per step).
    #[arg(long, value_parser = named::<SearchUnit>(), default_value = SearchUnit::Layer.as_str(), requires = "max_f1_drop")]
    search_unit: SearchUnit,
    /// What the search keeps for each unit it keeps: `float` (weights and activations: the
    /// unit's float weights are the size price) or `activations` (int8 modes: int8 weights,
    /// float activations; no size price, a speed price).
    #[arg(long, value_parser = named::<SearchKeep>(), default_value = SearchKeep::Float.as_str(), requires = "max_f1_drop")]
    search_keep: SearchKeep,
    /// Questions of --calibration held back for the label-free search.
    #[arg(long, default_value_t = 200)]
    held_back: usize,
    /// Golden bundle (or golden/FIXTURE) whose data and reference logits the sensitivity
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
    /// the float graph in: tract (built in, the same ranges on every CPU), or ort (ONNX Runtime;
    /// needs `--features ort` and libonnxruntime). With tract, a graph tract cannot run is
    /// calibrated in ONNX Runtime where its library is at hand (--ort-library or
    /// $ORT_DYLIB_PATH), with a note on stderr.
    #[arg(long, value_parser = named::<CalibrationEngine>(), default_value = CalibrationEngine::Tract.as_str())]
    calibration_engine: CalibrationEngine,
    #[command(flatten)]
    onnxruntime: OrtLibraryArg,
    #[command(flatten)]
    flavour: FlavourArgs,
}

/// Quantizes, prints the summary and writes the report where asked.
pub fn run(args: QuantizeArgs) -> anyhow::Result<ExitCode> {
    let library = args.onnxruntime.ort_library.as_deref();
    let (calibration_engine, calibration_fallback) =
        qaforge_pipeline::calibration_engines(args.calibration_engine, library)?;
    let options = qaforge_quantize::QuantizeOptions {
        precision: args.precision,
        exclude: args.exclude,
        float_activations: args.float_activations,
        int8_qa_head: args.int8_qa_head,
        target: args.target,
        weights: qaforge_quantize::WeightOptions::for_target(args.target, args.per_tensor, args.reduce_range),
        int4: qaforge_quantize::Int4Options {
            block_size: args.block_size,
            tables: args.embeddings,
            rounding: args.rounding,
            max_size: args.max_size,
        },
        method: args.method.with_percentile(args.percentile),
        activation_scales: args.activation_scales,
        batch_size: args.batch_size,
        threads: super::cores(),
        input_names: args.inputs.input_names,
        calibration_engine,
        calibration_fallback,
    };
    let request = qaforge_pipeline::QuantizeRequest {
        flavour: args.flavour.resolve(&args.onnxruntime)?,
        input: args.input,
        output: args.output,
        options,
        calibration: args.calibration,
        tokenizer: args.tokenizer,
        samples: args.samples,
        smooth: args.smooth,
        search: args.max_f1_drop.map(|max_f1_drop| qaforge_pipeline::Search {
            max_f1_drop,
            unit: args.search_unit,
            keep: args.search_keep,
            golden: args.golden,
            held_back: args.held_back,
        }),
    };
    let (bar, progress) = super::progress_bar();
    let done = qaforge_pipeline::quantize(&request, &progress);
    bar.finish_and_clear();
    let done = done?;
    for warning in done.warnings() {
        eprintln!("note: {warning}");
    }
    println!("{done}");
    if let Some(path) = args.report {
        qaforge_pipeline::write_quantize_report(&request, &done, &path).context("writing the report")?;
        println!("  report          {} (and .md)", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
