//! `qaforge package`: an ONNX artifact → an ORT-format model for ONNX Runtime Mobile and the
//! operator list of a reduced build.

use std::path::PathBuf;
use std::time::Instant;

use crate::PipelineError;

/// What to package.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The ONNX artifact.
    pub artifact: PathBuf,
    /// Where to write the ORT-format model.
    pub output: PathBuf,
    /// Where to write the operator list (default: required_operators.config beside `output`).
    pub operators_config: Option<PathBuf>,
    /// libonnxruntime, which writes the package.
    pub library: Option<PathBuf>,
}

/// What package wrote.
#[derive(Debug, Clone)]
pub struct PackageOutcome {
    /// The ORT-format model.
    pub ort_path: PathBuf,
    /// Its size in bytes.
    pub ort_bytes: u64,
    /// Its sha256.
    pub ort_sha256: String,
    /// The reduced-build operator configuration.
    pub config_path: PathBuf,
    /// Operators by domain and opset: (domain, opset, ops).
    pub operators: Vec<(String, i32, Vec<String>)>,
    /// Wall time.
    pub seconds: f64,
}

/// Packages `request.artifact` with ONNX Runtime (which applies its optimizations offline).
pub fn package(request: &PackageRequest) -> Result<PackageOutcome, PipelineError> {
    // ONNX Runtime writes the package.
    let library = crate::onnxruntime_library(request.library.as_deref())?;
    let started = Instant::now();
    let artifact = &request.artifact;
    let bytes = std::fs::read(artifact).map_err(|source| PipelineError::Io { path: artifact.clone(), source })?;
    if qaforge_verify::is_ort_format(&bytes) {
        return Err(PipelineError::Request(format!("{}: already an ORT-format model", artifact.display())));
    }
    let model = qaforge_onnx::decode_model(&bytes, artifact)?;
    let config = request.operators_config.clone().unwrap_or_else(|| request.output.with_file_name("required_operators.config"));
    #[cfg(feature = "ort")]
    {
        let packaged = qaforge_onnxruntime::package::package_ort(&library, &model, artifact, &bytes, &request.output, &config)?;
        let operators = packaged
            .operators
            .iter()
            .flat_map(|(domain, by_opset)| by_opset.iter().map(move |(opset, ops)| (domain.clone(), *opset, ops.iter().cloned().collect())))
            .collect();
        Ok(PackageOutcome {
            ort_path: packaged.ort_path,
            ort_bytes: packaged.ort_bytes,
            ort_sha256: packaged.ort_sha256,
            config_path: packaged.config_path,
            operators,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (model, config, started, library);
        Err(crate::without_onnxruntime())
    }
}
