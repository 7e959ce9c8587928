//! `qaforge quantize`: which calibration data a precision needs, the sensitivity search, and the
//! order fold → quantize → fuse → load check → write.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use qaforge_provenance::Named;
use qaforge_quantize::sensitivity::{self, EvaluationSlice, SearchGoal, SearchKeep, SearchLog, SearchUnit};
use qaforge_quantize::{Precision, QuantizeOptions};

use crate::{check_loads_in_onnxruntime, describe_flavour, EngineChoice, Flavour, PipelineError};

/// The engine calibration (and int4's input statistics) runs the float graph in, by name
/// (`--calibration-engine`). There is no auto: tract's ranges are the same on every CPU, ONNX
/// Runtime's are not, so the choice is the user's; tract falls back by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationEngine {
    /// tract's portable kernels.
    Tract,
    /// ONNX Runtime.
    Ort,
}

impl CalibrationEngine {
    /// Every engine, in the order help texts list them.
    pub const ALL: [CalibrationEngine; 2] = [CalibrationEngine::Tract, CalibrationEngine::Ort];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CalibrationEngine::Tract => "tract",
            CalibrationEngine::Ort => "ort",
        }
    }
}

impl Named for CalibrationEngine {
    const ALL: &'static [Self] = &CalibrationEngine::ALL;

    fn as_str(self) -> &'static str {
        CalibrationEngine::as_str(self)
    }
}

impl std::str::FromStr for CalibrationEngine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        qaforge_provenance::parse_named(text, "calibration engine")
    }
}

/// The engine calibration runs in, and the one it falls back to where tract cannot run the float
/// graph: with tract, ONNX Runtime if its `library` is at hand; with ONNX Runtime, none.
pub fn calibration_engines(
    engine: CalibrationEngine,
    library: Option<&std::path::Path>,
) -> Result<(EngineChoice, Option<EngineChoice>), PipelineError> {
    let onnxruntime = || crate::onnxruntime_library(library).map(|library| EngineChoice::OnnxRuntime { library });
    match engine {
        CalibrationEngine::Tract => Ok((EngineChoice::Tract, onnxruntime().ok())),
        CalibrationEngine::Ort => Ok((onnxruntime()?, None)),
    }
}

/// What `--max-f1-drop` asks of the sensitivity search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Keep the most harmful units float until the F1 drop is at most this many points.
    pub max_f1_drop: f64,
    /// What is kept float at a time: a layer or a single product.
    pub unit: SearchUnit,
    /// What a kept unit keeps: float weights and activations, or float activations with int8
    /// weights (no size price).
    pub keep: SearchKeep,
    /// A golden bundle to measure F1 on; without one the search is label-free.
    pub golden: Option<PathBuf>,
    /// Questions of the calibration file held back for the label-free search.
    pub held_back: usize,
}

/// What to quantize, and how.
#[derive(Debug, Clone)]
pub struct QuantizeRequest {
    /// The float32 ONNX artifact.
    pub input: PathBuf,
    /// Where to write the quantized artifact.
    pub output: PathBuf,
    /// Everything that decides the quantized graph.
    pub options: QuantizeOptions,
    /// SQuAD v2 JSON whose questions calibrate int8-static (and feed the label-free search).
    pub calibration: Option<PathBuf>,
    /// Model directory with the tokenizer that builds calibration features.
    pub tokenizer: Option<PathBuf>,
    /// Calibration features to run.
    pub samples: usize,
    /// The sensitivity search, if asked for.
    pub search: Option<Search>,
    /// Migrate activation scale into the weights before int8 (`--smooth`, see
    /// [`qaforge_quantize::smooth`]): needs calibration features, for int8-dynamic too.
    pub smooth: bool,
    /// The engine the artifact is for.
    pub flavour: Flavour,
}

/// What quantize did.
#[derive(Debug)]
pub struct QuantizeOutcome {
    /// The float artifact read.
    pub input: PathBuf,
    /// The artifact written.
    pub output: PathBuf,
    /// The options it was quantized with.
    pub options: QuantizeOptions,
    /// Lines worth showing before the summary (the calibration data, the search's slice).
    pub notes: Vec<String>,
    /// What quantization did.
    pub summary: qaforge_quantize::QuantizeSummary,
    /// What the ONNX Runtime flavour did (None for portable).
    pub flavour: Option<String>,
    /// Calibration features used (int8-static).
    pub calibration_features: Option<usize>,
    /// The sensitivity search's log, if it ran.
    pub search: Option<SearchLog>,
    /// What scale migration decided, if it ran.
    pub smoothing: Option<qaforge_quantize::smooth::Smoothing>,
    /// Size of the input and of the written artifact, in bytes.
    pub sizes: (u64, u64),
    /// sha256 of the written artifact.
    pub sha256: String,
    /// Wall time.
    pub seconds: f64,
}

impl QuantizeOutcome {
    /// Kept-float nodes grouped by reason: (reason, node names), reasons in the order of their words.
    pub fn kept_float_by_reason(&self) -> BTreeMap<String, Vec<&str>> {
        let mut by_reason: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, reason) in &self.summary.kept_float {
            by_reason.entry(reason.to_string()).or_default().push(name);
        }
        by_reason
    }

    /// What the user should know beside the summary (stderr): where calibration ran in ONNX
    /// Runtime instead of tract, and why; scale migration beside mse ranges.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(why) = &self.summary.calibration_fallback {
            // int8-static calibrates ranges; int4 (GPTQ, --max-size) collects input statistics.
            let what =
                if self.options.precision == Precision::Int4 { "input statistics collected" } else { "calibrated" };
            warnings.push(format!("{what} in ONNX Runtime, because {why} (recorded in the artifact's provenance; ONNX Runtime's ranges and statistics may differ from another CPU's)"));
        }
        if self.smoothing.is_some()
            && self.options.precision == Precision::Int8Static
            && self.options.method == qaforge_quantize::CalibrationMethod::Mse
        {
            warnings.push("--smooth with --method mse: mse's clips, chosen on the migrated activations, cut too deep on the trained fixture (logits twice as far from the float model's as with minmax or percentile; docs/commands.md); prefer --method minmax or percentile".into());
        }
        warnings
    }
}

impl std::fmt::Display for QuantizeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (options, summary) = (&self.options, &self.summary);
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        let precision = options.precision;
        writeln!(f, "quantized {} -> {} ({precision})", self.input.display(), self.output.display())?;
        if precision == Precision::Fp16 {
            writeln!(f, "  float16 nodes   {}", summary.converted.len())?;
            writeln!(f, "  casts inserted  {}", summary.casts)?;
        } else if precision == Precision::Int4 {
            writeln!(
                f,
                "  4-bit MatMuls   {} (blocks of {}, rounding: {})",
                summary.converted.len(),
                options.int4.block_size,
                options.int4.rounding.as_str()
            )?;
            if let Some(max_size) = options.int4.max_size {
                writeln!(f, "  2-bit MatMuls   {} (size budget {max_size} bytes)", summary.two_bit.len())?;
            }
            if summary.statistics_features > 0 {
                let engine = summary.calibration_engine.unwrap_or("tract");
                writeln!(
                    f,
                    "  statistics      {} features in {engine} (Gram matrices of the inputs of {} products)",
                    summary.statistics_features,
                    summary.layers.len()
                )?;
            }
            writeln!(f, "  4-bit tables    {}", summary.int4_tables.join(", "))?;
            writeln!(f, "  int8 tables     {}", summary.int8_tables.join(", "))?;
        } else {
            writeln!(f, "  int8 MatMuls    {}", summary.converted.len())?;
            if precision == Precision::Int8Dynamic {
                let scales = match options.activation_scales {
                    qaforge_quantize::ActivationScales::Tensor => {
                        "one range per tensor, at run time (DynamicQuantizeLinear)"
                    }
                    qaforge_quantize::ActivationScales::Token => {
                        "one range per token, at run time (ReduceMin/ReduceMax)"
                    }
                };
                writeln!(f, "  activations     {scales}")?;
            }
            writeln!(f, "  int8 tables     {}", summary.int8_tables.join(", "))?;
        }
        if let Some(flavour) = &self.flavour {
            writeln!(f, "  onnxruntime   {flavour}")?;
        }
        if let Some(smoothing) = &self.smoothing {
            writeln!(f, "  smoothing       {}", smoothing.describe())?;
        }
        if let Some(count) = self.calibration_features {
            let engine = summary.calibration_engine.unwrap_or("tract");
            writeln!(
                f,
                "  calibration     {count} features, {} in {engine} ({} activation ranges)",
                options.method,
                summary.ranges.len()
            )?;
        }
        // One line per kept-float reason, with a count and a few names.
        for (reason, nodes) in self.kept_float_by_reason() {
            let shown: Vec<&str> = nodes.iter().take(3).copied().collect();
            let more = if nodes.len() > 3 { format!(", … {} more", nodes.len() - 3) } else { String::new() };
            writeln!(f, "  kept float      {} node(s): {reason} ({}{more})", nodes.len(), shown.join(", "))?;
        }
        let (before, after) = self.sizes;
        writeln!(
            f,
            "  size            {} -> {} ({:.1}%)",
            crate::human_bytes(before),
            crate::human_bytes(after),
            100.0 * after as f64 / before as f64
        )?;
        if let Some(log) = &self.search {
            // One step as the summary prints it: its checks, its size and price, what it keeps.
            let first_bytes = log.steps.first().map_or(0, |s| s.bytes);
            let describe = |step: &qaforge_quantize::sensitivity::SearchStep| {
                format!(
                    "F1 drop {:+.2}, cosine {:.6}, {} (+{}) with {} {}(s) {}",
                    step.f1_drop,
                    step.cosine,
                    crate::human_bytes(step.bytes),
                    crate::human_bytes(step.bytes.saturating_sub(first_bytes)),
                    step.kept_float.len(),
                    log.unit.as_str(),
                    log.keep.words()
                )
            };
            for step in &log.steps {
                writeln!(f, "  search          {}: {}", describe(step), step.kept_float.join(", "))?;
            }
            if let Some((worst, mse)) = log.sensitivity.first() {
                writeln!(
                    f,
                    "  sensitivity     most harmful {} {worst} (logit MSE {mse:.3e} when quantized alone)",
                    log.unit.as_str()
                )?;
            }
            if let Some(step) = log.chosen.and_then(|i| log.steps.get(i)) {
                writeln!(f, "  search wrote    {}, after {} step(s)", describe(step), log.steps.len())?;
            }
        }
        writeln!(f, "  sha256          {}", self.sha256)?;
        write!(f, "  time            {:.3} s", self.seconds)
    }
}

/// Quantizes `request.input` and writes the artifact. `progress` gets (calibration passes' features
/// just done, total).
pub fn quantize(
    request: &QuantizeRequest,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<QuantizeOutcome, PipelineError> {
    let started = Instant::now();
    let options = &request.options;
    if options.precision == Precision::Fp32 {
        return Err(PipelineError::Request(
            "fp32 is what quantize reads: choose fp16, int8-dynamic or int8-static".into(),
        ));
    }
    if options.precision != Precision::Int4
        && (options.int4.max_size.is_some() || options.int4.rounding != qaforge_quantize::Rounding::Search)
    {
        return Err(PipelineError::Request(format!(
            "--max-size and --rounding are for --precision int4, not {}",
            options.precision
        )));
    }
    if matches!(request.flavour, Flavour::OnnxRuntime(_)) && options.precision == Precision::Int4 {
        return Err(PipelineError::Request("--for onnxruntime is for the int8 modes: the int4 artifact is ONNX Runtime's own operators already (MatMulNBits, GatherBlockQuantized)".into()));
    }
    if matches!(request.flavour, Flavour::OnnxRuntime(_)) && options.precision == Precision::Fp16 {
        return Err(PipelineError::Request(
            "--for onnxruntime is for the int8 modes: ONNX Runtime's CPU kernels compute float16 slower than float32 (use the portable fp16 artifact for GPUs and NNAPI/CoreML)".into(),
        ));
    }
    if options.activation_scales != qaforge_quantize::ActivationScales::Tensor
        && options.precision != Precision::Int8Dynamic
    {
        return Err(PipelineError::Request(format!(
            "--activation-scales {} is for int8-dynamic only: {} does not quantize activations at run time",
            options.activation_scales.as_str(),
            options.precision
        )));
    }
    if !options.float_activations.is_empty() && !options.precision.is_int8() {
        return Err(PipelineError::Request(format!(
            "--float-activations keeps int8 weights with float activations (int8-dynamic, int8-static), not for {}",
            options.precision
        )));
    }
    if request.search.as_ref().is_some_and(|s| s.keep == SearchKeep::Activations) && !options.precision.is_int8() {
        return Err(PipelineError::Request(format!(
            "--search-keep activations keeps int8 weights with float activations (int8-dynamic, int8-static), not for {}",
            options.precision
        )));
    }
    if request.smooth && !options.precision.is_int8() {
        return Err(PipelineError::Request(format!(
            "--smooth prepares int8 products (int8-dynamic, int8-static), not {}",
            options.precision
        )));
    }
    let (input, output) = (&request.input, &request.output);
    let input_bytes = std::fs::read(input).map_err(|source| PipelineError::Io { path: input.clone(), source })?;
    let mut model = qaforge_onnx::decode_model(&input_bytes, input)?;
    // The ONNX Runtime flavour folds the float graph first, so that int8 weights are quantized
    // from the folded values and calibration measures the graph that will run.
    let mut flavour = qaforge_onnxruntime::FuseSummary::default();
    if let Flavour::OnnxRuntime(_) = request.flavour {
        qaforge_onnxruntime::fold(&mut model, &mut flavour)?;
    }
    let mut notes = Vec::new();
    // The calibration file's features: int8-static calibrates on the first `samples`; the
    // label-free search measures on questions held back after them.
    let is_static = options.precision == Precision::Int8Static;
    // int4 with GPTQ rounding or a size budget: the inputs' statistics over the same features.
    let statistics = qaforge_quantize::needs_statistics(options);
    let calibrates = is_static || statistics || request.smooth;
    let label_free = request.search.as_ref().is_some_and(|s| s.golden.is_none());
    let calibration_data = match (&request.calibration, &request.tokenizer) {
        (Some(data), Some(tokenizer)) if calibrates || label_free => {
            let squad = qaforge_squad::SquadFile::load(data)?;
            notes.push(format!("calibration data {}: {}", data.display(), squad.summary()));
            let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(tokenizer)?;
            // Calibration reads the first `samples` features, and every question gives at least
            // one: its first `samples` questions are enough, unless the label-free search also
            // needs the questions held back after them (a dev-set-sized file is not tokenized whole).
            let needed = if label_free { squad.examples.len() } else { request.samples.min(squad.examples.len()) };
            let features = tokenizer.features(&squad.examples[..needed], &qaforge_squad::FeatureOptions::default())?;
            Some((squad, features))
        }
        _ if is_static => return Err(PipelineError::Request("int8-static needs --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>".into())),
        _ if request.smooth => {
            return Err(PipelineError::Request(
                "--smooth needs --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>: each channel's scale comes from the activations those features give".into(),
            ))
        }
        _ if statistics => {
            return Err(PipelineError::Request(
                "--rounding gptq and --max-size need --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>: they weigh each weight by the inputs it meets on those features".into(),
            ))
        }
        _ if label_free => {
            return Err(PipelineError::Request("--max-f1-drop without --golden measures on held-back questions: it needs --calibration <SQUAD.json> and --tokenizer <MODEL_DIR>".into()))
        }
        _ => None,
    };
    let calibration_count = if calibrates { request.samples } else { 0 };
    let features = match &calibration_data {
        Some((_, f)) if calibrates => Some(f.clone().truncated(request.samples)),
        _ => None,
    };
    let passes = match (is_static, options.method) {
        (true, qaforge_quantize::CalibrationMethod::MinMax) => 1,
        (true, _) => 2,
        (false, _) => 1,
    };
    let smoothing_passes = features
        .as_ref()
        .filter(|_| request.smooth)
        .map_or(0, |f| f.count + qaforge_quantize::smooth::JUDGED_FEATURES.min(f.count));
    let total = features.as_ref().map_or(0, |f| f.count * passes) + smoothing_passes;
    let advance = |n: usize| progress(n, total);
    let input_sha256 = qaforge_provenance::sha256_hex(&input_bytes);
    // Scale migration rewrites the float graph that everything after it quantizes (and that the
    // search compares with): checkpoint → graph → migrated graph → quantized graph.
    let smoothing = match &features {
        Some(f) if request.smooth => {
            let (migrated, smoothing) = qaforge_quantize::smooth::migrate(&model, options, f, &advance)?;
            model = migrated;
            Some(smoothing)
        }
        _ => None,
    };
    let model = model;
    // The sensitivity search, on whichever slice --max-f1-drop measures, with the cosine floor
    // verify applies to this precision.
    let min_cosine = qaforge_verify::Tolerances::for_precision(options.precision).min_cosine.unwrap_or(0.0);
    let search_on = |slice: &EvaluationSlice<'_>, search: &Search| {
        let goal = SearchGoal { max_f1_drop: search.max_f1_drop, min_cosine, unit: search.unit, keep: search.keep };
        sensitivity::search(&model, options, features.as_ref(), slice, goal, &input_sha256, &advance)
    };
    let (mut quantized, summary, search_log) = match &request.search {
        None => {
            let (m, s) = qaforge_quantize::quantize(&model, options, features.as_ref(), &input_sha256, &advance)?;
            (m, s, None)
        }
        Some(search @ Search { golden: Some(golden), .. }) => {
            let bundle = qaforge_verify::Bundle::open(golden)?;
            let slice =
                EvaluationSlice { data: &bundle.data, features: &bundle.features, reference_f1: bundle.reference_f1() };
            let (m, s, log) = search_on(&slice, search)?;
            (m, s, Some(log))
        }
        Some(search @ Search { golden: None, held_back, .. }) => {
            let (squad, all) = calibration_data.as_ref().ok_or_else(|| {
                PipelineError::Request("the label-free search needs --calibration and --tokenizer".into())
            })?;
            let (data, held) = sensitivity::held_back(squad, all, calibration_count, *held_back).ok_or_else(|| {
                PipelineError::Request(format!("--calibration has no questions left after the {calibration_count} calibration features to hold back for the label-free search"))
            })?;
            notes.push(format!("label-free search on {} held-back questions ({} features): F1 against the float artifact's own predictions", data.examples.len(), held.count));
            let (pseudo, reference_f1) = sensitivity::label_free(&model, &data, &held, options)?;
            let slice = EvaluationSlice { data: &pseudo, features: &held, reference_f1 };
            let (m, s, log) = search_on(&slice, search)?;
            (m, s, Some(log))
        }
    };
    if let Flavour::OnnxRuntime(_) = request.flavour {
        qaforge_onnxruntime::fuse(&mut quantized, &mut flavour)?;
    }
    let bytes = qaforge_onnx::encode_checked(&quantized, output)?;
    if let Some(library) = request.flavour.library() {
        check_loads_in_onnxruntime(library, &bytes, output)?;
    }
    qaforge_onnx::write_atomically(output, &bytes)?;
    Ok(QuantizeOutcome {
        input: input.clone(),
        output: output.clone(),
        options: options.clone(),
        notes,
        flavour: matches!(request.flavour, Flavour::OnnxRuntime(_)).then(|| describe_flavour(&flavour, &quantized)),
        calibration_features: features.as_ref().filter(|_| is_static).map(|f| f.count),
        summary,
        search: search_log,
        smoothing,
        sizes: (input_bytes.len() as u64, bytes.len() as u64),
        sha256: qaforge_provenance::sha256_hex(&bytes),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `quantize --report` writes: the request's choices, the artifact, and for int4 each weight
/// product's storage with its bytes and relative output error.
#[derive(Debug, serde::Serialize)]
struct QuantizeReport<'a> {
    input: String,
    output: String,
    precision: &'static str,
    bytes: (u64, u64),
    sha256: &'a str,
    max_size: Option<u64>,
    block_size: Option<usize>,
    rounding: Option<&'static str>,
    statistics_features: usize,
    products_two_bit: usize,
    products_four_bit: usize,
    layers: &'a [qaforge_quantize::budget::LayerChoice],
    kept_float: &'a BTreeMap<String, qaforge_quantize::KeptFloat>,
    /// Scale migration's choice for each product group (absent without --smooth).
    #[serde(skip_serializing_if = "Option::is_none")]
    smoothing: Option<&'a [qaforge_quantize::smooth::GroupChoice]>,
    /// The sensitivity search's ranking and steps, each with its size (absent without
    /// --max-f1-drop).
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<&'a SearchLog>,
}

/// Writes `path` (JSON) and the same with the extension `.md` (a Markdown table of the products).
pub fn write_quantize_report(
    request: &QuantizeRequest,
    done: &QuantizeOutcome,
    path: &std::path::Path,
) -> Result<(), PipelineError> {
    let int4 = request.options.precision == Precision::Int4;
    let report = QuantizeReport {
        input: request.input.display().to_string(),
        output: request.output.display().to_string(),
        precision: request.options.precision.as_str(),
        bytes: done.sizes,
        sha256: &done.sha256,
        max_size: request.options.int4.max_size.filter(|_| int4),
        block_size: int4.then_some(request.options.int4.block_size),
        rounding: int4.then_some(request.options.int4.rounding.as_str()),
        statistics_features: done.summary.statistics_features,
        products_two_bit: done.summary.two_bit.len(),
        products_four_bit: if int4 { done.summary.converted.len() } else { 0 },
        layers: &done.summary.layers,
        kept_float: &done.summary.kept_float,
        smoothing: done.smoothing.as_ref().map(|s| s.groups.as_slice()),
        search: done.search.as_ref(),
    };
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| PipelineError::Request(format!("{}: {e}", path.display())))?;
    let mut md = format!(
        "# qaforge quantize: {}\n\n{} → {} ({}), {} → {} bytes, sha256 `{}`\n",
        report.output, report.input, report.output, report.precision, done.sizes.0, done.sizes.1, done.sha256
    );
    if let Some(max_size) = report.max_size {
        md.push_str(&format!(
            "\nSize budget {max_size} bytes: {} products at 2 bits, {} at 4 bits.\n",
            report.products_two_bit, report.products_four_bit
        ));
    }
    if !report.layers.is_empty() {
        md.push_str("\n| product | K × N | stored | bytes | relative output error |\n|---|---|---|---:|---:|\n");
        for l in report.layers {
            md.push_str(&format!(
                "| {} | {} × {} | {} | {} | {:.3e} |\n",
                l.node, l.shape.0, l.shape.1, l.stored, l.bytes, l.relative_error
            ));
        }
    }
    if let Some(smoothing) = &done.smoothing {
        md.push_str(&format!(
            "\nScale migration: {}.\n\n| input | products | α | relative error before | after |\n|---|---|---:|---:|---:|\n",
            smoothing.describe()
        ));
        for g in &smoothing.groups {
            md.push_str(&format!(
                "| {} | {} | {} | {:.3e} | {:.3e} |\n",
                g.input,
                g.products.join(", "),
                g.alpha.map_or("none".to_string(), |a| a.to_string()),
                g.error_before,
                g.error_after
            ));
        }
    }
    if let Some(log) = &done.search {
        let unit = log.unit.as_str();
        let first_bytes = log.steps.first().map_or(0, |s| s.bytes);
        let kept = log.keep.words();
        md.push_str(&format!(
            "\nSensitivity search, one {unit} at a time (prefixes of the ranking below, in the order measured; ✓ the one written):\n\n| step | kept {kept} | F1 drop | cosine | bytes | price |\n|---:|---|---:|---:|---:|---:|\n"
        ));
        for (i, step) in log.steps.iter().enumerate() {
            md.push_str(&format!(
                "| {i}{} | {} | {:.2} | {:.6} | {} | +{} |\n",
                if log.chosen == Some(i) { " ✓" } else { "" },
                if step.kept_float.is_empty() { "nothing".to_string() } else { step.kept_float.join(", ") },
                step.f1_drop,
                step.cosine,
                step.bytes,
                step.bytes.saturating_sub(first_bytes)
            ));
        }
        if !log.sensitivity.is_empty() {
            md.push_str(&format!(
                "\nEach {unit} quantized alone (logit MSE on calibration features, most harmful first):\n\n| {unit} | logit MSE |\n|---|---:|\n"
            ));
            for (name, mse) in &log.sensitivity {
                md.push_str(&format!("| {name} | {mse:.3e} |\n"));
            }
        }
    }
    qaforge_onnx::write_atomically(path, format!("{json}\n").as_bytes())?;
    qaforge_onnx::write_atomically(&path.with_extension("md"), md.as_bytes())?;
    Ok(())
}
