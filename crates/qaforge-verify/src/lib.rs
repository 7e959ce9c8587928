//! Verification for qaforge: makes golden bundles (reference logits from the checkpoint, through
//! qaforge-reference), runs ONNX artifacts (with tract, or ONNX Runtime behind the `ort` feature)
//! over a bundle's features, compares their logits and predictions with the reference, and merges
//! the reports of sharded runs. One module per job: [`tolerances`], [`artifact`], [`compute`]
//! (and [`device_logits`], its second source), [`judge`](mod@judge), [`shard`] (and merge), [`report`].

pub mod artifact;
pub mod bundle;
pub mod compute;
pub mod device_logits;
pub mod golden;
pub mod judge;
pub mod make_bundle;
pub mod report;
pub mod shard;
pub mod stats;
pub mod tolerances;

use std::path::Path;
use std::time::Instant;

pub use artifact::Artifact;
pub use bundle::{Bundle, Manifest, BUNDLE_FORMAT};
pub use compute::{compute_logits, default_batch_size, ComputedLogits, RunOptions};
pub use device_logits::read_logits;
pub use golden::{GoldenFeatures, GoldenLogits};
pub use judge::judge;
pub use make_bundle::{make_bundle, BundleOptions};
pub use report::{human_bytes, Report, RunHeader, Shard, ShardPart, SquadScores, Verdict, MARKDOWN_HEADER};
pub use shard::merge;
pub use stats::{FeatureAgreement, LogitStats};
pub use tolerances::{ToleranceOverrides, Tolerances};

/// Verifies `artifact` against `bundle` in both steps: [`compute_logits`] in `run.engine`, then
/// [`judge`](fn@judge) with its precision's default tolerances and `overrides` in place. `progress` gets
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

/// Errors of verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A golden file is malformed or inconsistent.
    #[error("{path}: invalid golden data: {message}")]
    Golden {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A golden bundle is malformed, incomplete, or does not match its manifest.
    #[error("{path}: invalid golden bundle: {message}")]
    Bundle {
        /// The bundle file (or directory).
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The artifact and the bundle belong to different models or tokenizers, or partial reports
    /// to different runs.
    #[error("{0}")]
    Mismatch(String),
    /// The checkpoint could not be read (making a bundle).
    #[error(transparent)]
    Checkpoint(#[from] qaforge_checkpoint::CheckpointError),
    /// The reference forward pass failed (making a bundle).
    #[error(transparent)]
    Reference(#[from] qaforge_reference::ReferenceError),
    /// SQuAD data, features or tokenizer files are malformed.
    #[error(transparent)]
    Squad(#[from] qaforge_squad::SquadError),
    /// The artifact is not a readable ONNX model.
    #[error("{0}")]
    Artifact(String),
    /// A logits file computed elsewhere (`verify --logits`) does not fit the bundle or artifact.
    #[error("{path}: refused: {message}")]
    Logits {
        /// The logits file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The engine could not load or run the artifact.
    #[error(transparent)]
    Runtime(#[from] qaforge_runtime::RuntimeError),
}
