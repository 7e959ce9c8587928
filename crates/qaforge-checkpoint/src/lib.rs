//! Checkpoint import for qaforge: a Hugging Face model directory in, a validated
//! [`ModelConfig`] (MobileBERT, or a member of the BERT family) and a read-only [`Weights`] view out.
//!
//! Formats: `model.safetensors` (memory-mapped), sharded `model.safetensors.index.json`, and
//! `pytorch_model.bin` / `.pt` in torch's zip format, read through candle-core's pickle VM,
//! which never executes code, behind an allow-list of globals. Hostile files give a
//! [`CheckpointError`] naming the file and the problem, never a panic.

pub mod bert_family;
mod config;
mod config_fields;
mod error;
mod identity;
mod mobilebert;
mod parameters;
mod safetensors_file;
mod shapes;
pub mod synthetic;
mod torch_zip;
mod weights;

use std::path::{Path, PathBuf};

pub use bert_family::{BertConfig, BertFamily};
pub use config::ModelConfig;
pub use config_fields::{LoadedConfig, ModelType, SUPPORTED_ACTIVATIONS};
pub use error::{CheckpointError, Result};
pub use identity::{tokenizer_sha256, TOKENIZER_FILES};
pub use mobilebert::{MobileBertConfig, Normalization};
pub use parameters::{parameter_count, parameter_shapes};
pub use weights::{DType, TensorEntry, Weights};

/// The file format the weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// One `model.safetensors`.
    Safetensors,
    /// `model.safetensors.index.json` and its shards.
    ShardedSafetensors,
    /// A torch zip archive (`pytorch_model.bin`, `.pt`).
    TorchZip,
}

impl std::fmt::Display for WeightsFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightsFormat::Safetensors => "safetensors",
            WeightsFormat::ShardedSafetensors => "sharded safetensors",
            WeightsFormat::TorchZip => "torch zip pickle",
        })
    }
}

/// A loaded model directory.
#[derive(Debug)]
pub struct Checkpoint {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// The validated configuration.
    pub config: ModelConfig,
    /// config.json keys that qaforge does not know (reported to the user, not fatal).
    pub unknown_config_keys: Vec<String>,
    /// Every tensor in the weights file(s).
    pub weights: Weights,
    /// Which format the weights were in.
    pub format: WeightsFormat,
}

/// Weight files looked for, in order of preference.
const WEIGHT_FILES: &[(&str, WeightsFormat)] = &[
    ("model.safetensors", WeightsFormat::Safetensors),
    ("model.safetensors.index.json", WeightsFormat::ShardedSafetensors),
    ("pytorch_model.bin", WeightsFormat::TorchZip),
    ("model.pt", WeightsFormat::TorchZip),
    ("pytorch_model.pt", WeightsFormat::TorchZip),
];

impl Checkpoint {
    /// Reads `config.json` and the weights of a Hugging Face model directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let loaded = ModelConfig::from_file(&dir.join("config.json"))?;
        let (file, format) = WEIGHT_FILES
            .iter()
            .map(|(name, format)| (dir.join(name), *format))
            .find(|(path, _)| path.is_file())
            .ok_or_else(|| CheckpointError::NoWeights { dir: dir.to_owned() })?;
        let weights = Self::read_weights(&file, format)?;
        check_parameters(&loaded.config, &weights)?;
        Ok(Checkpoint {
            dir: dir.to_owned(),
            config: loaded.config,
            unknown_config_keys: loaded.unknown_keys,
            weights,
            format,
        })
    }

    /// Reads one weights file (or an index and its shards) in the given format.
    pub fn read_weights(path: &Path, format: WeightsFormat) -> Result<Weights> {
        let mut weights = Weights::default();
        match format {
            WeightsFormat::Safetensors => safetensors_file::add_file(&mut weights, path)?,
            WeightsFormat::ShardedSafetensors => safetensors_file::add_sharded(&mut weights, path)?,
            WeightsFormat::TorchZip => torch_zip::add_file(&mut weights, path)?,
        }
        Ok(weights)
    }
}

/// Every parameter the config implies must be present with its shape and a float dtype; extra
/// tensors (pooler, MLM head, `embeddings.position_ids`) are allowed and reported by the emitter.
/// The embedding transformation is only required when forward() uses it, so checkpoints that
/// drop it (embedding_size == hidden_size, no trigram) still load.
fn check_parameters(config: &ModelConfig, weights: &Weights) -> Result<()> {
    let transformation_used = match config {
        ModelConfig::MobileBert(c) => c.trigram_input || c.embedding_size != c.hidden_size,
        ModelConfig::Bert(_) => true,
    };
    for (name, expected) in parameter_shapes(config) {
        if name.contains("embedding_transformation") && !transformation_used {
            continue;
        }
        weights.checked_entry(&name, &expected)?;
    }
    Ok(())
}
