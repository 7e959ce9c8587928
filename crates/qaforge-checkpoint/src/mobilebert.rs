//! MobileBERT's config.json (`MobileBertConfig`, every switch that shapes the forward pass) and
//! the parameters `MobileBertForQuestionAnswering` holds for it. The BERT family's are in
//! [`crate::bert_family`], beside it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config_fields::{
    check_model_type, check_num_labels, checked_activation, checked_eps, checked_size, parse_object, unknown_keys,
    LoadedConfig, ModelType, MAX_DIM, MAX_LAYERS, MAX_VOCAB,
};
use crate::error::{CheckpointError, Result};
use crate::shapes::{linear, norm};

/// Normalisation after each residual sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// MobileBERT's NoNorm: an element-wise scale and shift, `x * weight + bias`.
    NoNorm,
    /// Standard LayerNorm over the last axis.
    LayerNorm,
}

/// A MobileBERT configuration: every `MobileBertConfig` field that shapes the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileBertConfig {
    /// Vocabulary size (rows of the word-embedding table).
    pub vocab_size: usize,
    /// Width of the residual stream between layers.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of each feed-forward network's inner layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward networks (one of [`crate::SUPPORTED_ACTIVATIONS`]).
    pub hidden_act: String,
    /// Rows of the position-embedding table: the longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// Rows of the token-type-embedding table.
    pub type_vocab_size: usize,
    /// Epsilon of the LayerNorms that transformers builds with `config.layer_norm_eps`.
    pub layer_norm_eps: f32,
    /// Width of a word embedding before the embedding transformation.
    pub embedding_size: usize,
    /// Whether embeddings are concatenated with their neighbours (kernel-3 "convolution").
    pub trigram_input: bool,
    /// Whether each layer projects into the narrower intra-bottleneck width.
    pub use_bottleneck: bool,
    /// Width inside the bottleneck.
    pub intra_bottleneck_size: usize,
    /// Whether query, key and value all read the bottlenecked input.
    pub use_bottleneck_attention: bool,
    /// Whether query and key share a second bottleneck projection.
    pub key_query_shared_bottleneck: bool,
    /// Stacked feed-forward networks per layer.
    pub num_feedforward_networks: usize,
    /// NoNorm or LayerNorm.
    pub normalization: Normalization,
    /// Output labels of the QA head: always 2 (start, end).
    pub num_labels: usize,
}

/// config.json as written by transformers; `None` means "use MobileBertConfig's default".
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    intermediate_size: Option<i64>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<i64>,
    type_vocab_size: Option<i64>,
    layer_norm_eps: Option<f64>,
    embedding_size: Option<i64>,
    trigram_input: Option<bool>,
    use_bottleneck: Option<bool>,
    intra_bottleneck_size: Option<i64>,
    use_bottleneck_attention: Option<bool>,
    key_query_shared_bottleneck: Option<bool>,
    num_feedforward_networks: Option<i64>,
    normalization_type: Option<String>,
    num_labels: Option<i64>,
    id2label: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

impl MobileBertConfig {
    /// `true_hidden_size` in transformers: the width attention and the FFNs work in.
    pub fn true_hidden_size(&self) -> usize {
        if self.use_bottleneck {
            self.intra_bottleneck_size
        } else {
            self.hidden_size
        }
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.true_hidden_size() / self.num_attention_heads
    }

    /// Parses and validates a MobileBERT config.json's bytes; `path` is only used in messages.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<LoadedConfig<MobileBertConfig>> {
        let raw: RawConfig = parse_object(bytes, path)?;
        let config_error = |message: String| CheckpointError::Config { path: path.to_owned(), message };
        let unsupported = |message: String| CheckpointError::Unsupported { path: path.to_owned(), message };

        check_model_type(raw.model_type.as_deref(), raw.architectures.as_deref(), ModelType::MobileBert, path)?;
        let size =
            |name: &str, value: Option<i64>, default: usize, max: usize| checked_size(name, value, default, max, path);
        check_num_labels(raw.num_labels, raw.id2label.as_ref(), path)?;
        let hidden_act = checked_activation(raw.hidden_act, "relu", path)?;
        let normalization = match raw.normalization_type.as_deref().unwrap_or("no_norm") {
            "no_norm" => Normalization::NoNorm,
            "layer_norm" => Normalization::LayerNorm,
            other => return Err(unsupported(format!("normalization_type `{other}`; supported: no_norm, layer_norm"))),
        };
        let layer_norm_eps = checked_eps(raw.layer_norm_eps, path)?;

        let config = MobileBertConfig {
            vocab_size: size("vocab_size", raw.vocab_size, 30522, MAX_VOCAB)?,
            hidden_size: size("hidden_size", raw.hidden_size, 512, MAX_DIM)?,
            num_hidden_layers: size("num_hidden_layers", raw.num_hidden_layers, 24, MAX_LAYERS)?,
            num_attention_heads: size("num_attention_heads", raw.num_attention_heads, 4, MAX_DIM)?,
            intermediate_size: size("intermediate_size", raw.intermediate_size, 512, MAX_DIM)?,
            hidden_act,
            max_position_embeddings: size("max_position_embeddings", raw.max_position_embeddings, 512, MAX_DIM)?,
            type_vocab_size: size("type_vocab_size", raw.type_vocab_size, 2, MAX_DIM)?,
            layer_norm_eps: layer_norm_eps as f32,
            embedding_size: size("embedding_size", raw.embedding_size, 128, MAX_DIM)?,
            trigram_input: raw.trigram_input.unwrap_or(true),
            use_bottleneck: raw.use_bottleneck.unwrap_or(true),
            intra_bottleneck_size: size("intra_bottleneck_size", raw.intra_bottleneck_size, 128, MAX_DIM)?,
            use_bottleneck_attention: raw.use_bottleneck_attention.unwrap_or(false),
            key_query_shared_bottleneck: raw.key_query_shared_bottleneck.unwrap_or(true),
            num_feedforward_networks: size("num_feedforward_networks", raw.num_feedforward_networks, 4, MAX_LAYERS)?,
            normalization,
            num_labels: 2,
        };
        if !config.true_hidden_size().is_multiple_of(config.num_attention_heads) {
            return Err(config_error(format!(
                "true hidden size {} is not divisible by num_attention_heads = {}",
                config.true_hidden_size(),
                config.num_attention_heads
            )));
        }
        // transformers builds query/key with in-features true_hidden_size but feeds them the full
        // hidden states in this combination, which only works when the widths agree.
        if config.use_bottleneck
            && !config.use_bottleneck_attention
            && !config.key_query_shared_bottleneck
            && config.hidden_size != config.intra_bottleneck_size
        {
            return Err(config_error(
                "use_bottleneck without bottleneck attention or a shared key/query bottleneck needs hidden_size == intra_bottleneck_size".into(),
            ));
        }
        Ok(LoadedConfig { config, unknown_keys: unknown_keys(&raw.rest, &[]) })
    }
}

/// `MobileBertForQuestionAnswering`'s parameters, in transformers' module order, with their shapes.
pub fn parameter_shapes(c: &MobileBertConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let (h, t, e, i) = (c.hidden_size, c.true_hidden_size(), c.embedding_size, c.intermediate_size);
    let emb = "mobilebert.embeddings";
    out.push((format!("{emb}.word_embeddings.weight"), vec![c.vocab_size, e]));
    out.push((format!("{emb}.position_embeddings.weight"), vec![c.max_position_embeddings, h]));
    out.push((format!("{emb}.token_type_embeddings.weight"), vec![c.type_vocab_size, h]));
    // transformers always builds the transformation, even when forward() skips it.
    let transformation_in = if c.trigram_input { 3 * e } else { e };
    linear(&mut out, format!("{emb}.embedding_transformation"), transformation_in, h);
    norm(&mut out, format!("{emb}.LayerNorm"), h);
    for l in 0..c.num_hidden_layers {
        let p = format!("mobilebert.encoder.layer.{l}");
        let v_in = if c.use_bottleneck_attention { t } else { h };
        linear(&mut out, format!("{p}.attention.self.query"), t, t);
        linear(&mut out, format!("{p}.attention.self.key"), t, t);
        linear(&mut out, format!("{p}.attention.self.value"), v_in, t);
        linear(&mut out, format!("{p}.attention.output.dense"), t, t);
        norm(&mut out, format!("{p}.attention.output.LayerNorm"), t);
        linear(&mut out, format!("{p}.intermediate.dense"), t, i);
        linear(&mut out, format!("{p}.output.dense"), i, t);
        norm(&mut out, format!("{p}.output.LayerNorm"), t);
        if c.use_bottleneck {
            linear(&mut out, format!("{p}.output.bottleneck.dense"), t, h);
            norm(&mut out, format!("{p}.output.bottleneck.LayerNorm"), h);
            linear(&mut out, format!("{p}.bottleneck.input.dense"), h, t);
            norm(&mut out, format!("{p}.bottleneck.input.LayerNorm"), t);
            if c.key_query_shared_bottleneck {
                linear(&mut out, format!("{p}.bottleneck.attention.dense"), h, t);
                norm(&mut out, format!("{p}.bottleneck.attention.LayerNorm"), t);
            }
        }
        for f in 0..c.num_feedforward_networks.saturating_sub(1) {
            linear(&mut out, format!("{p}.ffn.{f}.intermediate.dense"), t, i);
            linear(&mut out, format!("{p}.ffn.{f}.output.dense"), i, t);
            norm(&mut out, format!("{p}.ffn.{f}.output.LayerNorm"), t);
        }
    }
    linear(&mut out, "qa_outputs".into(), h, 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<LoadedConfig<MobileBertConfig>> {
        MobileBertConfig::from_json_bytes(json.as_bytes(), Path::new("config.json"))
    }

    #[test]
    fn defaults_are_google_mobilebert_uncased() {
        let c = parse(r#"{"model_type": "mobilebert"}"#).unwrap().config;
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.embedding_size, c.intra_bottleneck_size),
            (512, 24, 128, 128)
        );
        assert_eq!(
            (c.num_feedforward_networks, c.normalization, c.hidden_act.as_str()),
            (4, Normalization::NoNorm, "relu")
        );
        assert!(c.trigram_input && c.use_bottleneck && c.key_query_shared_bottleneck && !c.use_bottleneck_attention);
        assert_eq!(c.true_hidden_size(), 128);
        assert_eq!(c.head_size(), 32);
    }

    #[test]
    fn rejects_out_of_range_values() {
        for (json, needle) in [
            (r#"{"model_type": "mobilebert", "num_attention_heads": 0}"#, "num_attention_heads = 0"),
            (r#"{"model_type": "mobilebert", "hidden_size": -5}"#, "hidden_size = -5"),
            (r#"{"model_type": "mobilebert", "intra_bottleneck_size": 130}"#, "not divisible"),
            (r#"{"model_type": "mobilebert", "vocab_size": 1000000000000}"#, "vocab_size"),
            (r#"{"model_type": "mobilebert", "hidden_act": "mish"}"#, "hidden_act `mish`"),
            (r#"{"model_type": "mobilebert", "num_labels": 3}"#, "2 labels"),
            (r#"{"model_type": "mobilebert", "hidden_size": "big"}"#, "invalid config"),
            (r#"[1, 2]"#, "JSON object"),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
            assert!(err.starts_with("config.json:"), "{err}");
        }
    }

    #[test]
    fn reports_unknown_keys_without_failing() {
        let loaded = parse(r#"{"model_type": "mobilebert", "torch_dtype": "float32", "my_custom_flag": 1}"#).unwrap();
        assert_eq!(loaded.unknown_keys, vec!["my_custom_flag".to_string()]);
    }
}
