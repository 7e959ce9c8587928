//! An artifact loaded to answer questions (`answer`, `answer --batch`, the server): read and
//! decoded by qaforge before any engine sees it (a hostile file is refused with its problem
//! named), its inputs mapped, the engine chosen for it on this CPU, and whether the rows of a
//! batch are independent in it.

use std::path::{Path, PathBuf};

use qaforge_runtime::{ChosenEngine, CpuFeatures, Engine, EngineChoice, InputLayout};
use qaforge_squad::Features;

use crate::PipelineError;

/// An artifact ready to be run.
pub struct LoadedArtifact {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its graph (or an ORT-format package's view of it).
    pub model: qaforge_onnx::pb::ModelProto,
    /// sha256 of the file.
    pub sha256: String,
    /// The engine it runs in, and how exactly.
    pub chosen: ChosenEngine,
    /// Why a row's logits depend on the rows batched beside it (int8-dynamic, float16), or `None`.
    pub coupling: Option<String>,
    layout: InputLayout,
    bytes: Vec<u8>,
}

impl LoadedArtifact {
    /// Reads `path` and chooses its engine: `engine`, or with `exact_fallback` (`--engine auto`)
    /// tract where `engine` would not compute it exactly on this CPU.
    pub fn open(
        path: &Path,
        engine: &EngineChoice,
        exact_fallback: bool,
        input_names: Option<&[String]>,
    ) -> Result<Self, PipelineError> {
        let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.to_owned(), source })?;
        let model = if qaforge_runtime::is_ort_format(&bytes) {
            qaforge_runtime::ort_format_view(engine, &bytes, path)?
        } else {
            qaforge_onnx::decode_model(&bytes, path)?
        };
        let layout = qaforge_runtime::check_inputs(&model, path, input_names)?;
        let chosen = qaforge_runtime::choose_engine(engine, exact_fallback, &CpuFeatures::detect(), &model, &bytes);
        let coupling = qaforge_runtime::batch_coupling(&model);
        Ok(LoadedArtifact {
            path: path.to_owned(),
            sha256: qaforge_provenance::sha256_hex(&bytes),
            model,
            chosen,
            coupling,
            layout,
            bytes,
        })
    }

    /// Checks that every token id of `features` is within the artifact's vocabulary (a
    /// tokenizer of another model is named, not answered with garbage).
    pub fn check_token_ids(&self, features: &Features) -> Result<(), PipelineError> {
        Ok(qaforge_runtime::check_token_ids(&self.model, &self.layout, features, &self.path)?)
    }

    /// A session of the chosen engine with `threads` threads for ONNX Runtime's intra-op pool.
    pub fn engine(&self, threads: usize) -> Result<Box<dyn Engine>, PipelineError> {
        Ok(qaforge_runtime::load_engine(
            &self.chosen.engine,
            &self.model,
            &self.bytes,
            &self.path,
            threads,
            self.layout.clone(),
        )?)
    }

    /// The artifact's metadata value for `key`, if it records one.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.model.metadata_props.iter().find(|p| p.key == key).map(|p| p.value.as_str())
    }
}
