//! One verification run, in two steps: computing the artifact's logits over a bundle's features
//! ([`compute_logits`], an engine run; logits computed elsewhere plug in here as a second
//! source), and judging them ([`judge`]): against the bundle's reference logits (PyTorch's or
//! candle's, whichever made the bundle), SQuAD scores against the gold answers and against the
//! reference predictions, tolerances by precision ([`Tolerances::for_precision`]), and the
//! report as JSON (machines) and Markdown (people).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;


use qaforge_runtime::integer_kernels::{onnxruntime_exactness, CpuFeatures, Exactness, IntegerProducts};
use qaforge_provenance::{keys, Precision};
use qaforge_runtime::{load_engine, EngineChoice, Logits};
use qaforge_squad::{agreement, evaluate, predict_all, Features, Metrics, PostprocessOptions, SquadFile};
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::golden::GoldenLogits;
use crate::stats::{FeatureAgreement, LogitStats};
use crate::VerifyError;

/// What an artifact must meet. `None` disables a check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Tolerances {
    /// Largest |Δ| between the artifact's and the reference logits.
    pub max_abs_diff: Option<f64>,
    /// Every prediction must equal the reference prediction.
    pub identical_predictions: bool,
    /// Largest drop of F1 (points, versus gold answers) below the reference's F1.
    pub max_f1_drop: Option<f64>,
    /// Smallest cosine similarity between the artifact's and the reference logits.
    pub min_cosine: Option<f64>,
    /// Smallest agreement F1 (percent) of the artifact's predictions with the reference's: how
    /// closely it follows the float model, whatever the gold answers say. Unlike the F1 change,
    /// flips of near ties in both directions do not cancel out here.
    #[serde(default)]
    pub min_agreement_f1: Option<f64>,
}

impl Tolerances {
    /// The tolerance table: defaults by precision (the artifact's `qaforge.precision` metadata).
    /// fp32 must reproduce the reference (max |Δ| ≤ 1e-4 and identical predictions); fp16 may
    /// lose 0.1 F1 and int8 1.0 F1, with a cosine floor that catches broken logits even when F1
    /// is insensitive. The match has no wildcard: a new precision does not compile without its row.
    pub fn for_precision(precision: Precision) -> Self {
        let lossy = |max_f1_drop: f64, min_cosine: f64| Tolerances { max_abs_diff: None, identical_predictions: false, max_f1_drop: Some(max_f1_drop), min_cosine: Some(min_cosine), min_agreement_f1: None };
        match precision {
            Precision::Fp32 => Tolerances { max_abs_diff: Some(1e-4), identical_predictions: true, max_f1_drop: None, min_cosine: None, min_agreement_f1: None },
            Precision::Fp16 => lossy(0.1, 0.999),
            Precision::Int8Dynamic | Precision::Int8Static => lossy(1.0, 0.99),
            Precision::Int4 => lossy(3.0, 0.98),
        }
    }
}

/// Tolerances given explicitly (command-line flags); each replaces its precision default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToleranceOverrides {
    /// The precision whose row of the tolerance table applies, instead of the artifact's own
    /// (recorded or inferred): `verify --precision`.
    pub precision: Option<Precision>,
    /// Replaces [`Tolerances::max_abs_diff`].
    pub max_abs_diff: Option<f64>,
    /// Replaces [`Tolerances::max_f1_drop`].
    pub max_f1_drop: Option<f64>,
    /// Replaces [`Tolerances::min_cosine`].
    pub min_cosine: Option<f64>,
    /// Replaces [`Tolerances::min_agreement_f1`].
    pub min_agreement_f1: Option<f64>,
}

impl Tolerances {
    /// These tolerances with every given override in place of its default.
    pub fn with(self, overrides: ToleranceOverrides) -> Self {
        Tolerances {
            max_abs_diff: overrides.max_abs_diff.or(self.max_abs_diff),
            max_f1_drop: overrides.max_f1_drop.or(self.max_f1_drop),
            min_cosine: overrides.min_cosine.or(self.min_cosine),
            min_agreement_f1: overrides.min_agreement_f1.or(self.min_agreement_f1),
            identical_predictions: self.identical_predictions,
        }
    }
}

/// SQuAD v2 scores of the artifact and the reference on the golden evaluation slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SquadScores {
    /// The artifact's predictions against the gold answers.
    pub artifact: Metrics,
    /// The reference predictions (the bundle's reference logits, post-processed like the artifact's) against the gold answers.
    pub reference: Metrics,
    /// reference F1 − artifact F1, in points (positive: the artifact is worse).
    pub f1_drop: f64,
    /// Exact match of the artifact's predictions with the reference predictions, in percent.
    pub agreement_exact: f64,
    /// F1 of the artifact's predictions against the reference predictions, in percent.
    pub agreement_f1: f64,
    /// Predictions identical to the reference's.
    pub identical_predictions: usize,
    /// Questions.
    pub questions: usize,
    /// Question ids whose prediction differs from the reference's (first 20).
    pub differing: Vec<String>,
}

/// The result of verifying one artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The artifact.
    pub artifact: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its sha256.
    pub sha256: String,
    /// Its precision (metadata `qaforge.precision`, else inferred from its operators, or given).
    pub precision: Precision,
    /// Where the precision comes from: its metadata, its operators (with the evidence), or `--precision`.
    #[serde(default)]
    pub precision_source: String,
    /// Its provenance metadata.
    pub metadata: BTreeMap<String, String>,
    /// The golden bundle it was compared with.
    pub golden: PathBuf,
    /// What computed the bundle's reference logits.
    pub reference: String,
    /// Provenance notes: what could not be checked, and mismatches allowed by
    /// `--allow-other-checkpoint`.
    pub provenance: Vec<String>,
    /// Engine and CPU the figures were measured with.
    pub engine: String,
    /// CPU features relevant to int8 kernels.
    pub cpu: String,
    /// Whether the engine computes this artifact's integer products exactly on this CPU, as its
    /// target does. When false the figures are not the artifact's: it is neither passed nor failed.
    pub engine_exact: bool,
    /// Why the engine is not exact here, and what to do instead.
    pub engine_note: Option<String>,
    /// The bundle's SQuAD data in words (articles, questions, answerable / unanswerable), or a
    /// shard's slice of it.
    pub data: String,
    /// Features run.
    pub features: usize,
    /// Wall time of loading and running the artifact.
    pub seconds: f64,
    /// Features per batch the logits were computed at (int8-dynamic's depend on it), where known.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Logit agreement with the reference.
    pub logits: LogitStats,
    /// Share of features whose start and end argmax equal the reference's.
    pub argmax_agreement: f64,
    /// SQuAD scores.
    pub squad: SquadScores,
    /// The tolerances applied.
    pub tolerances: Tolerances,
    /// Every tolerance the artifact misses, in words.
    pub failures: Vec<String>,
    /// No failures, and an exact engine.
    pub pass: bool,
    /// PASS, FAIL (outside tolerance) or NOT VERIFIED (the engine is not exact for it here).
    pub verdict: String,
    /// This report's row of the Markdown comparison table (under [`MARKDOWN_HEADER`]).
    pub table_row: String,
    /// Questions whose prediction differs from the reference's where the reference's own margin
    /// is within 4 × max |Δ| (near ties: excused for fp32).
    #[serde(default)]
    pub near_ties: Vec<String>,
    /// A shard's data for `qaforge merge` (partial reports only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub part: Option<ShardPart>,
}

/// Whether `engine` computes `model`'s integer products on `cpu` as exactly as the artifact's
/// target does: tract always (its integer kernels widen before multiplying); ONNX Runtime unless
/// full-range int8 weights meet its saturating u8 × s8 kernel.
pub fn engine_exactness(engine: &EngineChoice, cpu: &CpuFeatures, model: &tract_onnx::pb::ModelProto) -> Exactness {
    match engine {
        EngineChoice::Tract => Exactness::Exact,
        EngineChoice::OnnxRuntime { .. } => onnxruntime_exactness(cpu, &IntegerProducts::of(model)),
    }
}

/// The engine an artifact is computed in, and how exactly it computes it on this CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenEngine {
    /// The engine to load.
    pub engine: EngineChoice,
    /// Whether it computes the artifact's integer products as its target does, here.
    pub exactness: Exactness,
    /// Why `--engine auto` moved the artifact to tract (ONNX Runtime would not be exact here).
    pub instead_because: Option<String>,
}

/// The engine verify computes `model` in. Without `exact_fallback`, `asked`. With it (`--engine
/// auto`): `asked` (ONNX Runtime, the engine the artifact ships to, several times tract's speed on
/// int8) where it computes the artifact's integer products exactly on `cpu`; tract, whose integer
/// kernels are exact on every CPU, where it would not (full-range int8 weights meeting ONNX
/// Runtime's saturating u8 × s8 kernel on x86 without VNNI), with the reason. A graph only ONNX
/// Runtime runs (an .ort package, com.microsoft fused operators) stays where it was asked, and
/// verify says NOT VERIFIED there. The exactness is computed once, for the engine chosen.
pub fn choose_engine(asked: &EngineChoice, exact_fallback: bool, cpu: &CpuFeatures, model: &tract_onnx::pb::ModelProto, engine_bytes: &[u8]) -> ChosenEngine {
    match engine_exactness(asked, cpu, model) {
        Exactness::Inexact { reason }
            if exact_fallback && !qaforge_runtime::is_ort_format(engine_bytes) && qaforge_runtime::onnxruntime_only(model).is_none() =>
        {
            ChosenEngine { engine: EngineChoice::Tract, exactness: engine_exactness(&EngineChoice::Tract, cpu, model), instead_because: Some(reason) }
        }
        exactness => ChosenEngine { engine: asked.clone(), exactness, instead_because: None },
    }
}

/// The batch size verify runs an artifact of `precision` at unless told otherwise: 1 for
/// int8-dynamic, 8 for the rest. An int8-dynamic artifact quantizes each activation with a scale
/// taken over the whole batch, padding included, so its logits depend on which features share its
/// batch; an app runs one question at a time, and batch 1 gives the logits it will see. The other
/// precisions compute each feature alone, and batches only make verify faster.
pub fn default_batch_size(precision: Precision) -> usize {
    match precision {
        Precision::Int8Dynamic => 1,
        Precision::Fp32 | Precision::Fp16 | Precision::Int8Static | Precision::Int4 => 8,
    }
}

/// A deterministic slice of a verification run: shard `index` (0-based) of `count`. Shards split
/// the bundle's questions into contiguous runs; each shard runs the global batches its features
/// fall in, so every feature's logits are computed exactly as in an unsharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// Shards in all (≥ 1).
    pub count: usize,
}

impl Shard {
    /// The whole run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `K/N` (1-based K, as the CLI and CI matrices write it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (k, n) = text.split_once('/').ok_or_else(|| format!("`{text}`: expected K/N, e.g. 2/4"))?;
        let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| format!("`{text}`: K is not a number"))?, n.trim().parse().map_err(|_| format!("`{text}`: N is not a number"))?);
        if n == 0 || k == 0 || k > n {
            return Err(format!("`{text}`: need 1 ≤ K ≤ N"));
        }
        Ok(Shard { index: k - 1, count: n })
    }

    /// This shard's questions out of `questions`.
    pub fn questions(self, questions: usize) -> std::ops::Range<usize> {
        let at = |k: usize| k * questions / self.count;
        at(self.index)..at(self.index + 1)
    }
}

/// How verification runs the artifact.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The engine (tract unless asked otherwise).
    pub engine: EngineChoice,
    /// Features per batch (each batch padded to its longest feature); `None`: the artifact's
    /// precision's [`default_batch_size`].
    pub batch_size: Option<usize>,
    /// Cores to use.
    pub cores: usize,
    /// The slice to verify.
    pub shard: Shard,
    /// Compare with a bundle of another checkpoint or tokenizer than the artifact's provenance names.
    pub allow_other_checkpoint: bool,
    /// The graph's inputs for token ids, attention mask and token types, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// `verify --engine auto`: where `engine` would not compute the artifact exactly on this CPU,
    /// run it in tract instead (see [`choose_engine`]); the report's engine says why.
    pub exact_fallback: bool,
}

/// What a shard's partial report carries for `qaforge merge`: its per-feature agreements and its
/// questions' predictions (the artifact's and the reference's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardPart {
    /// Which shard.
    pub shard: Shard,
    /// sha256 of the bundle's manifest (every shard must have read the same bundle).
    pub bundle_manifest_sha256: String,
    /// Questions of the bundle this shard verified.
    pub questions: (usize, usize),
    /// Features of those questions.
    pub features: (usize, usize),
    /// One agreement per feature, in feature order.
    pub feature_agreements: Vec<FeatureAgreement>,
    /// The artifact's predictions.
    pub predictions: BTreeMap<String, String>,
    /// The reference's predictions.
    pub reference_predictions: BTreeMap<String, String>,
    /// The reference's decision margin ([`qaforge_squad::Prediction::margin`]) of every question
    /// whose prediction differs, as f32 bits.
    pub differing_margins: BTreeMap<String, u32>,
}

/// The artifact's identity and the run's settings: what every shard of a run shares.
struct Header {
    artifact: PathBuf,
    size_bytes: u64,
    sha256: String,
    precision: Precision,
    precision_source: String,
    metadata: BTreeMap<String, String>,
    bundle: PathBuf,
    reference: String,
    provenance: Vec<String>,
    engine: String,
    cpu: String,
    batch_size: Option<usize>,
    exactness: Exactness,
    seconds: f64,
    tolerances: Tolerances,
}

/// The artifact's provenance against the bundle's model: refused unless allowed, noted when the
/// artifact records none.
fn check_provenance(metadata: &BTreeMap<String, String>, bundle: &Bundle, allow: bool) -> Result<Vec<String>, VerifyError> {
    let model = &bundle.manifest.model;
    let mut notes = Vec::new();
    let mut mismatches = Vec::new();
    match metadata.get(keys::SOURCE_SHA256) {
        Some(sha) if *sha != model.source_sha256 => mismatches.push(format!("the artifact was converted from checkpoint {sha}, the bundle's reference is checkpoint {}", model.source_sha256)),
        Some(_) => {}
        None => notes.push(format!("the artifact records no {}: its checkpoint could not be compared with the bundle's", keys::SOURCE_SHA256)),
    }
    if let (Some(sha), Some(want)) = (metadata.get(keys::TOKENIZER_SHA256), &model.tokenizer_sha256) {
        if sha != want {
            mismatches.push(format!("the artifact's tokenizer is {sha}, the bundle's features were built with tokenizer {want}"));
        }
    }
    if mismatches.is_empty() {
        return Ok(notes);
    }
    if !allow {
        return Err(VerifyError::Mismatch(format!(
            "{}: {} (pass --allow-other-checkpoint to compare anyway)",
            bundle.dir.display(),
            mismatches.join("; ")
        )));
    }
    notes.extend(mismatches.into_iter().map(|m| format!("allowed: {m}")));
    Ok(notes)
}

/// An artifact read for verification: its bytes' identity, its graph (or an ORT-format
/// package's view of it), its provenance and precision, checked against a bundle.
pub struct Artifact {
    /// Where it was read from.
    pub path: PathBuf,
    /// Size of the model file in bytes.
    pub size_bytes: u64,
    /// sha256 of the model file.
    pub sha256: String,
    /// Its graph: inputs, metadata, and (for ONNX files) the nodes an engine runs.
    pub model: tract_onnx::pb::ModelProto,
    /// Its metadata_props.
    pub metadata: BTreeMap<String, String>,
    /// Its precision: recorded in its metadata, else inferred from its operators.
    pub precision: Precision,
    /// Where [`Artifact::precision`] comes from, in words.
    pub precision_source: String,
    /// Provenance notes: what could not be checked, mismatches allowed, external data read.
    pub provenance: Vec<String>,
    /// The bytes an engine loads (the model file, with external data inlined when it has any).
    engine_bytes: Vec<u8>,
}

impl Artifact {
    /// Reads `path` and checks its provenance against `bundle` (a checkpoint or tokenizer other
    /// than the bundle's is refused unless `allow_other_checkpoint`). `engine` is needed to
    /// read an ORT-format package, whose view only ONNX Runtime gives.
    pub fn open(path: &Path, bundle: &Bundle, engine: &EngineChoice, allow_other_checkpoint: bool) -> Result<Self, VerifyError> {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_owned(), source })?;
        // An ORT-format package has no ONNX protobuf: ONNX Runtime, the only engine that reads it,
        // gives its inputs and metadata.
        let (model, data_files) = if qaforge_runtime::is_ort_format(&bytes) {
            (qaforge_runtime::ort_format_view(engine, &bytes, path)?, vec![])
        } else {
            qaforge_onnx::decode_model_with_data(&bytes, path).map_err(|e| VerifyError::Artifact(e.to_string()))?
        };
        let metadata: BTreeMap<String, String> = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        let (precision, precision_source) = match metadata.get(keys::PRECISION) {
            None => qaforge_onnx::infer_precision(&model).map_err(|why| VerifyError::Artifact(format!("{}: records no {} and {why}", path.display(), keys::PRECISION)))?,
            Some(name) => (name.parse().map_err(|e| VerifyError::Artifact(format!("{}: metadata {}: {e}", path.display(), keys::PRECISION)))?, format!("from metadata {}", keys::PRECISION)),
        };
        let mut provenance = check_provenance(&metadata, bundle, allow_other_checkpoint)?;
        // The artifact's sha256 covers the model file only; the weights it keeps beside it are
        // named with theirs, and the engine is given the model with their bytes inline.
        let (size_bytes, sha256) = (bytes.len() as u64, qaforge_onnx::sha256_hex(&bytes));
        let mut engine_bytes = bytes;
        if !data_files.is_empty() {
            for file in &data_files {
                let data = std::fs::read(file).map_err(|source| VerifyError::Io { path: file.clone(), source })?;
                provenance.push(format!("external data {} ({} bytes, sha256 {})", file.display(), data.len(), qaforge_onnx::sha256_hex(&data)));
            }
            engine_bytes = qaforge_onnx::encode(&model);
        }
        Ok(Artifact { path: path.to_owned(), size_bytes, sha256, model, metadata, precision, precision_source, provenance, engine_bytes })
    }
}

/// Logits of a shard's own features (all of them for an unsharded run), in the bundle's feature
/// order, and what computed them.
pub struct ComputedLogits {
    /// The bundle's features they are for.
    pub features: std::ops::Range<usize>,
    /// `[features, max_length]` start and end logits.
    pub logits: Logits,
    /// What computed them (engine, runtime and device), in words.
    pub engine: String,
    /// The CPU features of the machine that computed them.
    pub cpu: String,
    /// Whether that engine computes the artifact's integer products as its target does.
    pub exactness: Exactness,
    /// Wall time of loading the artifact and computing them.
    pub seconds: f64,
    /// Features per batch they were computed at, where known.
    pub batch_size: Option<usize>,
}

/// The first step of verification: runs `artifact` in `run.engine` over the bundle's features
/// (all of them, or `run.shard`'s) and returns the logits of the shard's own features. `progress`
/// gets (features just done, total).
pub fn compute_logits(artifact: &Artifact, bundle: &Bundle, run: &RunOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<ComputedLogits, VerifyError> {
    let started = Instant::now();
    let features = &bundle.features;
    let owned = features.range_of_questions(run.shard.questions(bundle.data.examples.len()));
    // The global batches the shard's features fall in: the same batches, padded to the same
    // lengths, as an unsharded run computes.
    let batch = run.batch_size.unwrap_or_else(|| default_batch_size(artifact.precision)).max(1);
    let computed = (owned.start / batch * batch)..(owned.end.div_ceil(batch) * batch).min(features.count);
    let first_example = features.example_index.get(computed.start).copied().unwrap_or(0);
    let slice = features.select(computed.start, computed.end, first_example);

    let cpu = CpuFeatures::detect();
    let chosen = choose_engine(&run.engine, run.exact_fallback, &cpu, &artifact.model, &artifact.engine_bytes);
    let layout = qaforge_runtime::check_inputs(&artifact.model, &artifact.path, run.input_names.as_deref())?;
    qaforge_runtime::check_token_ids(&artifact.model, &layout, &slice, &artifact.path)?;
    let engine = load_engine(&chosen.engine, &artifact.model, &artifact.engine_bytes, &artifact.path, run.cores, layout)?;
    let logits = engine.run_features(&slice, batch, engine.preferred_threads(run.cores), &|n| progress(n, slice.count))?;
    let m = features.max_length;
    let rows = |v: &[f32]| v[(owned.start - computed.start) * m..(owned.end - computed.start) * m].to_vec();
    Ok(ComputedLogits {
        logits: Logits { start: rows(&logits.start), end: rows(&logits.end) },
        features: owned,
        engine: match chosen.instead_because {
            None => engine.description(),
            Some(why) => format!("{} (--engine auto: ONNX Runtime would not be exact here: {why})", engine.description()),
        },
        cpu: cpu.describe(),
        exactness: chosen.exactness,
        seconds: started.elapsed().as_secs_f64(),
        batch_size: Some(batch),
    })
}

/// The second step of verification: judges `computed` (the logits of `shard`'s features, from an
/// engine run or from elsewhere) against the bundle with the artifact's precision's default
/// tolerances and `overrides` in place. A shard of several gives a partial report for [`merge`].
pub fn judge(artifact: &Artifact, bundle: &Bundle, shard: Shard, computed: ComputedLogits, overrides: ToleranceOverrides) -> Result<Report, VerifyError> {
    let (data, features, reference) = (&bundle.data, &bundle.features, &bundle.logits);
    let questions = shard.questions(data.examples.len());
    let owned = features.range_of_questions(questions.clone());
    let m = features.max_length;
    if computed.features != owned || computed.logits.start.len() != owned.len() * m || computed.logits.end.len() != owned.len() * m {
        return Err(VerifyError::Mismatch(format!(
            "logits for features {}..{} ({} start and {} end values) given for shard {}/{}, whose features are {}..{} ({} values each)",
            computed.features.start,
            computed.features.end,
            computed.logits.start.len(),
            computed.logits.end.len(),
            shard.index + 1,
            shard.count,
            owned.start,
            owned.end,
            owned.len() * m
        )));
    }
    // Both sides, cut to the shard's own features.
    let mine = computed.logits;
    let theirs = GoldenLogits { start: reference.start[owned.start * m..owned.end * m].to_vec(), end: reference.end[owned.start * m..owned.end * m].to_vec() };
    let own_features = features.select(owned.start, owned.end, questions.start);
    let own_data = data.questions(questions.clone());
    let feature_agreements: Vec<FeatureAgreement> = (0..own_features.count).map(|i| FeatureAgreement::of(&own_features, i, &mine, &theirs)).collect();
    // Both sides are post-processed the same way over real tokens only: dynamic padding does not
    // compute padding positions, which run_qa.py lets compete for n-best slots.
    let predict = |start: &[f32], end: &[f32]| predict_all(&own_data, &own_features, start, end, &PostprocessOptions::default(), true);
    let texts = |predicted: &BTreeMap<String, qaforge_squad::Prediction>| -> BTreeMap<String, String> { predicted.iter().map(|(id, p)| (id.clone(), p.text.clone())).collect() };
    let (predicted, reference_predicted) = (predict(&mine.start, &mine.end), predict(&theirs.start, &theirs.end));
    let differing_margins = reference_predicted
        .iter()
        .filter(|(id, p)| predicted.get(*id).map(|q| &q.text) != Some(&p.text))
        .map(|(id, p)| (id.clone(), p.margin.to_bits()))
        .collect();
    let part = ShardPart {
        shard,
        bundle_manifest_sha256: bundle.manifest_sha256.clone(),
        questions: (questions.start, questions.end),
        features: (owned.start, owned.end),
        feature_agreements,
        predictions: texts(&predicted),
        reference_predictions: texts(&reference_predicted),
        differing_margins,
    };
    let (precision, precision_source) = match overrides.precision {
        Some(p) => (p, "given by --precision".to_string()),
        None => (artifact.precision, artifact.precision_source.clone()),
    };
    let header = Header {
        artifact: artifact.path.clone(),
        size_bytes: artifact.size_bytes,
        sha256: artifact.sha256.clone(),
        precision,
        precision_source,
        metadata: artifact.metadata.clone(),
        bundle: bundle.dir.clone(),
        reference: bundle.manifest.reference.clone(),
        provenance: artifact.provenance.clone(),
        engine: computed.engine,
        cpu: computed.cpu,
        batch_size: computed.batch_size,
        exactness: computed.exactness,
        seconds: computed.seconds,
        tolerances: Tolerances::for_precision(precision).with(overrides),
    };
    if shard.count == 1 {
        Ok(assemble(header, data, features, part.feature_agreements, part.predictions, part.reference_predictions, &part.differing_margins, None))
    } else {
        let scope_summary = format!("questions {}..{} of {}: {}", questions.start + 1, questions.end, data.examples.len(), own_data.summary());
        let mut report = assemble(header, &own_data, &own_features, part.feature_agreements.clone(), part.predictions.clone(), part.reference_predictions.clone(), &part.differing_margins, Some(scope_summary));
        report.part = Some(part);
        report.pass = false;
        report.verdict = if report.engine_exact { "PARTIAL".into() } else { "NOT VERIFIED".into() };
        report.table_row = report.markdown_row();
        Ok(report)
    }
}

/// Verifies `artifact` against `bundle` in both steps: [`compute_logits`] in `run.engine`, then
/// [`judge`] with its precision's default tolerances and `overrides` in place. `progress` gets
/// (features just done, total).
pub fn verify(
    artifact: &Path,
    bundle: &Bundle,
    overrides: ToleranceOverrides,
    run: &RunOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let artifact = Artifact::open(artifact, bundle, &run.engine, run.allow_other_checkpoint)?;
    let mut computed = compute_logits(&artifact, bundle, run, progress)?;
    // The report's time covers reading the artifact too, as it always has.
    computed.seconds = started.elapsed().as_secs_f64();
    judge(&artifact, bundle, run.shard, computed, overrides)
}

/// Combines the partial reports of shards 1..N of one run (any order) into the report the
/// unsharded run gives: the same features' agreements folded in the same order and the same
/// predictions scored on the same data, so every figure is equal to the bit (`seconds` is the
/// shards' sum).
pub fn merge(parts: &[Report], bundle: &Bundle) -> Result<Report, VerifyError> {
    let mismatch = |message: String| VerifyError::Mismatch(message);
    let first = parts.first().ok_or_else(|| mismatch("no partial reports to merge".into()))?;
    let count = first.part.as_ref().ok_or_else(|| mismatch(format!("{}: not a partial report (verify --shard K/N writes those)", first.artifact.display())))?.shard.count;
    let mut by_index: Vec<Option<&Report>> = vec![None; count];
    for report in parts {
        let part = report.part.as_ref().ok_or_else(|| mismatch(format!("{}: a report without shard data (verify --shard K/N writes partial reports)", report.artifact.display())))?;
        if part.shard.count != count {
            return Err(mismatch(format!("shard {}/{} among shards of {count}", part.shard.index + 1, part.shard.count)));
        }
        if report.sha256 != first.sha256 {
            return Err(mismatch(format!("shard {} verified artifact {}, shard {} artifact {}", part.shard.index + 1, report.sha256, first.part.as_ref().map_or(0, |p| p.shard.index + 1), first.sha256)));
        }
        if part.bundle_manifest_sha256 != bundle.manifest_sha256 {
            return Err(mismatch(format!("shard {} was verified against another bundle (manifest {}) than {} (manifest {})", part.shard.index + 1, part.bundle_manifest_sha256, bundle.dir.display(), bundle.manifest_sha256)));
        }
        if report.engine != first.engine || report.tolerances != first.tolerances {
            return Err(mismatch(format!("shard {} ran with another engine or tolerances ({}; {:?}) than the others ({}; {:?})", part.shard.index + 1, report.engine, report.tolerances, first.engine, first.tolerances)));
        }
        let slot = by_index.get_mut(part.shard.index).ok_or_else(|| mismatch(format!("shard index {} out of {count}", part.shard.index + 1)))?;
        if slot.replace(report).is_some() {
            return Err(mismatch(format!("shard {}/{count} given twice", part.shard.index + 1)));
        }
    }
    let missing: Vec<String> = by_index.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(k, _)| format!("{}/{count}", k + 1)).collect();
    if !missing.is_empty() {
        return Err(mismatch(format!("missing shard(s) {}", missing.join(", "))));
    }
    let mut agreements = Vec::new();
    let (mut predictions, mut reference_predictions, mut margins) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (k, report) in by_index.iter().flatten().enumerate() {
        let part = report.part.as_ref().expect("checked above");
        let want = Shard { index: k, count }.questions(bundle.data.examples.len());
        let features = bundle.features.range_of_questions(want.clone());
        if (part.questions.0, part.questions.1) != (want.start, want.end) || part.feature_agreements.len() != features.len() {
            return Err(mismatch(format!("shard {}/{count} covers questions {}..{} with {} features; this bundle's shard is {}..{} with {}", k + 1, part.questions.0, part.questions.1, part.feature_agreements.len(), want.start, want.end, features.len())));
        }
        agreements.extend_from_slice(&part.feature_agreements);
        predictions.extend(part.predictions.clone());
        reference_predictions.extend(part.reference_predictions.clone());
        margins.extend(part.differing_margins.clone());
    }
    let exact = by_index.iter().flatten().all(|r| r.engine_exact);
    let header = Header {
        artifact: first.artifact.clone(),
        size_bytes: first.size_bytes,
        sha256: first.sha256.clone(),
        precision: first.precision,
        precision_source: first.precision_source.clone(),
        metadata: first.metadata.clone(),
        bundle: bundle.dir.clone(),
        reference: bundle.manifest.reference.clone(),
        provenance: first.provenance.clone(),
        engine: first.engine.clone(),
        cpu: first.cpu.clone(),
        batch_size: first.batch_size,
        exactness: if exact { Exactness::Exact } else { Exactness::Inexact { reason: by_index.iter().flatten().find_map(|r| r.engine_note.clone()).unwrap_or_default() } },
        seconds: by_index.iter().flatten().map(|r| r.seconds).sum(),
        tolerances: first.tolerances,
    };
    Ok(assemble(header, &bundle.data, &bundle.features, agreements, predictions, reference_predictions, &margins, None))
}

/// The report of a run over `data` and its `features`: statistics, scores, failures and verdict.
/// `scope` describes a shard's slice instead of the whole data.
fn assemble(
    h: Header,
    data: &SquadFile,
    features: &Features,
    agreements: Vec<FeatureAgreement>,
    predictions: BTreeMap<String, String>,
    reference_predictions: BTreeMap<String, String>,
    differing_margins: &BTreeMap<String, u32>,
    scope: Option<String>,
) -> Report {
    let stats = LogitStats::fold(&agreements);
    let agree = agreements.iter().filter(|a| a.argmax_agrees).count();
    let artifact_metrics = evaluate(data, &predictions);
    let reference_metrics = evaluate(data, &reference_predictions);
    let (agreement_exact, agreement_f1, identical) = agreement(&predictions, &reference_predictions);
    let differing: Vec<&String> = reference_predictions.iter().filter(|(id, want)| predictions.get(*id) != Some(want)).map(|(id, _)| id).collect();
    let squad = SquadScores {
        f1_drop: reference_metrics.f1 - artifact_metrics.f1,
        artifact: artifact_metrics,
        reference: reference_metrics,
        agreement_exact,
        agreement_f1,
        identical_predictions: identical,
        questions: reference_predictions.len(),
        differing: differing.iter().take(20).map(|id| id.to_string()).collect(),
    };

    let tolerances = h.tolerances;
    let mut failures = Vec::new();
    if stats.non_finite > 0 {
        let bad = agreements.iter().position(|a| a.non_finite > 0).unwrap_or(0);
        failures.push(format!("{} non-finite logits (NaN or Inf), first in feature {bad} (question {})", stats.non_finite, features.example_ids.get(bad).map_or("?", String::as_str)));
    }
    if let Some(t) = tolerances.max_abs_diff {
        if stats.max_abs_diff > t {
            failures.push(format!("max |Δ| {:.3e} > {t:.1e}", stats.max_abs_diff));
        }
    }
    if let Some(t) = tolerances.min_cosine {
        if stats.cosine.is_nan() || stats.cosine < t {
            failures.push(format!("logit cosine {:.6} < {t}", stats.cosine));
        }
    }
    // A float32 artifact reproduces the reference's decisions except where the reference itself
    // is within rounding of deciding otherwise: a prediction whose reference margin is at most 4 ×
    // the observed max |Δ| (exact ties of a random fixture, another float implementation) is a
    // near tie, reported and excused; any other difference fails.
    let near_tie = |id: &String| differing_margins.get(id).is_some_and(|&bits| f64::from(f32::from_bits(bits)) <= 4.0 * stats.max_abs_diff);
    let near_ties: Vec<String> = differing.iter().filter(|id| near_tie(id)).map(|id| id.to_string()).collect();
    let decided = differing.iter().filter(|id| !near_tie(id)).count();
    if tolerances.identical_predictions && decided > 0 {
        failures.push(format!(
            "{decided} of {} predictions differ from the reference beyond rounding (e.g. {})",
            squad.questions,
            differing.iter().find(|id| !near_tie(id)).map_or("", |id| id.as_str())
        ));
    }
    if let Some(t) = tolerances.max_f1_drop {
        if squad.f1_drop.is_nan() || squad.f1_drop > t {
            failures.push(format!("F1 {:.2} is {:.2} points below the reference's {:.2} (tolerance {t})", squad.artifact.f1, squad.f1_drop, squad.reference.f1));
        }
    }
    if let Some(t) = tolerances.min_agreement_f1 {
        if squad.agreement_f1.is_nan() || squad.agreement_f1 < t {
            failures.push(format!(
                "agreement F1 with the reference's predictions {:.2} < {t} ({} of {} predictions identical)",
                squad.agreement_f1, squad.identical_predictions, squad.questions
            ));
        }
    }
    let mut report = Report {
        artifact: h.artifact,
        size_bytes: h.size_bytes,
        sha256: h.sha256,
        precision: h.precision,
        precision_source: h.precision_source,
        metadata: h.metadata,
        golden: h.bundle,
        reference: h.reference,
        provenance: h.provenance,
        engine: h.engine,
        cpu: h.cpu,
        engine_exact: h.exactness == Exactness::Exact,
        engine_note: match h.exactness {
            Exactness::Exact => None,
            Exactness::Inexact { reason } => Some(reason),
        },
        data: scope.unwrap_or_else(|| data.summary()),
        features: features.count,
        seconds: h.seconds,
        batch_size: h.batch_size,
        logits: stats,
        argmax_agreement: agree as f64 / agreements.len().max(1) as f64,
        squad,
        tolerances,
        pass: false,
        verdict: String::new(),
        failures,
        table_row: String::new(),
        near_ties,
        part: None,
    };
    report.pass = report.failures.is_empty() && report.engine_exact;
    report.verdict = if !report.engine_exact {
        "NOT VERIFIED".into()
    } else if report.pass {
        "PASS".into()
    } else {
        "FAIL".into()
    };
    report.table_row = report.markdown_row();
    report
}

/// A file size for people: MiB with two decimals, or KiB with one (every summary and report
/// prints sizes this way).
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The header of the Markdown table of [`Report::markdown_row`].
pub const MARKDOWN_HEADER: &str = "| artifact | precision | size | max abs Δ | cosine | argmax agree | EM | F1 | ΔF1 | agreement F1 | time | verdict |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|";

impl Report {
    /// One row of the Markdown comparison table.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2e} | {:.6} | {:.1}% | {:.2} | {:.2} | {:+.2} | {:.2} | {:.2} s | {} |",
            self.artifact.file_name().map_or_else(|| self.artifact.display().to_string(), |n| n.to_string_lossy().into_owned()),
            self.precision,
            human_bytes(self.size_bytes),
            self.logits.max_abs_diff,
            self.logits.cosine,
            100.0 * self.argmax_agreement,
            self.squad.artifact.exact,
            self.squad.artifact.f1,
            -self.squad.f1_drop,
            self.squad.agreement_f1,
            self.seconds,
            self.verdict,
        )
    }

    /// Where the logits were computed: the engine, the CPU and the batch size, as the summary
    /// line and the Markdown report say it.
    pub fn computed_on(&self) -> String {
        format!("{} on {}{}", self.engine, self.cpu, self.batch_size.map_or_else(String::new, |b| format!(", batch size {b}")))
    }

    /// The report for people: the table, the reference's scores, tolerances and failures.
    pub fn markdown(&self) -> String {
        let mut s = format!("# qaforge verify: {}\n\n{MARKDOWN_HEADER}\n{}\n\n", self.artifact.display(), self.markdown_row());
        s += &format!(
            "Reference ({}) on the same {} questions: EM {:.2}, F1 {:.2}. Golden bundle `{}`, {} features, engine {}.\n\n",
            self.reference,
            self.squad.questions,
            self.squad.reference.exact,
            self.squad.reference.f1,
            self.golden.display(),
            self.features,
            self.computed_on()
        );
        s += &format!("Tolerances ({}, {}): {}\n\n", self.precision, self.precision_source, serde_json::to_string(&self.tolerances).unwrap_or_default());
        if !self.near_ties.is_empty() {
            s += &format!("Near ties (predictions that differ where the reference's own margin is within 4 × max |Δ|): {}.\n\n", self.near_ties.join(", "));
        }
        for note in &self.provenance {
            s += &format!("Provenance: {note}.\n\n");
        }
        if let Some(note) = &self.engine_note {
            s += &format!("**Not verified on this machine.** {note}.\n\n");
        }
        if self.failures.is_empty() {
            s += "All tolerances met.\n";
        } else {
            s += "Failures:\n";
            for f in &self.failures {
                s += &format!("- {f}\n");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_dynamic_is_verified_one_feature_at_a_time() {
        assert_eq!(default_batch_size(Precision::Int8Dynamic), 1);
        for precision in [Precision::Fp32, Precision::Fp16, Precision::Int8Static, Precision::Int4] {
            assert_eq!(default_batch_size(precision), 8, "{precision}");
        }
    }

    #[test]
    fn every_precision_has_a_row_and_lossier_precisions_looser_bounds() {
        // The table is an exhaustive match: a precision added to qaforge_provenance::Precision
        // without a row here does not compile. This checks the rows themselves.
        let fp32 = Tolerances::for_precision(Precision::Fp32);
        assert!(fp32.identical_predictions && fp32.max_abs_diff == Some(1e-4));
        for p in Precision::ALL.into_iter().filter(|&p| p != Precision::Fp32) {
            let t = Tolerances::for_precision(p);
            assert!(!t.identical_predictions && t.max_f1_drop.is_some() && t.min_cosine.is_some(), "{p}: {t:?}");
        }
        let (fp16, int8) = (Tolerances::for_precision(Precision::Fp16), Tolerances::for_precision(Precision::Int8Dynamic));
        assert!(fp16.max_f1_drop < int8.max_f1_drop && fp16.min_cosine > int8.min_cosine);
        assert_eq!(Tolerances::for_precision(Precision::Int8Static), int8);
    }

    #[test]
    fn overrides_replace_only_what_they_give() {
        let t = Tolerances::for_precision(Precision::Fp16).with(ToleranceOverrides { max_f1_drop: Some(1.0), ..Default::default() });
        assert_eq!((t.max_f1_drop, t.min_cosine), (Some(1.0), Some(0.999)));
    }
}
