//! The artifact verify reads: its bytes' identity, its graph (or an ORT-format package's view of
//! it), its precision, and its provenance checked against a golden bundle's model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qaforge_provenance::{keys, Precision};
use qaforge_runtime::EngineChoice;

use crate::bundle::Bundle;
use crate::VerifyError;

/// The artifact's provenance against the bundle's model: refused unless allowed, noted when the
/// artifact records none.
fn check_provenance(
    metadata: &BTreeMap<String, String>,
    bundle: &Bundle,
    allow: bool,
) -> Result<Vec<String>, VerifyError> {
    let model = &bundle.manifest.model;
    let mut notes = Vec::new();
    let mut mismatches = Vec::new();
    match metadata.get(keys::SOURCE_SHA256) {
        Some(sha) if *sha != model.source_sha256 => mismatches.push(format!(
            "the artifact was converted from checkpoint {sha}, the bundle's reference is checkpoint {}",
            model.source_sha256
        )),
        Some(_) => {}
        None => notes.push(format!(
            "the artifact records no {}: its checkpoint could not be compared with the bundle's",
            keys::SOURCE_SHA256
        )),
    }
    if let (Some(sha), Some(want)) = (metadata.get(keys::TOKENIZER_SHA256), &model.tokenizer_sha256) {
        if sha != want {
            mismatches.push(format!(
                "the artifact's tokenizer is {sha}, the bundle's features were built with tokenizer {want}"
            ));
        }
    }
    if mismatches.is_empty() {
        return Ok(notes);
    }
    if !allow {
        return Err(VerifyError::Mismatch(format!(
            "{}: {} (pass --allow-other-checkpoint to compare anyway)",
            bundle.dir.display(),
            mismatches.join("; ")
        )));
    }
    notes.extend(mismatches.into_iter().map(|m| format!("allowed: {m}")));
    Ok(notes)
}

/// An artifact read for verification: its bytes' identity, its graph (or an ORT-format
/// package's view of it), its provenance and precision, checked against a bundle.
pub struct Artifact {
    /// Where it was read from.
    pub path: PathBuf,
    /// Size of the model file in bytes.
    pub size_bytes: u64,
    /// sha256 of the model file.
    pub sha256: String,
    /// Its graph: inputs, metadata, and (for ONNX files) the nodes an engine runs.
    pub model: tract_onnx::pb::ModelProto,
    /// Its metadata_props.
    pub metadata: BTreeMap<String, String>,
    /// Its precision: recorded in its metadata unless its operators contradict that, else
    /// inferred from its operators ([`qaforge_onnx::artifact_precision`]).
    pub precision: Precision,
    /// Where [`Artifact::precision`] comes from, in words.
    pub precision_source: String,
    /// Provenance notes: what could not be checked, mismatches allowed, external data read.
    pub provenance: Vec<String>,
    /// The bytes an engine loads (the model file, with external data inlined when it has any).
    pub(crate) engine_bytes: Vec<u8>,
}

impl Artifact {
    /// Reads `path` and checks its provenance against `bundle` (a checkpoint or tokenizer other
    /// than the bundle's is refused unless `allow_other_checkpoint`). `engine` is needed to
    /// read an ORT-format package, whose view only ONNX Runtime gives.
    pub fn open(
        path: &Path,
        bundle: &Bundle,
        engine: &EngineChoice,
        allow_other_checkpoint: bool,
    ) -> Result<Self, VerifyError> {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_owned(), source })?;
        // An ORT-format package has no ONNX protobuf: ONNX Runtime, the only engine that reads it,
        // gives its inputs and metadata.
        let (model, data_files) = if qaforge_runtime::is_ort_format(&bytes) {
            (qaforge_runtime::ort_format_view(engine, &bytes, path)?, vec![])
        } else {
            qaforge_onnx::decode_model_with_data(&bytes, path).map_err(|e| VerifyError::Artifact(e.to_string()))?
        };
        let metadata: BTreeMap<String, String> =
            model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        let (precision, precision_source) = qaforge_onnx::artifact_precision(&model)
            .map_err(|why| VerifyError::Artifact(format!("{}: {why}", path.display())))?;
        let mut provenance = check_provenance(&metadata, bundle, allow_other_checkpoint)?;
        // The artifact's sha256 covers the model file only; the weights it keeps beside it are
        // named with theirs, and the engine is given the model with their bytes inline.
        let (size_bytes, sha256) = (bytes.len() as u64, qaforge_provenance::sha256_hex(&bytes));
        let mut engine_bytes = bytes;
        if !data_files.is_empty() {
            for file in &data_files {
                let data = std::fs::read(file).map_err(|source| VerifyError::Io { path: file.clone(), source })?;
                provenance.push(format!(
                    "external data {} ({} bytes, sha256 {})",
                    file.display(),
                    data.len(),
                    qaforge_provenance::sha256_hex(&data)
                ));
            }
            engine_bytes = qaforge_onnx::encode(&model);
        }
        Ok(Artifact {
            path: path.to_owned(),
            size_bytes,
            sha256,
            model,
            metadata,
            precision,
            precision_source,
            provenance,
            engine_bytes,
        })
    }
}
