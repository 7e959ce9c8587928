//! One verification run: the artifact's logits against PyTorch's, its SQuAD scores against the
//! gold answers and against the reference predictions, tolerances by precision, and the report
//! as JSON (machines) and Markdown (people).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use qaforge_runtime::integer_kernels::{onnxruntime_exactness, CpuFeatures, Exactness, IntegerProducts};
use qaforge_runtime::{load_engine, EngineChoice};
use qaforge_squad::{agreement, evaluate, predict_all, Features, Metrics, PostprocessOptions, SquadFile};
use serde::Serialize;

use crate::golden::GoldenLogits;
use crate::stats::LogitStats;
use crate::VerifyError;

/// What an artifact must meet. `None` disables a check.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Tolerances {
    /// Largest |Δ| between the artifact's and the reference logits.
    pub max_abs_diff: Option<f64>,
    /// Every prediction must equal the reference prediction.
    pub identical_predictions: bool,
    /// Largest drop of F1 (points, versus gold answers) below the reference's F1.
    pub max_f1_drop: Option<f64>,
    /// Smallest cosine similarity between the artifact's and the reference logits.
    pub min_cosine: Option<f64>,
}

impl Tolerances {
    /// Defaults by precision (the artifact's `qaforge.precision` metadata): fp32 must reproduce
    /// PyTorch (max |Δ| ≤ 1e-4 and identical predictions); fp16 may lose 0.1 F1 and int8 1.0 F1,
    /// with a cosine floor that catches broken logits even when F1 is insensitive.
    pub fn for_precision(precision: &str) -> Self {
        match precision {
            "fp16" => Tolerances { max_abs_diff: None, identical_predictions: false, max_f1_drop: Some(0.1), min_cosine: Some(0.999) },
            p if p.starts_with("int8") => Tolerances { max_abs_diff: None, identical_predictions: false, max_f1_drop: Some(1.0), min_cosine: Some(0.99) },
            _ => Tolerances { max_abs_diff: Some(1e-4), identical_predictions: true, max_f1_drop: None, min_cosine: None },
        }
    }
}

/// Tolerances given explicitly (command-line flags); each replaces its precision default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToleranceOverrides {
    /// Replaces [`Tolerances::max_abs_diff`].
    pub max_abs_diff: Option<f64>,
    /// Replaces [`Tolerances::max_f1_drop`].
    pub max_f1_drop: Option<f64>,
    /// Replaces [`Tolerances::min_cosine`].
    pub min_cosine: Option<f64>,
}

impl Tolerances {
    /// These tolerances with every given override in place of its default.
    pub fn with(self, overrides: ToleranceOverrides) -> Self {
        Tolerances {
            max_abs_diff: overrides.max_abs_diff.or(self.max_abs_diff),
            max_f1_drop: overrides.max_f1_drop.or(self.max_f1_drop),
            min_cosine: overrides.min_cosine.or(self.min_cosine),
            identical_predictions: self.identical_predictions,
        }
    }
}

/// SQuAD v2 scores of the artifact and the reference on the golden evaluation slice.
#[derive(Debug, Clone, Serialize)]
pub struct SquadScores {
    /// The artifact's predictions against the gold answers.
    pub artifact: Metrics,
    /// The reference predictions (PyTorch's logits, post-processed like the artifact's) against the gold answers.
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
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The artifact.
    pub artifact: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its sha256.
    pub sha256: String,
    /// Its precision (metadata `qaforge.precision`; fp32 when absent).
    pub precision: String,
    /// Its provenance metadata.
    pub metadata: BTreeMap<String, String>,
    /// The fixture whose goldens it was compared with.
    pub fixture: PathBuf,
    /// Engine and CPU the figures were measured with.
    pub engine: String,
    /// CPU features relevant to int8 kernels.
    pub cpu: String,
    /// Whether the engine computes this artifact's integer products exactly on this CPU, as its
    /// target does. When false the figures are not the artifact's: it is neither passed nor failed.
    pub engine_exact: bool,
    /// Why the engine is not exact here, and what to do instead.
    pub engine_note: Option<String>,
    /// The golden SQuAD slice in words (articles, questions, answerable / unanswerable).
    pub data: String,
    /// Features run.
    pub features: usize,
    /// Wall time of loading and running the artifact.
    pub seconds: f64,
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

/// Where verification reads its goldens.
#[derive(Debug, Clone)]
pub struct GoldenPaths {
    /// The fixture directory (holds golden/logits.safetensors).
    pub fixture: PathBuf,
    /// The golden SQuAD directory (eval.json, features.safetensors, features.json).
    pub squad: PathBuf,
}

impl GoldenPaths {
    /// Where the fixture's features are: its own `golden/features.*` where its tokenizer differs
    /// from the shared one (RoBERTa's byte-level BPE), else the SQuAD directory's.
    pub fn features_dir(&self) -> PathBuf {
        let own = self.fixture.join("golden");
        if own.join("features.json").is_file() {
            own
        } else {
            self.squad.clone()
        }
    }
}

/// How verification runs the artifact.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The engine (tract unless asked otherwise).
    pub engine: EngineChoice,
    /// Features per batch (each batch padded to its longest feature).
    pub batch_size: usize,
    /// Cores to use.
    pub cores: usize,
}

/// Runs `artifact` over the golden features and checks it against its precision's default
/// tolerances with `overrides` in place. `progress` gets (features just done, total).
pub fn verify(
    artifact: &Path,
    golden: &GoldenPaths,
    overrides: ToleranceOverrides,
    run: &RunOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    // The file is read once: its bytes give the size and sha256, their decoding the metadata and
    // the graph tract runs.
    let bytes = std::fs::read(artifact).map_err(|source| VerifyError::Io { path: artifact.to_owned(), source })?;
    let model = qaforge_onnx::decode_model(&bytes, artifact).map_err(|e| VerifyError::Artifact(e.to_string()))?;
    let metadata: BTreeMap<String, String> = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    let precision = metadata.get("qaforge.precision").cloned().unwrap_or_else(|| "fp32".into());
    let tolerances = Tolerances::for_precision(&precision).with(overrides);

    let data = SquadFile::load(&golden.squad.join("eval.json"))?;
    let features = Features::load(&golden.features_dir())?;
    let reference = GoldenLogits::load(&golden.fixture, &features)?;

    let cpu = CpuFeatures::detect();
    let exactness = engine_exactness(&run.engine, &cpu, &model);
    qaforge_runtime::check_token_ids(&model, &features, artifact)?;
    let engine = load_engine(&run.engine, &model, &bytes, artifact, run.cores)?;
    let logits = engine.run_features(&features, run.batch_size, engine.preferred_threads(run.cores), &|n| progress(n, features.count))?;
    let seconds = started.elapsed().as_secs_f64();

    let stats = LogitStats::over_features(&features, &logits, &reference);
    let m = features.max_length;
    let argmax = |v: &[f32], i: usize| {
        let row = &v[i * m..i * m + features.length(i)];
        row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (k, &x)| if x > best.1 { (k, x) } else { best }).0
    };
    let agree = (0..features.count)
        .filter(|&i| argmax(&logits.start, i) == argmax(&reference.start, i) && argmax(&logits.end, i) == argmax(&reference.end, i))
        .count();

    // Both sides are post-processed the same way over real tokens only: dynamic padding does not
    // compute padding positions, which run_qa.py lets compete for n-best slots.
    let texts = |start: &[f32], end: &[f32]| -> BTreeMap<String, String> {
        predict_all(&data, &features, start, end, &PostprocessOptions::default(), true).into_iter().map(|(id, p)| (id, p.text)).collect()
    };
    let predictions = texts(&logits.start, &logits.end);
    let reference_predictions = texts(&reference.start, &reference.end);
    let artifact_metrics = evaluate(&data, &predictions);
    let reference_metrics = evaluate(&data, &reference_predictions);
    let (agreement_exact, agreement_f1, identical) = agreement(&predictions, &reference_predictions);
    let differing = reference_predictions.iter().filter(|(id, want)| predictions.get(*id) != Some(want)).map(|(id, _)| id.clone()).take(20).collect();
    let squad = SquadScores {
        f1_drop: reference_metrics.f1 - artifact_metrics.f1,
        artifact: artifact_metrics,
        reference: reference_metrics,
        agreement_exact,
        agreement_f1,
        identical_predictions: identical,
        questions: reference_predictions.len(),
        differing,
    };

    let mut failures = Vec::new();
    if stats.non_finite > 0 {
        let bad = (0..features.count)
            .find(|&i| (0..features.length(i)).any(|t| !logits.start[i * m + t].is_finite() || !logits.end[i * m + t].is_finite()))
            .unwrap_or(0);
        failures.push(format!("{} non-finite logits (NaN or Inf), first in feature {bad} (question {})", stats.non_finite, features.example_ids[bad]));
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
    if tolerances.identical_predictions && squad.identical_predictions != squad.questions {
        failures.push(format!(
            "{} of {} predictions differ from the reference (e.g. {})",
            squad.questions - squad.identical_predictions,
            squad.questions,
            squad.differing.first().map_or("", String::as_str)
        ));
    }
    if let Some(t) = tolerances.max_f1_drop {
        if squad.f1_drop.is_nan() || squad.f1_drop > t {
            failures.push(format!("F1 {:.2} is {:.2} points below the reference's {:.2} (tolerance {t})", squad.artifact.f1, squad.f1_drop, squad.reference.f1));
        }
    }
    let mut report = Report {
        artifact: artifact.to_owned(),
        size_bytes: bytes.len() as u64,
        sha256: qaforge_onnx::sha256_hex(&bytes),
        precision,
        metadata,
        fixture: golden.fixture.clone(),
        engine: engine.description(),
        cpu: cpu.describe(),
        engine_exact: exactness == Exactness::Exact,
        engine_note: match exactness {
            Exactness::Exact => None,
            Exactness::Inexact { reason } => Some(reason),
        },
        data: data.summary(),
        features: features.count,
        seconds,
        logits: stats,
        argmax_agreement: agree as f64 / features.count.max(1) as f64,
        squad,
        tolerances,
        pass: false,
        verdict: String::new(),
        failures,
        table_row: String::new(),
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
    Ok(report)
}

fn size(bytes: u64) -> String {
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
            size(self.size_bytes),
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

    /// The report for people: the table, the reference's scores, tolerances and failures.
    pub fn markdown(&self) -> String {
        let mut s = format!("# qaforge verify: {}\n\n{MARKDOWN_HEADER}\n{}\n\n", self.artifact.display(), self.markdown_row());
        s += &format!(
            "Reference (PyTorch) on the same {} questions: EM {:.2}, F1 {:.2}. Fixture `{}`, {} features, engine {} on {}.\n\n",
            self.squad.questions,
            self.squad.reference.exact,
            self.squad.reference.f1,
            self.fixture.display(),
            self.features,
            self.engine,
            self.cpu
        );
        s += &format!("Tolerances ({}): {}\n\n", self.precision, serde_json::to_string(&self.tolerances).unwrap_or_default());
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
