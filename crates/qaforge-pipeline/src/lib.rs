//! qaforge's workflows as library calls. Each command of the binary is a request type and a
//! function returning an outcome type; the binary parses arguments into requests and prints
//! outcomes, and tests call the same functions where they need the behaviour, not the text.
//!
//! Data flows one way through the stage crates: checkpoint ([`convert`]) → graph → quantized
//! graph ([`quantize`]) → package ([`package`], [`web`] for browsers) or answers ([`answer`]); verification lives in
//! qaforge-verify, whose two steps the binary calls directly.

pub mod answer;
pub mod convert;
pub mod package;
pub mod quantize;
pub mod reports;
pub mod web;

use std::path::{Path, PathBuf};

pub use answer::{answer, AnswerRequest, Answered};
pub use convert::{convert, ConvertOutcome, ConvertRequest};
pub use package::{package, PackageOutcome, PackageRequest};
pub use web::{package_web, WebPackageOutcome, WebPackageRequest};
pub use quantize::{quantize, write_quantize_report, QuantizeOutcome, QuantizeRequest, Search};
pub use qaforge_verify::EngineChoice;

/// Errors of the workflows: a stage's own error, or a request the product refuses (with why).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request asks for something qaforge does not do, or lacks what it needs.
    #[error("{0}")]
    Request(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] qaforge_checkpoint::CheckpointError),
    /// Emitting, decoding or writing ONNX failed.
    #[error(transparent)]
    Onnx(#[from] qaforge_onnx::EmitError),
    /// The ONNX Runtime flavour or package failed.
    #[error(transparent)]
    OnnxRuntime(#[from] qaforge_onnxruntime::FuseError),
    /// Quantization failed.
    #[error(transparent)]
    Quantize(#[from] qaforge_quantize::QuantizeError),
    /// SQuAD data or the tokenizer failed.
    #[error(transparent)]
    Squad(#[from] qaforge_squad::SquadError),
    /// Verification (bundles, engines) failed.
    #[error(transparent)]
    Verify(#[from] qaforge_verify::VerifyError),
    /// An engine failed.
    #[error(transparent)]
    Runtime(#[from] qaforge_verify::RuntimeError),
    /// Writing the web package failed.
    #[error(transparent)]
    Web(#[from] qaforge_web::WebError),
}

/// Whether this build can load ONNX Runtime (the `ort` feature).
pub const WITH_ONNXRUNTIME: bool = cfg!(feature = "ort");

fn without_onnxruntime() -> PipelineError {
    PipelineError::Request("this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`".into())
}

/// ONNX Runtime's library `library` (the `--ort-library` option or `$ORT_DYLIB_PATH`), checked
/// to be a file, in a build that can load it.
pub fn onnxruntime_library(library: Option<&Path>) -> Result<PathBuf, PipelineError> {
    if !WITH_ONNXRUNTIME {
        return Err(without_onnxruntime());
    }
    let library = library.ok_or_else(|| PipelineError::Request("ONNX Runtime needs libonnxruntime: pass --ort-library or set ORT_DYLIB_PATH".into()))?;
    if !library.is_file() {
        return Err(PipelineError::Request(format!("{}: no such file (libonnxruntime for --engine ort)", library.display())));
    }
    Ok(library.to_owned())
}

/// ONNX Runtime as the engine, from `library` (see [`onnxruntime_library`]).
pub fn onnxruntime(library: Option<&Path>) -> Result<EngineChoice, PipelineError> {
    Ok(EngineChoice::OnnxRuntime { library: onnxruntime_library(library)? })
}

/// The engine an artifact is for: portable ONNX (any engine) or ONNX Runtime's flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavour {
    /// Standard ONNX, any engine.
    Portable,
    /// Exact folds and com.microsoft fused ops; checked to load in ONNX Runtime from this
    /// library before it is written.
    OnnxRuntime(PathBuf),
}

impl Flavour {
    /// The flavour for `--for onnxruntime` (with its library) or portable.
    pub fn new(onnxruntime_flavour: bool, library: Option<&Path>) -> Result<Self, PipelineError> {
        if !onnxruntime_flavour {
            return Ok(Flavour::Portable);
        }
        Ok(Flavour::OnnxRuntime(onnxruntime_library(library)?))
    }

    fn library(&self) -> Option<&Path> {
        match self {
            Flavour::Portable => None,
            Flavour::OnnxRuntime(library) => Some(library),
        }
    }
}

/// Checks that ONNX Runtime from `library` loads the artifact `bytes` about to be written to
/// `output`: an artifact that does not load is never written.
fn check_loads_in_onnxruntime(library: &Path, bytes: &[u8], output: &Path) -> Result<(), PipelineError> {
    #[cfg(feature = "ort")]
    {
        qaforge_onnxruntime::package::check_loads(library, bytes, output)
            .map_err(|e| PipelineError::Request(format!("the artifact was not written: {e}")))
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (bytes, output);
        Err(PipelineError::Request(format!("{}: this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`", library.display())))
    }
}

/// What the ONNX Runtime flavour's passes did and the fused ops they left (com.microsoft ones and
/// ONNX Attention), in words.
fn describe_flavour(summary: &qaforge_onnxruntime::FuseSummary, model: &qaforge_onnx::pb::ModelProto) -> String {
    let fused: Vec<String> = qaforge_onnxruntime::op_counts(model)
        .into_iter()
        .filter(|(op, _)| op.starts_with(qaforge_onnxruntime::MS_DOMAIN) || op == "Attention")
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    format!("{} ({})", summary.describe(), if fused.is_empty() { "no fused ops".to_string() } else { fused.join(", ") })
}

/// `bytes` in MiB or KiB with one decimal, as every summary and report prints a size.
pub fn human_bytes(bytes: u64) -> String {
    qaforge_verify::report::human_bytes(bytes)
}
