//! `qaforge convert`: a Hugging Face model directory → an ONNX artifact (portable, or ONNX
//! Runtime's flavour checked to load there), written atomically.

use std::path::PathBuf;
use std::time::Instant;

use crate::{check_loads_in_onnxruntime, describe_flavour, Flavour, PipelineError};

/// What to convert, and how.
#[derive(Debug, Clone)]
pub struct ConvertRequest {
    /// The model directory (config.json, weights, tokenizer).
    pub model_dir: PathBuf,
    /// Where to write the ONNX model.
    pub output: PathBuf,
    /// Opset and non-finite weights.
    pub emit: qaforge_onnx::EmitOptions,
    /// The engine the artifact is for.
    pub flavour: Flavour,
}

/// What convert did.
#[derive(Debug, Clone)]
pub struct ConvertOutcome {
    /// The model directory read.
    pub model_dir: PathBuf,
    /// The artifact written.
    pub output: PathBuf,
    /// Warnings for stderr: unknown config keys, non-finite weights emitted.
    pub warnings: Vec<String>,
    /// The architecture and its configuration in words.
    pub architecture: String,
    /// The weight format and the files read.
    pub weights: String,
    /// Parameters emitted.
    pub parameters: usize,
    /// Checkpoint tensors read, of all it holds.
    pub tensors_read: (usize, usize),
    /// Checkpoint tensors not used.
    pub unused_tensors: Vec<String>,
    /// The opset, node count and input names of the graph.
    pub graph: String,
    /// What the ONNX Runtime flavour did (None for portable).
    pub flavour: Option<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Their sha256.
    pub sha256: String,
    /// Wall time.
    pub seconds: f64,
}

/// Converts `request.model_dir` and writes the artifact (only after it is checked: its types,
/// and for ONNX Runtime's flavour that ONNX Runtime loads it).
pub fn convert(request: &ConvertRequest) -> Result<ConvertOutcome, PipelineError> {
    let started = Instant::now();
    let checkpoint = qaforge_checkpoint::Checkpoint::open(&request.model_dir)?;
    let mut warnings: Vec<String> = checkpoint
        .unknown_config_keys
        .iter()
        .map(|key| format!("{}: unknown config key `{key}` ignored", request.model_dir.join("config.json").display()))
        .collect();
    let emitted = qaforge_onnx::convert(&checkpoint, request.emit)?;
    warnings.extend(emitted.non_finite.iter().map(|(name, count)| {
        format!(
            "tensor `{name}` holds {count} non-finite value(s) (NaN or Inf), emitted as they are (--allow-non-finite)"
        )
    }));
    let mut model = emitted.model;
    let mut flavour = qaforge_onnxruntime::FuseSummary::default();
    if let Flavour::OnnxRuntime(_) = request.flavour {
        qaforge_onnxruntime::fold(&mut model, &mut flavour)?;
        qaforge_onnxruntime::fuse(&mut model, &mut flavour)?;
    }
    let output = &request.output;
    let bytes = qaforge_onnx::encode_checked(&model, output)?;
    if let Some(library) = request.flavour.library() {
        check_loads_in_onnxruntime(library, &bytes, output)?;
    }
    // The sha256 is computed while the file is written.
    let (written, sha256) = std::thread::scope(|scope| {
        let sha256 = scope.spawn(|| qaforge_provenance::sha256_hex(&bytes));
        (
            qaforge_onnx::write_atomically(output, &bytes),
            sha256.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    });
    written?;
    let c = &checkpoint.config;
    let graph = model.graph.as_ref();
    let inputs: Vec<&str> = graph.map_or_else(Vec::new, |g| g.input.iter().map(|i| i.name.as_str()).collect());
    Ok(ConvertOutcome {
        model_dir: request.model_dir.clone(),
        output: output.clone(),
        warnings,
        architecture: format!("{}: {}", c.architecture(), c.describe()),
        weights: format!(
            "{} ({})",
            checkpoint.format,
            checkpoint.weights.files().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
        parameters: emitted.parameters,
        tensors_read: (emitted.tensors_used, checkpoint.weights.len()),
        unused_tensors: emitted.unused_tensors,
        graph: format!(
            "opset {}, {} nodes, inputs {} [batch, sequence]",
            qaforge_onnx::default_opset(&model).unwrap_or(request.emit.opset),
            graph.map_or(0, |g| g.node.len()),
            inputs.join("/")
        ),
        flavour: matches!(request.flavour, Flavour::OnnxRuntime(_)).then(|| describe_flavour(&flavour, &model)),
        bytes: bytes.len() as u64,
        sha256,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for ConvertOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "converted {} -> {}", self.model_dir.display(), self.output.display())?;
        writeln!(f, "  architecture  {}", self.architecture)?;
        writeln!(f, "  weights       {}", self.weights)?;
        writeln!(f, "  parameters    {}", self.parameters)?;
        writeln!(f, "  tensors read  {} of {}", self.tensors_read.0, self.tensors_read.1)?;
        if !self.unused_tensors.is_empty() {
            writeln!(f, "  unused        {}", self.unused_tensors.join(", "))?;
        }
        writeln!(f, "  graph         {}", self.graph)?;
        if let Some(flavour) = &self.flavour {
            writeln!(f, "  onnxruntime   {flavour}")?;
        }
        writeln!(f, "  file          {} ({} bytes)", crate::human_bytes(self.bytes), self.bytes)?;
        writeln!(f, "  sha256        {}", self.sha256)?;
        write!(f, "  time          {:.3} s", self.seconds)
    }
}
