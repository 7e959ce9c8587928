//! The command line: one module per command, each its clap arguments (parsed straight into the
//! library's types) and a `run` that calls qaforge-pipeline and prints the outcome. The options
//! several commands share are here.

pub mod answer;
pub mod convert;
pub mod eval;
pub mod golden;
pub mod package;
pub mod quantize;
pub mod serve;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use qaforge_pipeline::{EngineChoice, EngineRequest, Flavour, FlavourName};
use qaforge_provenance::Named;

/// A value parser for a library enum: clap lists the names the type owns ([`Named::ALL`]) as its
/// possible values and parses them back through the same names.
pub fn named<T: Named + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    named_of(T::ALL)
}

/// [`named`] restricted to `values` (quantize's precisions: every one but fp32).
pub fn named_of<T: Named + Clone + Send + Sync>(values: &'static [T]) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(values.iter().map(|v| v.as_str())).try_map(move |name| {
        values.iter().copied().find(|v| v.as_str() == name).ok_or_else(|| format!("unknown value `{name}`"))
    })
}

/// `--ort-library`, shared by every command that can load ONNX Runtime.
#[derive(Args)]
pub struct OrtLibraryArg {
    /// libonnxruntime, for `--engine ort`, `--calibration-engine ort`, `--for onnxruntime` and
    /// `package` (default: $ORT_DYLIB_PATH), e.g. the one inside the onnxruntime PyPI wheel
    /// (site-packages/onnxruntime/capi/libonnxruntime.so.*).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
}

/// `--input-names`, shared by every command that feeds a graph.
#[derive(Args)]
pub struct InputNamesArg {
    /// The graph's inputs for token ids, attention mask and token types (the last for models
    /// that take them), comma-separated, when its input names are not the usual ones.
    #[arg(long, value_delimiter = ',')]
    pub input_names: Option<Vec<String>>,
}

/// `--for`, shared by convert and quantize.
#[derive(Args)]
pub struct FlavourArgs {
    /// The engine the artifact is for: portable (standard ONNX, any engine) or onnxruntime
    /// (exact folds before quantizing, the fused ops that ONNX Runtime runs fastest: com.microsoft
    /// ones, and ONNX Attention at opset 23; ONNX Runtime 1.23 or newer only, and loaded there
    /// before it is written; quantize: int8 modes only).
    #[arg(long = "for", value_parser = named::<FlavourName>(), default_value = FlavourName::Portable.as_str())]
    pub flavour: FlavourName,
}

impl FlavourArgs {
    /// The flavour, with ONNX Runtime's library where it needs one.
    pub fn resolve(&self, onnxruntime: &OrtLibraryArg) -> anyhow::Result<Flavour> {
        Ok(Flavour::new(self.flavour, onnxruntime.ort_library.as_deref())?)
    }
}

/// `--engine` and its library, shared by the commands that run an artifact.
#[derive(Args)]
pub struct EngineArgs {
    /// The engine that runs the artifact: tract (built in), ort (ONNX Runtime, the runtime
    /// phones use; needs a build with `--features ort` and libonnxruntime), or auto: ONNX Runtime
    /// where its library is given (--ort-library or $ORT_DYLIB_PATH) and computes the artifact
    /// exactly on this CPU, tract otherwise (the report's engine says which, and why).
    #[arg(long, value_parser = named::<EngineRequest>(), default_value = EngineRequest::Auto.as_str())]
    pub engine: EngineRequest,
    #[command(flatten)]
    pub onnxruntime: OrtLibraryArg,
}

impl EngineArgs {
    /// The engine to start from, and whether `--engine auto` may move an artifact to tract.
    pub fn resolve(&self) -> anyhow::Result<(EngineChoice, bool)> {
        Ok(qaforge_pipeline::engine_for(self.engine, self.onnxruntime.ort_library.as_deref())?)
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar for the library's (done, total) callbacks, drawn only on a terminal.
pub fn progress_bar() -> (indicatif::ProgressBar, impl Fn(usize, usize) + Sync) {
    let bar = indicatif::ProgressBar::new(0);
    let handle = bar.clone();
    (bar, move |done: usize, total: usize| {
        handle.set_length(total as u64);
        handle.inc(done as u64);
    })
}

/// The exit code of a verification outcome: PASS and PARTIAL print their conclusion and exit 0;
/// FAIL (1) and NOT VERIFIED (3) print it to stderr.
pub fn verdict_exit(report: &qaforge_verify::Report) -> ExitCode {
    let code = report.verdict.exit_code();
    if code == 0 {
        println!("{}", report.conclusion());
    } else {
        eprintln!("qaforge: {}: {}", report.verdict, report.conclusion());
    }
    ExitCode::from(code)
}
