//! `qaforge verify`: a golden bundle opened, the artifact's logits computed by an engine (or read
//! from a device's logits file, `--logits`), judged, and the report written.

use std::path::PathBuf;

use qaforge_verify::{Report, RunOptions, Shard, ToleranceOverrides};

use crate::{EngineChoice, PipelineError};

/// One verification.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The artifact (.onnx, or .ort with ONNX Runtime).
    pub artifact: PathBuf,
    /// The golden bundle (or a shipped fixture's folder).
    pub golden: PathBuf,
    /// The slice of the questions to verify.
    pub shard: Shard,
    /// Tolerances given instead of the precision's defaults.
    pub overrides: ToleranceOverrides,
    /// The engine that computes the logits.
    pub engine: EngineChoice,
    /// `--engine auto`: tract instead where `engine` would not be exact on this CPU.
    pub exact_fallback: bool,
    /// Features per batch (default by precision: [`qaforge_verify::default_batch_size`]).
    pub batch_size: Option<usize>,
    /// Cores to use.
    pub cores: usize,
    /// Compare with a bundle of another checkpoint or tokenizer than the artifact's provenance names.
    pub allow_other_checkpoint: bool,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// Logits computed elsewhere (`--logits`), judged instead of running the artifact, with the
    /// runtime and device that computed them when the file does not say.
    pub logits: Option<(PathBuf, Option<String>)>,
    /// Where to write the JSON report (and the Markdown one beside it).
    pub report: Option<PathBuf>,
}

/// Verifies `request.artifact` and writes the report where asked. `progress` gets (features just
/// done, total) while an engine computes. The report's [`qaforge_verify::Verdict`] is the
/// outcome; only a request that could not be verified at all is an error.
pub fn verify(request: &VerifyRequest, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Report, PipelineError> {
    let bundle = qaforge_verify::Bundle::open(&request.golden)?;
    let report = match &request.logits {
        // Verify's second step only, on logits a device computed.
        Some((logits, runtime)) => {
            let artifact = qaforge_verify::Artifact::open(
                &request.artifact,
                &bundle,
                &request.engine,
                request.allow_other_checkpoint,
            )?;
            let computed = qaforge_verify::read_logits(logits, &bundle, &artifact, request.shard, runtime.as_deref())?;
            qaforge_verify::judge(&artifact, &bundle, request.shard, computed, request.overrides)?
        }
        None => {
            let run = RunOptions {
                engine: request.engine.clone(),
                batch_size: request.batch_size,
                cores: request.cores,
                shard: request.shard,
                allow_other_checkpoint: request.allow_other_checkpoint,
                input_names: request.input_names.clone(),
                exact_fallback: request.exact_fallback,
            };
            qaforge_verify::verify(&request.artifact, &bundle, request.overrides, &run, progress)?
        }
    };
    if let Some(path) = &request.report {
        crate::reports::write_report(&report, path)?;
    }
    Ok(report)
}
