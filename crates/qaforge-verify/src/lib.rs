//! Verification for qaforge: makes golden bundles (reference logits from the checkpoint, through
//! qaforge-reference), runs ONNX artifacts (with tract, or ONNX Runtime behind the `ort` feature)
//! over a bundle's features, compares their logits and predictions with the reference, and merges
//! the reports of sharded runs.

pub mod bundle;
pub mod device_logits;
pub mod golden;
pub mod make_bundle;
pub mod report;
pub mod stats;

pub use bundle::{Bundle, Manifest, BUNDLE_FORMAT};
pub use device_logits::read_logits;
pub use golden::{GoldenFeatures, GoldenLogits};
pub use make_bundle::{make_bundle, BundleOptions};
pub use qaforge_runtime::{check_inputs, FedInput, InputRole, check_token_ids, is_ort_format, load_engine, ort_format_view, Engine, EngineChoice, Logits, RuntimeError, TractSession};
pub use stats::LogitStats;
pub use qaforge_runtime::integer_kernels::{CpuFeatures, Exactness};
pub use report::{compute_logits, default_batch_size, choose_engine, engine_exactness, judge, merge, verify, Artifact, ChosenEngine, ComputedLogits, Report, RunOptions, Shard, ShardPart, ToleranceOverrides, Tolerances, MARKDOWN_HEADER};
pub use stats::FeatureAgreement;

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
