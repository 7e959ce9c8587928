//! Running ONNX QA graphs with tract, batched with dynamic padding over all cores. Used by
//! quantization (calibration, sensitivity) and by verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qaforge_squad::Features;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// tract could not load or run a graph.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuntimeError {
    /// The artifact (or a description of the in-memory graph).
    pub path: PathBuf,
    /// tract's error chain.
    pub message: String,
}

/// An optimised tract plan for one artifact (symbolic batch and sequence).
pub struct TractSession {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
}

/// Start and end logits of a set of features, each `[count, max_length]` (padding positions of
/// dynamically padded batches are left at zero).
#[derive(Debug, Clone)]
pub struct Logits {
    /// Start logits.
    pub start: Vec<f32>,
    /// End logits.
    pub end: Vec<f32>,
}

impl TractSession {
    /// Loads and optimises an ONNX file.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        Self::optimized(tract_onnx::onnx().model_for_path(path), path.to_owned())
    }

    /// Loads and optimises an in-memory model; `label` (a file name or a description) names it in errors.
    pub fn from_proto(model: &ModelProto, label: &str) -> Result<Self, RuntimeError> {
        Self::optimized(tract_onnx::onnx().model_for_proto_model(model), PathBuf::from(label))
    }

    fn optimized(model: TractResult<InferenceModel>, path: PathBuf) -> Result<Self, RuntimeError> {
        match model.and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()) {
            Ok(plan) => Ok(TractSession { path, plan }),
            Err(e) => Err(RuntimeError { path, message: format!("{e:#}") }),
        }
    }

    /// Runs one batch given as `[batch, len]` row-major inputs and returns every output as f32
    /// values with its shape.
    pub fn run_outputs(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<Vec<(Vec<usize>, Vec<f32>)>, RuntimeError> {
        let runtime = |e: TractError| RuntimeError { path: self.path.clone(), message: format!("{e:#}") };
        let tensor = |v: Vec<i64>| Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue());
        let inputs = tvec![tensor(ids).map_err(runtime)?, tensor(mask).map_err(runtime)?, tensor(types).map_err(runtime)?];
        let outputs = self.plan.run(inputs).map_err(runtime)?;
        outputs
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(runtime)?;
                Ok((t.shape().to_vec(), t.to_plain_array_view::<f32>().map_err(runtime)?.iter().copied().collect()))
            })
            .collect()
    }

    /// Runs one batch given as `[batch, len]` row-major inputs; returns start and end logits.
    pub fn run_batch(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<(Vec<f32>, Vec<f32>), RuntimeError> {
        let mut outputs = self.run_outputs(batch, len, ids, mask, types)?;
        if outputs.len() != 2 {
            return Err(RuntimeError { path: self.path.clone(), message: format!("expected 2 outputs, got {}", outputs.len()) });
        }
        for (shape, _) in &outputs {
            if shape[..] != [batch, len] {
                return Err(RuntimeError { path: self.path.clone(), message: format!("output shape {shape:?}, expected [{batch}, {len}]") });
            }
        }
        let (_, end) = outputs.pop().unwrap_or_default();
        let (_, start) = outputs.pop().unwrap_or_default();
        Ok((start, end))
    }

    /// The padded length a batch of features `s..e` runs at: one padding token more than the
    /// longest feature. MobileBERT's trigram embedding lets the last real token ([SEP]) see the
    /// embedding of the token after it, which is [PAD] in features padded to max_length (as
    /// run_qa.py pads them) and zero when a batch is cut exactly at its longest feature.
    pub fn padded_length(features: &Features, s: usize, e: usize) -> usize {
        let longest = (s..e).map(|i| features.length(i)).max().unwrap_or(1).max(1);
        (longest + 1).min(features.max_length)
    }

    /// Rows `s..e` of a `[count, max_length]` input, cut to `len` columns.
    pub fn gather_rows(features: &Features, src: &[i64], s: usize, e: usize, len: usize) -> Vec<i64> {
        let m = features.max_length;
        (s..e).flat_map(|i| src[i * m..i * m + len].iter().copied()).collect()
    }

    /// Runs every feature, `batch_size` at a time, each batch padded only to its longest feature,
    /// batches spread over `threads` threads. `progress` is called with the number of features done.
    pub fn run_features(&self, features: &Features, batch_size: usize, threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<Logits, RuntimeError> {
        let m = features.max_length;
        let batch_size = batch_size.max(1);
        let batches: Vec<(usize, usize)> = (0..features.count).step_by(batch_size).map(|s| (s, (s + batch_size).min(features.count))).collect();
        let mut start = vec![0f32; features.count * m];
        let mut end = vec![0f32; features.count * m];
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        let first_error = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| loop {
                    let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(s, e)) = batches.get(b) else { break };
                    let len = Self::padded_length(features, s, e);
                    let gather = |src: &[i64]| Self::gather_rows(features, src, s, e, len);
                    match self.run_batch(e - s, len, gather(&features.input_ids), gather(&features.attention_mask), gather(&features.token_type_ids)) {
                        Ok(out) => {
                            results.lock().unwrap_or_else(|p| p.into_inner()).push((s, e, len, out));
                            progress(e - s);
                        }
                        Err(err) => {
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(err);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(err) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(err);
        }
        for (s, e, len, (bs, be)) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            for (row, i) in (s..e).enumerate() {
                start[i * m..i * m + len].copy_from_slice(&bs[row * len..(row + 1) * len]);
                end[i * m..i * m + len].copy_from_slice(&be[row * len..(row + 1) * len]);
            }
        }
        Ok(Logits { start, end })
    }
}
