//! Typed errors of checkpoint import. Every variant names the file it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading a model directory.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The model directory holds no weights file qaforge can read.
    #[error("{dir}: no weights found (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin, model.pt, pytorch_model.pt)")]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// config.json is not valid JSON or has a field of the wrong type.
    #[error("{path}: invalid config: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The config describes a model qaforge does not convert.
    #[error("{path}: unsupported model: {message}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What is unsupported, and what is.
        message: String,
    },
    /// A safetensors file is malformed (header, offsets, dtypes).
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A torch checkpoint is malformed, legacy, or references code it must not.
    #[error("{path}: invalid torch checkpoint: {message}")]
    Torch {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// The weights file (or directory for sharded checkpoints).
        path: PathBuf,
        /// The parameter name, as transformers writes it.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The parameter name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype qaforge cannot turn into float32 weights.
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected a floating-point dtype (F32, F16, BF16, F64)")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The parameter name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A weight holds NaN or infinity.
    #[error("{path}: tensor `{name}` holds {count} non-finite value(s) (NaN or Inf), first at flat index {first}")]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// The parameter name.
        name: String,
        /// How many values are non-finite.
        count: usize,
        /// The first offending index.
        first: usize,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result of checkpoint import.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
