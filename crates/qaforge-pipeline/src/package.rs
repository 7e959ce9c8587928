//! `qaforge package`: an ONNX artifact → an ORT-format model for ONNX Runtime Mobile and the
//! operator list of a reduced build, or (`--format web`, [`crate::web`]) a static site.

use std::path::PathBuf;
use std::time::Instant;

use qaforge_provenance::Named;

use crate::web::{package_web, WebPackageOutcome, WebPackageRequest};
use crate::PipelineError;

/// The package formats, by name (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    /// ONNX Runtime Mobile's ORT format.
    Ort,
    /// A static web site (onnxruntime-web, WebAssembly).
    Web,
}

impl PackageFormat {
    /// Every format, in the order help texts list them.
    pub const ALL: [PackageFormat; 2] = [PackageFormat::Ort, PackageFormat::Web];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageFormat::Ort => "ort",
            PackageFormat::Web => "web",
        }
    }
}

impl Named for PackageFormat {
    const ALL: &'static [Self] = &PackageFormat::ALL;

    fn as_str(self) -> &'static str {
        PackageFormat::as_str(self)
    }
}

impl std::str::FromStr for PackageFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        qaforge_provenance::parse_named(text, "package format")
    }
}

/// What to package, in either format; options of the other format are refused.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The ONNX artifact.
    pub artifact: PathBuf,
    /// The format.
    pub format: PackageFormat,
    /// Where to write the ORT-format model, or the site's folder.
    pub output: PathBuf,
    /// ort: where to write the operator list (default: required_operators.config beside `output`).
    pub operators_config: Option<PathBuf>,
    /// web: the model directory whose tokenizer the page uses.
    pub tokenizer: Option<PathBuf>,
    /// web: the folder of the pinned npm packages.
    pub web_runtime: PathBuf,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// libonnxruntime, which writes the ORT package.
    pub library: Option<PathBuf>,
}

/// What package wrote, in either format.
#[derive(Debug, Clone)]
pub enum Packaged {
    /// An ORT-format model.
    Ort(PackageOutcome),
    /// A static site.
    Web(WebPackageOutcome),
}

/// Packages `request.artifact` in its format.
pub fn package(request: &PackageRequest) -> Result<Packaged, PipelineError> {
    match request.format {
        PackageFormat::Web => {
            if request.operators_config.is_some() {
                return Err(PipelineError::Request(
                    "--operators-config is for --format ort (the web package's page needs no operator list)".into(),
                ));
            }
            let tokenizer = request.tokenizer.clone().ok_or_else(|| {
                PipelineError::Request(
                    "--format web needs --tokenizer MODEL_DIR (the model directory whose tokenizer the page uses)"
                        .into(),
                )
            })?;
            let web = WebPackageRequest {
                artifact: request.artifact.clone(),
                tokenizer,
                output: request.output.clone(),
                node_modules: request.web_runtime.clone(),
                input_names: request.input_names.clone(),
            };
            Ok(Packaged::Web(package_web(&web)?))
        }
        PackageFormat::Ort => {
            if request.tokenizer.is_some() {
                return Err(PipelineError::Request(
                    "--tokenizer is for --format web (an .ort package holds the model only)".into(),
                ));
            }
            Ok(Packaged::Ort(package_ort(request)?))
        }
    }
}

impl std::fmt::Display for Packaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Packaged::Ort(done) => done.fmt(f),
            Packaged::Web(done) => done.fmt(f),
        }
    }
}

/// What package wrote.
#[derive(Debug, Clone)]
pub struct PackageOutcome {
    /// The ONNX artifact packaged.
    pub artifact: PathBuf,
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
fn package_ort(request: &PackageRequest) -> Result<PackageOutcome, PipelineError> {
    // ONNX Runtime writes the package.
    let library = crate::onnxruntime_library(request.library.as_deref())?;
    let started = Instant::now();
    let artifact = &request.artifact;
    let bytes = std::fs::read(artifact).map_err(|source| PipelineError::Io { path: artifact.clone(), source })?;
    if qaforge_runtime::is_ort_format(&bytes) {
        return Err(PipelineError::Request(format!("{}: already an ORT-format model", artifact.display())));
    }
    let model = qaforge_onnx::decode_model(&bytes, artifact)?;
    let config =
        request.operators_config.clone().unwrap_or_else(|| request.output.with_file_name("required_operators.config"));
    #[cfg(feature = "ort")]
    {
        let packaged =
            qaforge_onnxruntime::package::package_ort(&library, &model, artifact, &bytes, &request.output, &config)?;
        let operators = packaged
            .operators
            .iter()
            .flat_map(|(domain, by_opset)| {
                by_opset.iter().map(move |(opset, ops)| (domain.clone(), *opset, ops.iter().cloned().collect()))
            })
            .collect();
        Ok(PackageOutcome {
            artifact: artifact.clone(),
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

impl std::fmt::Display for PackageOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "packaged {} -> {} (ORT format, ONNX Runtime's optimizations applied offline)",
            self.artifact.display(),
            self.ort_path.display()
        )?;
        writeln!(f, "  operators     {} (for a reduced build: --include_ops_by_config)", self.config_path.display())?;
        for (domain, opset, ops) in &self.operators {
            writeln!(f, "    {domain} opset {opset}: {}", ops.join(", "))?;
        }
        writeln!(f, "  file          {} ({} bytes)", crate::human_bytes(self.ort_bytes), self.ort_bytes)?;
        writeln!(f, "  sha256        {}", self.ort_sha256)?;
        write!(f, "  time          {:.3} s", self.seconds)
    }
}
