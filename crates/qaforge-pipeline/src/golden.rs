//! `qaforge golden`: a golden bundle made from a checkpoint (reference logits computed by
//! qaforge's own forward pass), with what it holds and how long it took.

use std::path::PathBuf;
use std::time::Instant;

use qaforge_verify::{BundleOptions, Manifest};

use crate::PipelineError;

/// A bundle to make.
#[derive(Debug, Clone)]
pub struct GoldenRequest {
    /// The Hugging Face model directory (config.json, weights, tokenizer).
    pub model_dir: PathBuf,
    /// SQuAD v2-format JSON to build the features from.
    pub data: PathBuf,
    /// The bundle directory to write (replaced if it is a bundle).
    pub output: PathBuf,
    /// How features are cut and batched, and which questions are kept.
    pub options: BundleOptions,
}

/// What `golden` wrote.
#[derive(Debug, Clone)]
pub struct GoldenOutcome {
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// Where it was written from and to.
    pub model_dir: PathBuf,
    /// The bundle directory.
    pub output: PathBuf,
    /// Wall time.
    pub seconds: f64,
}

/// Makes the bundle. `progress` gets (features just done, total).
pub fn golden(
    request: &GoldenRequest,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<GoldenOutcome, PipelineError> {
    let started = Instant::now();
    let manifest =
        qaforge_verify::make_bundle(&request.model_dir, &request.data, &request.output, &request.options, progress)?;
    Ok(GoldenOutcome {
        manifest,
        model_dir: request.model_dir.clone(),
        output: request.output.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for GoldenOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        writeln!(f, "golden bundle {} -> {}", self.model_dir.display(), self.output.display())?;
        writeln!(f, "  model       {} (checkpoint sha256 {})", m.model.architecture, m.model.source_sha256)?;
        writeln!(
            f,
            "  data        {}: {} questions{}",
            m.data.name,
            m.data.questions,
            m.data.limit.map_or(String::new(), |l| format!(" (first {l})"))
        )?;
        writeln!(
            f,
            "  features    {} (max_length {}, doc_stride {})",
            m.features, m.settings.max_length, m.settings.doc_stride
        )?;
        writeln!(f, "  reference   {}", m.reference)?;
        writeln!(
            f,
            "  time        {:.2} s ({:.1} features/s)",
            self.seconds,
            m.features as f64 / self.seconds.max(1e-9)
        )?;
        write!(f, "reference EM {:.2}, F1 {:.2} on {} questions", m.scores.exact, m.scores.f1, m.data.questions)
    }
}
