//! `qaforge golden`: a golden bundle of any supported checkpoint and any SQuAD-format file,
//! computed in Rust. Features are built with the model's own tokenizer as run_qa.py builds them,
//! the logits come from qaforge-reference (candle), and predictions and metrics from qaforge-squad.
//! The bundle is written into a temporary directory beside the target and renamed into place, so a
//! failed or interrupted run leaves no half-written bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qaforge_checkpoint::Checkpoint;
use qaforge_reference::ReferenceModel;
use qaforge_runtime::Engine;
use qaforge_squad::{evaluate, predict_all, FeatureOptions, PostprocessOptions, QaTokenizer, SquadFile};

use crate::bundle::{
    file_sha256, BundleFile, BundleSettings, DataIdentity, Manifest, ModelIdentity, ReferenceScores, BUNDLE_FORMAT,
    MANIFEST,
};
use crate::golden::GoldenLogits;
use crate::VerifyError;

/// What `qaforge golden` builds.
#[derive(Debug, Clone, Copy)]
pub struct BundleOptions {
    /// Keep only the data's first `limit` questions.
    pub limit: Option<usize>,
    /// Tokens per feature.
    pub max_length: usize,
    /// Overlap of consecutive windows.
    pub doc_stride: usize,
    /// Features per reference batch: 1 by default, each feature computed at its own length
    /// (batches are padded to their longest feature, 21% more tokens at 8 on the SQuAD v2 dev
    /// set, and the reference gains nothing per token from larger products).
    pub batch_size: usize,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions { limit: None, max_length: 384, doc_stride: 128, batch_size: 1 }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io { path: path.to_owned(), source }
}

/// Builds the bundle of `model_dir` on `data_path` into `out`. `progress(done, total)` follows the
/// reference run (features). Returns the manifest written.
pub fn make_bundle(
    model_dir: &Path,
    data_path: &Path,
    out: &Path,
    options: &BundleOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Manifest, VerifyError> {
    if out.exists()
        && !(out.is_dir()
            && (out.join(MANIFEST).is_file() || std::fs::read_dir(out).map_err(io(out))?.next().is_none()))
    {
        return Err(VerifyError::Bundle {
            path: out.to_owned(),
            message: "exists and is not a golden bundle; refusing to replace it".into(),
        });
    }
    let checkpoint = Checkpoint::open(model_dir)?;
    let tokenizer = QaTokenizer::from_model_dir(model_dir)?;
    let data_bytes = std::fs::read(data_path).map_err(io(data_path))?;
    let data_sha256 = qaforge_provenance::sha256_hex(&data_bytes);
    let data_bytes = match options.limit {
        Some(limit) => SquadFile::first_questions_json(&data_bytes, limit, data_path)?,
        None => data_bytes,
    };
    let data = SquadFile::parse(&data_bytes, data_path)?;
    let feature_options =
        FeatureOptions { max_length: options.max_length, doc_stride: options.doc_stride, lstrip_question: true };
    let features = tokenizer.features(&data.examples, &feature_options)?;

    let model = ReferenceModel::load(&checkpoint)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let logits = model.run_features(&features, options.batch_size, model.preferred_threads(cores), &|n| {
        progress(n, features.count)
    })?;

    // Post-processed over real tokens, as verify post-processes both sides (dynamic padding does
    // not compute padding positions).
    let postprocess = PostprocessOptions::default();
    let predicted = predict_all(&data, &features, &logits.start, &logits.end, &postprocess, true);
    let texts: BTreeMap<String, String> = predicted.iter().map(|(id, p)| (id.clone(), p.text.clone())).collect();
    let null_odds: BTreeMap<String, f32> = predicted.iter().map(|(id, p)| (id.clone(), p.null_odds)).collect();
    let metrics = evaluate(&data, &texts);

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new().prefix(".qaforge-bundle-").tempdir_in(&parent).map_err(io(&parent))?;
    let dir = staging.path();
    std::fs::write(dir.join("data.json"), &data_bytes).map_err(io(&dir.join("data.json")))?;
    let mut settings = serde_json::Map::new();
    settings.insert("doc_stride".into(), options.doc_stride.into());
    settings.insert("question_lstrip".into(), true.into());
    features.write(dir, settings)?;
    GoldenLogits { start: logits.start, end: logits.end }.write(
        &dir.join("logits.safetensors"),
        features.count,
        features.max_length,
    )?;
    let predictions_json = serde_json::json!({ "predictions": texts, "null_odds": null_odds });
    std::fs::write(dir.join("predictions.json"), pretty(&predictions_json))
        .map_err(io(&dir.join("predictions.json")))?;
    std::fs::write(dir.join("metrics.json"), pretty(&serde_json::to_value(&metrics).unwrap_or_default()))
        .map_err(io(&dir.join("metrics.json")))?;

    let mut files = BTreeMap::new();
    for (role, name) in [
        ("data", "data.json"),
        ("features", "features.safetensors"),
        ("feature_index", "features.json"),
        ("logits", "logits.safetensors"),
        ("predictions", "predictions.json"),
        ("metrics", "metrics.json"),
    ] {
        let (bytes, sha256) = file_sha256(&dir.join(name))?;
        files.insert(role.to_string(), BundleFile { path: name.into(), bytes, sha256 });
    }
    let manifest = Manifest {
        format: BUNDLE_FORMAT.into(),
        generator: format!("qaforge golden {}", env!("CARGO_PKG_VERSION")),
        reference: model.description(),
        model: ModelIdentity {
            architecture: checkpoint.config.architecture().into(),
            source_sha256: checkpoint.source_sha256()?,
            tokenizer_sha256: qaforge_checkpoint::tokenizer_sha256(model_dir)?,
        },
        data: DataIdentity {
            name: data_path
                .file_name()
                .map_or_else(|| data_path.display().to_string(), |n| n.to_string_lossy().into_owned()),
            source_sha256: data_sha256,
            questions: data.examples.len(),
            limit: options.limit,
        },
        settings: BundleSettings {
            max_length: options.max_length,
            doc_stride: options.doc_stride,
            n_best: postprocess.n_best,
            max_answer_length: postprocess.max_answer_length,
            null_score_diff_threshold: postprocess.null_score_diff_threshold as f64,
            postprocess: "real tokens".into(),
        },
        features: features.count,
        scores: ReferenceScores { exact: metrics.exact, f1: metrics.f1 },
        files,
    };
    let manifest_json = serde_json::to_value(&manifest)
        .map_err(|e| VerifyError::Bundle { path: out.to_owned(), message: e.to_string() })?;
    std::fs::write(dir.join(MANIFEST), pretty(&manifest_json)).map_err(io(&dir.join(MANIFEST)))?;

    // Into place: the old bundle (if any) goes only once the new one is complete.
    let staged = staging.keep();
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    if let Err(e) = std::fs::rename(&staged, out) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(io(out)(e));
    }
    Ok(manifest)
}

/// Pretty JSON with a final newline, the layout of every JSON file qaforge writes.
fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
