//! Running ONNX artifacts with tract, batched with dynamic padding over all cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::golden::GoldenFeatures;
use crate::VerifyError;

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
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let runtime = |e: TractError| VerifyError::Runtime { path: path.to_owned(), message: format!("{e:#}") };
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(runtime)?;
        Ok(TractSession { path: path.to_owned(), plan })
    }

    /// Runs one batch given as `[batch, len]` row-major inputs.
    pub fn run_batch(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<(Vec<f32>, Vec<f32>), VerifyError> {
        let runtime = |e: TractError| VerifyError::Runtime { path: self.path.clone(), message: format!("{e:#}") };
        let tensor = |v: Vec<i64>| Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue());
        let inputs = tvec![tensor(ids).map_err(runtime)?, tensor(mask).map_err(runtime)?, tensor(types).map_err(runtime)?];
        let outputs = self.plan.run(inputs).map_err(runtime)?;
        if outputs.len() != 2 {
            return Err(VerifyError::Runtime { path: self.path.clone(), message: format!("expected 2 outputs, got {}", outputs.len()) });
        }
        let take = |t: &TValue| -> Result<Vec<f32>, VerifyError> {
            let t = t.cast_to::<f32>().map_err(runtime)?;
            if t.shape() != [batch, len] {
                return Err(VerifyError::Runtime { path: self.path.clone(), message: format!("output shape {:?}, expected [{batch}, {len}]", t.shape()) });
            }
            Ok(t.to_plain_array_view::<f32>().map_err(runtime)?.iter().copied().collect())
        };
        Ok((take(&outputs[0])?, take(&outputs[1])?))
    }

    /// Runs every feature, `batch_size` at a time, each batch padded only to its longest feature,
    /// batches spread over `threads` threads. `progress` is called with the number of features done.
    pub fn run_features(&self, features: &GoldenFeatures, batch_size: usize, threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<Logits, VerifyError> {
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
                    // One padding token more than the longest feature: MobileBERT's trigram
                    // embedding lets the last real token ([SEP]) see the embedding of the token
                    // after it, which is [PAD] in features padded to max_length (as run_qa.py
                    // pads them) and zero when a batch is cut exactly at its longest feature.
                    let longest = (s..e).map(|i| features.length(i)).max().unwrap_or(1).max(1);
                    let len = (longest + 1).min(m);
                    let gather = |src: &[i64]| -> Vec<i64> { (s..e).flat_map(|i| src[i * m..i * m + len].iter().copied()).collect() };
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
