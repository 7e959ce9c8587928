//! Deterministic random MobileBERT checkpoints, for tests and benchmarks that need a full-size
//! model (no real checkpoint can be downloaded here).

use std::path::Path;

use crate::config::ModelConfig;
use crate::error::{CheckpointError, Result};
use crate::mobilebert::Normalization;
use crate::parameters::parameter_shapes;

/// google/mobilebert-uncased's config.json (24 layers, 512 hidden, 128 bottleneck), as a QA model.
pub const GOOGLE_MOBILEBERT_UNCASED_CONFIG: &str = r#"{
  "architectures": ["MobileBertForQuestionAnswering"],
  "attention_probs_dropout_prob": 0.1,
  "classifier_activation": false,
  "embedding_size": 128,
  "hidden_act": "relu",
  "hidden_dropout_prob": 0.0,
  "hidden_size": 512,
  "initializer_range": 0.02,
  "intermediate_size": 512,
  "intra_bottleneck_size": 128,
  "key_query_shared_bottleneck": true,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "mobilebert",
  "normalization_type": "no_norm",
  "num_attention_heads": 4,
  "num_feedforward_networks": 4,
  "num_hidden_layers": 24,
  "pad_token_id": 0,
  "trigram_input": true,
  "true_hidden_size": 128,
  "type_vocab_size": 2,
  "use_bottleneck": true,
  "use_bottleneck_attention": false,
  "vocab_size": 30522
}
"#;

/// SplitMix64: a tiny, well-known generator, so the weights do not depend on a crate's RNG version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Writes `config_json` and a `model.safetensors` with deterministic random weights of O(1)
/// activations (fan-in-scaled dense weights, norm scales near 1) into `dir`.
pub fn write_random_checkpoint(dir: &Path, config_json: &str, seed: u64) -> Result<ModelConfig> {
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_json_bytes(config_json.as_bytes(), &config_path)?.config;
    let no_norm = matches!(&config, ModelConfig::MobileBert(c) if c.normalization == Normalization::NoNorm);
    let mut rng = SplitMix64(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in parameter_shapes(&config) {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("LayerNorm.");
        let scale = if name.ends_with(".bias") {
            0.1
        } else if name.contains("_embeddings.") {
            1.0
        } else if is_norm {
            0.4
        } else {
            // Uniform(-a, a) has std a/sqrt(3): a = sqrt(3 / fan_in) gives unit-variance outputs.
            (3.0 / shape[1] as f32).sqrt()
        };
        let offset = if is_norm && name.ends_with(".weight") {
            // NoNorm scales below 1 keep the residual stream from growing over 24 layers.
            if no_norm {
                0.5
            } else {
                1.0
            }
        } else {
            0.0
        };
        let bytes = (0..n).flat_map(|_| (offset + scale * rng.uniform()).to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .expect("byte count matches shape by construction");
            (name.clone(), view)
        })
        .collect();
    let weights_path = dir.join("model.safetensors");
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| CheckpointError::Safetensors { path: weights_path.clone(), message: e.to_string() })?;
    std::fs::write(&weights_path, bytes).map_err(|e| CheckpointError::io(&weights_path, e))?;
    std::fs::write(&config_path, config_json).map_err(|e| CheckpointError::io(&config_path, e))?;
    Ok(config)
}
