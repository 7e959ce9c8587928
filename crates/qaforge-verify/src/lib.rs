//! Verification for qaforge: runs ONNX artifacts (with tract, or ONNX Runtime behind the `ort`
//! feature) over golden features and compares
//! their logits with the PyTorch reference.

pub mod golden;
pub mod report;
pub mod stats;

pub use golden::{GoldenFeatures, GoldenLogits};
pub use qaforge_runtime::{check_token_ids, load_engine, Engine, EngineChoice, Logits, RuntimeError, TractSession};
pub use stats::LogitStats;
pub use qaforge_runtime::integer_kernels::{CpuFeatures, Exactness};
pub use report::{engine_exactness, verify, GoldenPaths, RunOptions, Report, ToleranceOverrides, Tolerances, MARKDOWN_HEADER};

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
    /// SQuAD data, features or tokenizer files are malformed.
    #[error(transparent)]
    Squad(#[from] qaforge_squad::SquadError),
    /// The artifact is not a readable ONNX model.
    #[error("{0}")]
    Artifact(String),
    /// The engine could not load or run the artifact.
    #[error(transparent)]
    Runtime(#[from] qaforge_runtime::RuntimeError),
}
