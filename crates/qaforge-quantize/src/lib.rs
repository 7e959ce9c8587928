//! Quantization of qaforge's float32 ONNX graphs: FP16, INT8 dynamic, and INT8 static calibrated
//! on SQuAD features (QDQ format), with MobileBERT-aware defaults for what stays float.
//!
//! - [`fp16`]: float16 weights and compute, float32 at the boundary, overflow-prone ops in float32.
//! - [`int8`]: per-channel symmetric int8 weights; dynamic (DynamicQuantizeLinear + MatMulInteger)
//!   or static (QuantizeLinear/DequantizeLinear pairs from calibrated ranges); int8 embedding tables.
//! - [`calibrate`]: streaming ranges over SQuAD features with minmax, percentile or MSE.
//!
//! Every artifact records its provenance in metadata_props; the same inputs give the same bytes.

/// Defines `$name` as `$body` compiled twice, for AVX2 and for the baseline, and calls the AVX2
/// copy where the CPU has it. The loops inside operate lane-wise (never reordering a sum, and Rust
/// never fuses a multiply and an add), so both copies give the same bits: the wider vectors only
/// make them faster.
macro_rules! with_avx2 {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub mod blockwise;
pub mod budget;
pub mod calibrate;
pub mod fp16;
pub mod gram;
pub mod graph;
pub mod int4;
pub mod int8;
pub mod options;
pub mod selection;
pub mod sensitivity;
pub mod smooth;

use std::collections::BTreeMap;

use qaforge_squad::Features;
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

pub use calibrate::{ActivationRange, CalibratedRanges};
pub use gram::InputGrams;
pub use graph::KeptFloat;
pub use options::{
    ActivationScales, CalibrationMethod, Int4Options, MethodName, QuantizeOptions, Rounding, TableBits, Target,
    WeightOptions, WeightStorage,
};
/// The engines calibration can run in (see [`QuantizeOptions::calibration_engine`]).
pub use qaforge_runtime::EngineChoice;
pub use selection::Selection;

/// Errors of quantization.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The input graph is not something qaforge can quantize.
    #[error("cannot quantize this graph: {0}")]
    Graph(String),
    /// The options ask for something that does not go together.
    #[error("invalid quantize options: {0}")]
    Options(String),
    /// Calibration failed or was not given what it needs.
    #[error("calibration: {0}")]
    Calibration(String),
    /// tract could not run the float graph during calibration.
    #[error(transparent)]
    Runtime(#[from] qaforge_runtime::RuntimeError),
}

impl From<qaforge_onnx::edit::GraphError> for QuantizeError {
    fn from(e: qaforge_onnx::edit::GraphError) -> Self {
        QuantizeError::Graph(e.0)
    }
}

use qaforge_provenance::keys;
/// Precisions: [`Precision::Fp16`], [`Precision::Int8Dynamic`] and [`Precision::Int8Static`] are
/// what quantization makes; `Fp32` is its input.
pub use qaforge_provenance::Precision;

/// A tract session for `model` (the input graph or one derived from it: passes keep its inputs),
/// its inputs fed as `options.input_names` or their names and positions say.
/// tract computes with its generic kernels here (see [`qaforge_runtime::kernels`]), so that what
/// the session measures, and the artifact chosen from it, is the same on every CPU.
pub(crate) fn tract_session(
    model: &ModelProto,
    label: &str,
    options: &QuantizeOptions,
) -> Result<qaforge_runtime::TractSession, QuantizeError> {
    qaforge_runtime::kernels::use_portable_kernels()?;
    let layout = qaforge_runtime::check_inputs(model, std::path::Path::new(label), options.input_names.as_deref())?;
    Ok(qaforge_runtime::TractSession::with_layout(model, label, layout)?)
}

/// What quantization did, for the summary and the report.
#[derive(Debug, Default)]
pub struct QuantizeSummary {
    /// Nodes converted (fp16: float16 nodes; int8: MatMuls with int8 weights and activations).
    pub converted: Vec<String>,
    /// Nodes kept float (or with float activations), with the reason.
    pub kept_float: graph::Reasons,
    /// Cast nodes inserted (fp16).
    pub casts: usize,
    /// Embedding tables stored int8.
    pub int8_tables: Vec<String>,
    /// Embedding tables stored in 4-bit blocks (int4).
    pub int4_tables: Vec<String>,
    /// MatMuls with 2-bit weights (int4 under a size budget).
    pub two_bit: Vec<String>,
    /// How each weight product is stored, with its bytes and relative output error (int4 with
    /// GPTQ rounding or a size budget).
    pub layers: Vec<budget::LayerChoice>,
    /// Features the input statistics were collected on (int4 with GPTQ or a size budget).
    pub statistics_features: usize,
    /// Calibrated activation ranges (int8-static).
    pub ranges: BTreeMap<String, ActivationRange>,
    /// Calibration features used.
    pub calibration_features: usize,
    /// The engine calibration ran in (`tract` or `onnxruntime`; int8-static).
    pub calibration_engine: Option<&'static str>,
    /// Why calibration ran in the fallback engine rather than tract (see
    /// [`QuantizeOptions::calibration_fallback`]).
    pub calibration_fallback: Option<String>,
}

fn check_float_input(model: &ModelProto) -> Result<(), QuantizeError> {
    // The operators are read even where the metadata says fp32: a quantized graph from another
    // tool may carry its float input's metadata.
    match qaforge_onnx::artifact_precision(model) {
        Ok((Precision::Fp32, _)) => Ok(()),
        Ok((other, why)) => {
            Err(QuantizeError::Graph(format!("the input is already {other} ({why}); quantize the fp32 model instead")))
        }
        Err(why) => Err(QuantizeError::Graph(format!("the input is not an fp32 model: {why}"))),
    }
}

/// One quantize request decided before any step runs: the float input checked, which weight
/// products are quantized and how ([`Selection`]), and the calibration features checked against
/// the graph's inputs and vocabulary (once, where a step needs them). Calibration, input
/// statistics and the passes read it.
struct Request<'a> {
    model: &'a ModelProto,
    graph: &'a tract_onnx::pb::GraphProto,
    options: &'a QuantizeOptions,
    selection: Selection,
}

impl<'a> Request<'a> {
    fn new(model: &'a ModelProto, options: &'a QuantizeOptions) -> Result<Self, QuantizeError> {
        check_float_input(model)?;
        if options.activation_scales != ActivationScales::Tensor && options.precision != Precision::Int8Dynamic {
            return Err(QuantizeError::Options(format!(
                "activation scales per {} are for int8-dynamic only, not {}",
                options.activation_scales.as_str(),
                options.precision.as_str()
            )));
        }
        if !options.float_activations.is_empty() && !options.precision.is_int8() {
            return Err(QuantizeError::Options(format!(
                "float activations with int8 weights are for the int8 modes, not {}",
                options.precision.as_str()
            )));
        }
        let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
        let selection = Selection::for_request(graph, options);
        Ok(Request { model, graph, options, selection })
    }

    /// The calibration features when a step of this request reads them, checked once against
    /// the model they will run through: its inputs found (by `options.input_names` or by name),
    /// and every token id within its vocabulary.
    fn features<'f>(&self, calibration: Option<&'f Features>) -> Result<Option<&'f Features>, QuantizeError> {
        let missing = match self.options.precision {
            Precision::Int8Static => "int8-static needs calibration features",
            _ if needs_statistics(self.options) => {
                "GPTQ rounding and --max-size need calibration features (--calibration and --tokenizer)"
            }
            _ => return Ok(None),
        };
        let features = calibration.ok_or_else(|| QuantizeError::Calibration(missing.into()))?;
        let label = std::path::Path::new("the model being quantized");
        let layout = qaforge_runtime::check_inputs(self.model, label, self.options.input_names.as_deref())?;
        qaforge_runtime::check_token_ids(self.model, &layout, features, label)?;
        Ok(Some(features))
    }

    /// For int8-static, the calibrated ranges of every activation to quantize.
    fn ranges(
        &self,
        features: Option<&Features>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Option<CalibratedRanges>, QuantizeError> {
        match features {
            Some(features) if self.options.precision == Precision::Int8Static => {
                let tensors = self.selection.calibration_tensors(self.graph);
                Ok(Some(calibrate::calibrate(self.model, &tensors, features, self.options, progress)?))
            }
            _ => Ok(None),
        }
    }

    /// For int4 with GPTQ rounding or a size budget, the Gram matrices of the inputs of every
    /// product to quantize.
    fn statistics(
        &self,
        features: Option<&Features>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Option<InputGrams>, QuantizeError> {
        match features {
            Some(features) if needs_statistics(self.options) => {
                let tensors = budget::statistics_tensors(self.graph, &self.selection)?;
                Ok(Some(gram::input_grams(self.model, &tensors, features, self.options, progress)?))
            }
            _ => Ok(None),
        }
    }
}

/// Quantizes a float32 model. `calibration` (features from the calibration slice) is required
/// for int8-static; `input_sha256` identifies the input file in the provenance metadata.
pub fn quantize(
    model: &ModelProto,
    options: &QuantizeOptions,
    calibration: Option<&Features>,
    input_sha256: &str,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
    let request = Request::new(model, options)?;
    let features = request.features(calibration)?;
    let ranges = request.ranges(features, progress)?;
    let grams = request.statistics(features, progress)?;
    apply_request(&request, ranges.as_ref(), grams.as_ref(), input_sha256)
}

/// Whether quantizing with `options` needs input statistics ([`input_statistics`]).
pub fn needs_statistics(options: &QuantizeOptions) -> bool {
    options.precision == Precision::Int4 && (options.int4.rounding == Rounding::Gptq || options.int4.max_size.is_some())
}

/// For int4 with GPTQ rounding or a size budget, the Gram matrices of the inputs of every product
/// to quantize, over the calibration features; `None` otherwise.
pub fn input_statistics(
    model: &ModelProto,
    options: &QuantizeOptions,
    calibration: Option<&Features>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Option<InputGrams>, QuantizeError> {
    let request = Request::new(model, options)?;
    let features = request.features(calibration)?;
    request.statistics(features, progress)
}

/// For int8-static, the calibrated ranges of every activation to quantize, with the number of
/// features and the engine they were measured with; `None` for the other precisions.
pub fn calibrated_ranges(
    model: &ModelProto,
    options: &QuantizeOptions,
    calibration: Option<&Features>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Option<CalibratedRanges>, QuantizeError> {
    let request = Request::new(model, options)?;
    let features = request.features(calibration)?;
    request.ranges(features, progress)
}

fn engine_name(engine: &qaforge_runtime::EngineChoice) -> &'static str {
    match engine {
        qaforge_runtime::EngineChoice::Tract => "tract",
        qaforge_runtime::EngineChoice::OnnxRuntime { .. } => "onnxruntime",
    }
}

/// Quantizes with activation ranges already calibrated (int8-static):
/// lets a search re-quantize with other exclusions without calibrating again.
pub fn apply(
    model: &ModelProto,
    options: &QuantizeOptions,
    ranges: Option<&CalibratedRanges>,
    grams: Option<&InputGrams>,
    input_sha256: &str,
) -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
    apply_request(&Request::new(model, options)?, ranges, grams, input_sha256)
}

fn apply_request(
    request: &Request<'_>,
    ranges: Option<&CalibratedRanges>,
    grams: Option<&InputGrams>,
    input_sha256: &str,
) -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
    if request.options.precision == Precision::Int4 {
        return apply_int4(request, grams, input_sha256);
    }
    apply_plan(request, ranges, &budget::Plan::default(), None, input_sha256)
}

/// int4: each product's storage from the planner; under a size budget, the plan whose written
/// artifact fits. The budget covers the products' weights after everything else the artifact
/// holds, measured by writing it with the smallest options; the written size is then checked,
/// and the products' share lowered by any overshoot (protobuf framing) and chosen again.
fn apply_int4(
    request: &Request<'_>,
    grams: Option<&InputGrams>,
    input_sha256: &str,
) -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
    let options = request.options;
    let int4 = &options.int4;
    if !(16..=256).contains(&int4.block_size) || !int4.block_size.is_power_of_two() {
        return Err(QuantizeError::Graph(format!(
            "--block-size {}: int4 blocks hold 16, 32, 64, 128 or 256 weights",
            int4.block_size
        )));
    }
    let planner = budget::planner(request.graph, &request.selection, int4, grams, options.threads)?;
    let quantized = |plan: &budget::Plan| -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
        let (m, mut s) = apply_plan(request, None, plan, grams, input_sha256)?;
        s.layers = plan.choices.clone();
        Ok((m, s))
    };
    let Some(max_size) = int4.max_size else {
        let plan = planner.choose(None).expect("no budget always has a plan");
        let (m, mut s) = quantized(&plan)?;
        if int4.rounding == Rounding::Search {
            s.layers.clear();
        }
        return Ok((m, s));
    };
    // Under a budget each candidate is encoded to measure what it would write.
    let written = |plan: &budget::Plan| -> Result<(ModelProto, QuantizeSummary, u64), QuantizeError> {
        let (m, s) = quantized(plan)?;
        let size = qaforge_onnx::encode(&m).len() as u64;
        Ok((m, s, size))
    };
    let smallest = planner.choose(Some(planner.smallest_bytes())).expect("the smallest options fit their own size");
    let (m, s, size) = written(&smallest)?;
    if size > max_size {
        return Err(QuantizeError::Graph(format!(
            "--max-size {max_size} bytes: the smallest artifact is {size} bytes (every product at 2 bits, blocks of {}); allow more, or use larger blocks",
            int4.block_size
        )));
    }
    let rest = size - planner.smallest_bytes();
    let mut best = (m, s);
    let mut share = max_size - rest;
    for _ in 0..4 {
        let plan = planner.choose(Some(share)).expect("at least the smallest options fit");
        let (m, s, size) = written(&plan)?;
        if size <= max_size {
            best = (m, s);
            break;
        }
        share -= (size - max_size).min(share);
    }
    Ok(best)
}

fn apply_plan(
    request: &Request<'_>,
    ranges: Option<&CalibratedRanges>,
    plan: &budget::Plan,
    grams: Option<&InputGrams>,
    input_sha256: &str,
) -> Result<(ModelProto, QuantizeSummary), QuantizeError> {
    let options = request.options;
    let mut out = request.model.clone();
    let mut summary = QuantizeSummary::default();
    match options.precision {
        Precision::Fp32 => {
            return Err(QuantizeError::Graph(
                "fp32 is the input precision, not a quantization (choose fp16, int8-dynamic or int8-static)".into(),
            ))
        }
        Precision::Fp16 => {
            let s = fp16::convert(&mut out, &options.exclude)?;
            summary.converted = s.half_nodes;
            summary.kept_float = s.kept_float;
            summary.casts = s.casts;
        }
        Precision::Int8Dynamic | Precision::Int8Static => {
            let activations = if options.precision == Precision::Int8Static {
                let calibrated =
                    ranges.ok_or_else(|| QuantizeError::Calibration("int8-static needs calibrated ranges".into()))?;
                summary.ranges = calibrated.ranges.clone();
                summary.calibration_features = calibrated.features;
                summary.calibration_engine = Some(engine_name(&calibrated.engine));
                summary.calibration_fallback = calibrated.fallback.clone();
                int8::Activations::Static(&summary.ranges)
            } else if options.activation_scales == ActivationScales::Token {
                let opset = out.opset_import.iter().find(|o| o.domain.is_empty()).map_or(1, |o| o.version);
                int8::Activations::DynamicPerToken { opset }
            } else {
                int8::Activations::Dynamic
            };
            let graph = out.graph.as_mut().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
            let s = int8::quantize(graph, &request.selection, options.weights, activations)?;
            summary.converted = s.quantized;
            summary.kept_float = s.kept_float;
            summary.int8_tables = s.tables;
        }
        Precision::Int4 => {
            let graph = out.graph.as_mut().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
            let s = int4::quantize(graph, &request.selection, options.int4, plan)?;
            summary.converted = s.quantized;
            summary.two_bit = s.two_bit;
            summary.kept_float = s.kept_float;
            summary.int8_tables = s.int8_tables;
            summary.int4_tables = s.int4_tables;
            if let Some(grams) = grams {
                summary.statistics_features = grams.features;
                summary.calibration_engine = Some(engine_name(&grams.engine));
                summary.calibration_fallback = grams.fallback.clone();
            }
            // MatMulNBits and GatherBlockQuantized are ONNX Runtime's contrib operators.
            qaforge_onnx::edit::import_opset(&mut out, qaforge_onnx::edit::MS_DOMAIN, 1);
        }
    }
    let mut metadata: Vec<(String, String)> = out
        .metadata_props
        .iter()
        .filter(|p| p.key != keys::STAGE && p.key != keys::PRECISION)
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    metadata.push((keys::STAGE.into(), "quantize".into()));
    metadata.push((keys::PRECISION.into(), options.precision.as_str().into()));
    metadata.push((keys::QUANTIZE_TOOL.into(), format!("qaforge {}", env!("CARGO_PKG_VERSION"))));
    metadata.push((keys::QUANTIZE_INPUT_SHA256.into(), input_sha256.into()));
    metadata.push((keys::QUANTIZE_EXCLUDE.into(), options.exclude.join(",")));
    if options.int8_qa_head {
        metadata.push((keys::QUANTIZE_QA_HEAD.into(), "int8".into()));
    }
    if options.precision == Precision::Int4 {
        let int4 = &options.int4;
        let mut int4 = format!(
            "symmetric 4-bit blocks of {} (MatMulNBits), embedding tables {}",
            int4.block_size,
            int4.tables.as_str()
        );
        if options.int4.rounding == Rounding::Gptq {
            int4.push_str(", GPTQ rounding");
        }
        if let Some(max_size) = options.int4.max_size {
            int4.push_str(&format!(", size budget {max_size} bytes: {} products at 2 bits (asymmetric), {} at 4 bits, the rest int8 or float", summary.two_bit.len(), summary.converted.len()));
        }
        metadata.push((keys::QUANTIZE_INT4.into(), int4));
    }
    if options.precision.is_int8() {
        let weights = format!(
            "symmetric {}, {}",
            if options.weights.per_tensor { "per-tensor" } else { "per-channel" },
            options.weights.storage.describe()
        );
        metadata.push((keys::QUANTIZE_TARGET.into(), options.target.as_str().into()));
        if !options.float_activations.is_empty() {
            metadata.push((keys::QUANTIZE_FLOAT_ACTIVATIONS.into(), options.float_activations.join(",")));
        }
        metadata.push((keys::QUANTIZE_WEIGHTS.into(), weights));
    }
    if options.precision == Precision::Int8Dynamic {
        metadata.push((keys::QUANTIZE_ACTIVATION_SCALES.into(), options.activation_scales.as_str().into()));
    }
    if options.precision == Precision::Int8Static {
        metadata.push((keys::QUANTIZE_METHOD.into(), options.method.to_string()));
        metadata.push((keys::QUANTIZE_SAMPLES.into(), summary.calibration_features.to_string()));
    } else if summary.statistics_features > 0 {
        metadata.push((keys::QUANTIZE_SAMPLES.into(), summary.statistics_features.to_string()));
    }
    // Calibration ranges (int8-static) or input statistics (int4 GPTQ, size budget): whether another
    // CPU reproduces them. tract's generic kernels compute the same bits on every CPU; ONNX
    // Runtime's are chosen by the CPU that ran the float graph.
    if let Some(engine) = summary.calibration_engine {
        let kernels = if engine == "tract" {
            "generic (the same on every CPU)"
        } else {
            "this CPU's (another CPU may calibrate other ranges)"
        };
        metadata.push((keys::QUANTIZE_CALIBRATION_ENGINE.into(), engine.into()));
        metadata.push((keys::QUANTIZE_CALIBRATION_KERNELS.into(), kernels.into()));
        if let Some(why) = &summary.calibration_fallback {
            metadata.push((keys::QUANTIZE_CALIBRATION_FALLBACK.into(), why.clone()));
        }
    }
    out.metadata_props = metadata.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect();
    Ok((out, summary))
}
