//! ONNX graph emission for qaforge.
//!
//! ONNX messages are tract-onnx's prost types (`tract_onnx::pb`, re-exported as [`pb`]): the same
//! types the verifying runtime parses, prost-based, with no code generation step in our build.
//! (The onnx-protobuf crate is rust-protobuf pinned to an old release, and generating our own
//! types with prost-build + protox would add a build step for the same messages.)
//!
//! [`builder`] is a small typed graph builder; [`mobilebert`] emits the QA forward pass; [`write_atomically`]
//! writes artifacts so that an error or a kill never leaves a partial file.

pub mod builder;
pub mod mobilebert;

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

pub use tract_onnx::pb;
pub use mobilebert::{emit, EmitOptions, Emitted, ATTENTION_MASK_VALUE, DEFAULT_OPSET, SUPPORTED_OPSETS};

/// Errors of graph emission and artifact I/O.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The checkpoint could not be read or does not fit its config.
    #[error(transparent)]
    Checkpoint(#[from] qaforge_checkpoint::CheckpointError),
    /// The requested opset is outside what the emitter produces.
    #[error("opset {0} is not supported; qaforge emits opsets {start} to {end}", start = SUPPORTED_OPSETS.start(), end = SUPPORTED_OPSETS.end())]
    Opset(i64),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid ONNX model.
    #[error("{path}: not a valid ONNX model: {message}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Serialises a model. prost encodes fields in tag order and repeated fields in order, so the
/// same model gives the same bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads an ONNX model file.
pub fn read_model(path: &Path) -> Result<pb::ModelProto, EmitError> {
    let bytes = std::fs::read(path).map_err(|source| EmitError::Io { path: path.to_owned(), source })?;
    decode_model(&bytes, path)
}

/// Decodes the bytes of an ONNX model file; `path` names it in errors.
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<pb::ModelProto, EmitError> {
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| EmitError::InvalidModel { path: path.to_owned(), message: e.to_string() })?;
    if model.graph.is_none() {
        return Err(EmitError::InvalidModel { path: path.to_owned(), message: "no graph".into() });
    }
    Ok(model)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, flushed to disk and
/// then renamed over the target: readers see the old file or the new one, never a partial one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EmitError> {
    let io = |source| EmitError::Io { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new().prefix(".qaforge-").suffix(".partial").tempfile_in(dir).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 over the checkpoint's config.json and weight files, in that order: the provenance
/// recorded in every artifact.
pub fn source_sha256(checkpoint: &qaforge_checkpoint::Checkpoint) -> Result<String, EmitError> {
    let mut hasher = Sha256::new();
    let config = checkpoint.dir.join("config.json");
    for path in std::iter::once(config.as_path()).chain(checkpoint.weights.files()) {
        let mut file = std::fs::File::open(path).map_err(|source| EmitError::Io { path: path.to_owned(), source })?;
        std::io::copy(&mut file, &mut hasher).map_err(|source| EmitError::Io { path: path.to_owned(), source })?;
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Emits the QA graph of `checkpoint` with the provenance every fp32 artifact records in its
/// metadata_props (stage, precision, source sha256 and format). The source files are hashed on a
/// second thread while the graph is emitted (hashing ~100 MB is a sixth of a full-size convert).
pub fn convert(checkpoint: &qaforge_checkpoint::Checkpoint, options: EmitOptions) -> Result<Emitted, EmitError> {
    let (hash, emitted) = std::thread::scope(|scope| {
        let hash = scope.spawn(|| source_sha256(checkpoint));
        let emitted = emit(checkpoint, options, Vec::new());
        (hash.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), emitted)
    });
    let mut emitted = emitted?;
    let metadata = [
        ("qaforge.stage", "convert".to_string()),
        ("qaforge.precision", "fp32".to_string()),
        ("qaforge.source_sha256", hash?),
        ("qaforge.source_format", checkpoint.format.to_string()),
    ];
    emitted.model.metadata_props =
        metadata.into_iter().map(|(key, value)| pb::StringStringEntryProto { key: key.to_string(), value }).collect();
    Ok(emitted)
}
