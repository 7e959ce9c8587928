//! qaforge's workflows as library calls. Each command of the binary is a request type and a
//! function returning an outcome type; the binary parses arguments into requests and prints
//! outcomes, and tests call the same functions where they need the behaviour, not the text.
//!
//! Data flows one way through the stage crates: checkpoint ([`convert`](mod@convert)) → graph → quantized
//! graph ([`quantize`](mod@quantize)) → verification ([`golden`](mod@golden), [`verify`](mod@verify)) → package ([`package`](mod@package), [`web`]
//! for browsers) or answers ([`answer`](mod@answer)). Every product rule (which options go together, which
//! engine runs what) and every summary text lives here; outcomes print themselves (`Display`).

pub mod answer;
pub mod artifact;
pub mod batch;
pub mod convert;
pub mod golden;
pub mod package;
pub mod quantize;
pub mod reports;
pub mod verify;
pub mod web;

use std::path::{Path, PathBuf};

use qaforge_provenance::Named;

pub use answer::{answer, AnswerRequest, Answered};
pub use artifact::LoadedArtifact;
pub use convert::{convert, ConvertOutcome, ConvertRequest};
pub use golden::{golden, GoldenOutcome, GoldenRequest};
pub use package::{package, PackageFormat, PackageOutcome, PackageRequest, Packaged};
pub use qaforge_runtime::{EngineChoice, EngineRequest};
pub use quantize::{
    calibration_engines, quantize, write_quantize_report, CalibrationEngine, QuantizeOutcome, QuantizeRequest, Search,
};
pub use verify::{verify, VerifyRequest};
pub use web::{package_web, WebPackageOutcome, WebPackageRequest};

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
    Runtime(#[from] qaforge_runtime::RuntimeError),
    /// Writing the web package failed.
    #[error(transparent)]
    Web(#[from] qaforge_web::WebError),
}

#[cfg(not(feature = "ort"))]
pub(crate) fn without_onnxruntime() -> PipelineError {
    PipelineError::Request(
        "this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`".into(),
    )
}

/// ONNX Runtime's library `library` (the `--ort-library` option or `$ORT_DYLIB_PATH`), checked
/// to be a file, in a build that can load it.
pub fn onnxruntime_library(library: Option<&Path>) -> Result<PathBuf, PipelineError> {
    qaforge_runtime::choice::onnxruntime_library(library).map_err(PipelineError::Request)
}

/// The engine `engine` names (`--engine`), with ONNX Runtime's `library`, and whether `--engine
/// auto` may move an artifact to tract where ONNX Runtime is not exact on this CPU.
pub fn engine_for(engine: EngineRequest, library: Option<&Path>) -> Result<(EngineChoice, bool), PipelineError> {
    engine.resolve(library).map_err(PipelineError::Request)
}

/// `--for`: the engine an artifact is for, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlavourName {
    /// Standard ONNX, any engine.
    Portable,
    /// ONNX Runtime's flavour (exact folds, fused ops).
    Onnxruntime,
}

impl FlavourName {
    /// Every flavour, in the order help texts list them.
    pub const ALL: [FlavourName; 2] = [FlavourName::Portable, FlavourName::Onnxruntime];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FlavourName::Portable => "portable",
            FlavourName::Onnxruntime => "onnxruntime",
        }
    }
}

impl Named for FlavourName {
    const ALL: &'static [Self] = &FlavourName::ALL;

    fn as_str(self) -> &'static str {
        FlavourName::as_str(self)
    }
}

impl std::str::FromStr for FlavourName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        qaforge_provenance::parse_named(text, "flavour")
    }
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
    /// The flavour `--for` names, with ONNX Runtime's library for the onnxruntime flavour.
    pub fn new(name: FlavourName, library: Option<&Path>) -> Result<Self, PipelineError> {
        match name {
            FlavourName::Portable => Ok(Flavour::Portable),
            FlavourName::Onnxruntime => Ok(Flavour::OnnxRuntime(onnxruntime_library(library)?)),
        }
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
        Err(PipelineError::Request(format!(
            "{}: this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`",
            library.display()
        )))
    }
}

/// What the ONNX Runtime flavour's passes did and the fused ops they left (com.microsoft ones and
/// ONNX Attention), in words.
fn describe_flavour(summary: &qaforge_onnxruntime::FuseSummary, model: &qaforge_onnx::pb::ModelProto) -> String {
    let fused: Vec<String> = qaforge_onnxruntime::op_counts(model)
        .into_iter()
        .filter(|(op, _)| op.starts_with(qaforge_onnx::edit::MS_DOMAIN) || op == "Attention")
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    format!("{} ({})", summary.describe(), if fused.is_empty() { "no fused ops".to_string() } else { fused.join(", ") })
}

/// `bytes` in MiB or KiB with one decimal, as every summary and report prints a size.
pub fn human_bytes(bytes: u64) -> String {
    qaforge_verify::human_bytes(bytes)
}
