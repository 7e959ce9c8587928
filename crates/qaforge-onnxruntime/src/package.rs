//! `qaforge package --format ort`: the artifact as ONNX Runtime Mobile loads it, an ORT-format
//! model with ONNX Runtime's optimizations applied once, offline (its converter's "Fixed" style:
//! ORT_ENABLE_ALL, so the file suits CPUs like the packaging machine's), and the
//! `required_operators.config` a reduced ONNX Runtime build takes (`build.sh
//! --include_ops_by_config`), listing every operator of the optimized graph by domain and opset.
//!
//! ONNX Runtime writes the ORT format itself (through the `ort` crate); the operator list is read
//! from that file's nodes ([`crate::ort_format`]). Nothing is written unless both succeed and the
//! package loads.

use std::path::{Path, PathBuf};

use qaforge_provenance::keys;
use qaforge_runtime::integer_kernels::IntegerProducts;
use qaforge_runtime::onnxruntime::{model_view, save_optimized, SavedFormat};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

use crate::ort_format::{config_text, operators, Operators};
use crate::FuseError;

/// What [`package_ort`] wrote.
#[derive(Debug)]
pub struct Packaged {
    /// The ORT-format model.
    pub ort_path: PathBuf,
    /// Its size in bytes.
    pub ort_bytes: u64,
    /// Its sha256.
    pub ort_sha256: String,
    /// The reduced-build operator configuration.
    pub config_path: PathBuf,
    /// Operators by domain and opset (since-version).
    pub operators: Operators,
}

fn io_error(path: &Path, source: std::io::Error) -> FuseError {
    FuseError::Io { path: path.to_owned(), source }
}

/// Packages `model` (the artifact read from `source`, whose bytes are `source_bytes`) for ONNX
/// Runtime Mobile: `output` (ORT format) and `config_path` (required operators), both written
/// atomically, after ONNX Runtime from `library` has produced and reloaded the package.
pub fn package_ort(
    library: &Path,
    model: &ModelProto,
    source: &Path,
    source_bytes: &[u8],
    output: &Path,
    config_path: &Path,
) -> Result<Packaged, FuseError> {
    // Provenance travels inside the package: ONNX Runtime keeps metadata_props in the ORT format.
    // The integer products are recorded because the package has no ONNX graph to scan for them.
    let mut model = model.clone();
    let products = IntegerProducts::of(&model);
    let mut add = |key: &str, value: String| {
        model.metadata_props.retain(|p| p.key != key);
        model.metadata_props.push(StringStringEntryProto { key: key.into(), value });
    };
    add(keys::PACKAGE_FORMAT, "ort".into());
    add(keys::PACKAGE_SOURCE_SHA256, qaforge_provenance::sha256_hex(source_bytes));
    add(IntegerProducts::METADATA_KEY, products.to_metadata());
    let bytes = qaforge_onnx::encode(&model);

    let folder = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let scratch =
        tempfile::Builder::new().prefix(".qaforge-package-").tempdir_in(folder).map_err(|e| io_error(folder, e))?;
    let ort_file = scratch.path().join("model.ort");
    save_optimized(library, &bytes, source, &ort_file, SavedFormat::Ort, &[])?;
    let ort_bytes = std::fs::read(&ort_file).map_err(|e| io_error(&ort_file, e))?;
    let operators = operators(&ort_bytes)
        .map_err(|e| FuseError::Graph(format!("{}: the ORT-format model ONNX Runtime wrote: {e}", output.display())))?;
    // The package must load, and keep the provenance.
    let view = model_view(library, &ort_bytes, output)?;
    if !view.metadata_props.iter().any(|p| p.key == keys::PACKAGE_FORMAT) {
        return Err(FuseError::Graph(format!(
            "{}: the ORT-format model lost the artifact's metadata",
            output.display()
        )));
    }
    let source_name =
        source.file_name().map_or_else(|| source.display().to_string(), |n| n.to_string_lossy().into_owned());
    let config = config_text(&operators, &source_name);
    qaforge_onnx::write_atomically(output, &ort_bytes)?;
    qaforge_onnx::write_atomically(config_path, config.as_bytes())?;
    Ok(Packaged {
        ort_path: output.to_owned(),
        ort_bytes: ort_bytes.len() as u64,
        ort_sha256: qaforge_provenance::sha256_hex(&ort_bytes),
        config_path: config_path.to_owned(),
        operators,
    })
}

/// Checks that ONNX Runtime from `library` loads the artifact `bytes` (written to `label`).
pub fn check_loads(library: &Path, bytes: &[u8], label: &Path) -> Result<(), FuseError> {
    Ok(qaforge_runtime::onnxruntime::check_loads(library, bytes, label)?)
}
