//! Reference start/end logits computed from a checkpoint in Rust: a second implementation of each
//! architecture's forward pass, written from transformers' modeling code with candle-core. It
//! shares nothing with the ONNX emitter but the weight loader (qaforge-checkpoint), so the two
//! check each other: golden bundles of users' checkpoints come from here, and on the shipped
//! fixtures both are checked against PyTorch.
//!
//! The model is an [`Engine`], so it runs features exactly as artifacts are run: batched, each
//! batch padded to its longest feature.

mod bert;
mod in_place;
mod mobilebert;
mod ops;

use std::path::{Path, PathBuf};

use qaforge_checkpoint::{Checkpoint, CheckpointError, ModelConfig};
use qaforge_runtime::{Engine, RuntimeError, TensorOutputs};

/// Errors of the reference implementation.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A tensor operation failed (shapes the config promised and the weights do not keep).
    #[error("reference forward pass: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model asks for something this implementation does not compute.
    #[error("the reference does not compute {0}")]
    Unsupported(String),
    /// An input the model cannot take (a token id past the vocabulary).
    #[error("{0}")]
    Input(String),
}

enum Architecture {
    MobileBert(mobilebert::MobileBert),
    Bert(bert::Bert),
}

/// A checkpoint's QA model, loaded for the reference forward pass.
pub struct ReferenceModel {
    architecture: Architecture,
    dir: PathBuf,
    name: &'static str,
}

impl ReferenceModel {
    /// Loads every parameter of `checkpoint` as f32 (f16/bf16 checkpoints are widened, as
    /// PyTorch's reference runs them after `.float()`).
    ///
    /// Loading also keeps every matrix product on the thread that asks for it, process-wide:
    /// features run one per core ([`Engine::preferred_threads`]), and candle-core otherwise hands
    /// each product larger than gemm's threading threshold to rayon's pool as well, where the
    /// products of both feature threads queue behind each other (full-size MobileBERT, first 40
    /// SQuAD v2 dev questions on 2 cores: 4.4 features/s with this, 2.9 without; the same logits,
    /// since threads split a product's rows and columns, never its sums). Nothing else in qaforge
    /// calls gemm.
    pub fn load(checkpoint: &Checkpoint) -> Result<Self, ReferenceError> {
        gemm::set_threading_threshold(usize::MAX);
        let w = &checkpoint.weights;
        let architecture = match &checkpoint.config {
            ModelConfig::MobileBert(c) => Architecture::MobileBert(mobilebert::MobileBert::load(w, c)?),
            ModelConfig::Bert(c) => Architecture::Bert(bert::Bert::load(w, c)?),
        };
        Ok(ReferenceModel { architecture, dir: checkpoint.dir.clone(), name: checkpoint.config.architecture() })
    }

    /// Start and end logits of one batch, `[batch, len]` row-major inputs.
    pub fn forward(
        &self,
        batch: usize,
        len: usize,
        ids: &[i64],
        mask: &[i64],
        types: &[i64],
    ) -> Result<(Vec<f32>, Vec<f32>), ReferenceError> {
        let n = batch * len;
        if batch == 0 || len == 0 || ids.len() != n || mask.len() != n || types.len() != n {
            return Err(ReferenceError::Input(format!(
                "a batch of {batch} × {len} needs {n} ids, mask and type values"
            )));
        }
        match &self.architecture {
            Architecture::MobileBert(m) => m.forward(batch, len, ids, mask, types),
            Architecture::Bert(m) => m.forward(batch, len, ids, mask, types),
        }
    }
}

impl Engine for ReferenceModel {
    fn label(&self) -> &Path {
        &self.dir
    }

    fn description(&self) -> String {
        format!("qaforge-reference {} ({}, candle-core {})", env!("CARGO_PKG_VERSION"), self.name, CANDLE_VERSION)
    }

    /// Batches run in parallel, one per core, each product on its own thread (see
    /// [`ReferenceModel::load`]): candle parallelises only its larger matrix products (measured on
    /// 2 cores: 1.0 core busy with one batch at a time).
    fn preferred_threads(&self, cores: usize) -> usize {
        cores
    }

    fn run_outputs(
        &self,
        batch: usize,
        len: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<TensorOutputs, RuntimeError> {
        let (start, end) = self
            .forward(batch, len, &ids, &mask, &types)
            .map_err(|e| RuntimeError { path: self.dir.clone(), message: e.to_string() })?;
        Ok(vec![(vec![batch, len], start), (vec![batch, len], end)])
    }
}

/// The candle-core release this crate is built against, read from Cargo.lock by build.rs.
pub const CANDLE_VERSION: &str = env!("QAFORGE_CANDLE_VERSION");
