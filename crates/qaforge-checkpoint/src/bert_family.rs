//! The BERT family's question-answering models: `BertForQuestionAnswering` (MiniLM-style
//! checkpoints included), `DistilBertForQuestionAnswering`, `RobertaForQuestionAnswering` and
//! `ElectraForQuestionAnswering`. All four are the same post-LayerNorm encoder; they differ in
//! tensor names, config field names, position ids (RoBERTa counts from its padding index),
//! token types (DistilBERT has none, RoBERTa feeds none) and ELECTRA's narrower embeddings.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config_fields::{
    check_model_type, check_num_labels, checked_activation, checked_eps, checked_size, parse_object, unknown_keys,
    LoadedConfig, ModelType, MAX_DIM, MAX_LAYERS, MAX_VOCAB,
};
use crate::error::{CheckpointError, Result};
use crate::shapes::{linear, norm};

/// Which member of the family: decides tensor names and the embedding details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertFamily {
    /// `model_type` bert.
    Bert,
    /// `model_type` distilbert: no token types, `q_lin`/`sa_layer_norm` names, epsilon 1e-12.
    DistilBert,
    /// `model_type` roberta: positions from `padding_idx + 1`, no token type ids fed.
    Roberta,
    /// `model_type` electra: embeddings of `embedding_size`, projected to `hidden_size`.
    Electra,
}

impl BertFamily {
    /// The model type this member is (its names are [`ModelType`]'s).
    pub fn kind(self) -> ModelType {
        match self {
            BertFamily::Bert => ModelType::Bert,
            BertFamily::DistilBert => ModelType::DistilBert,
            BertFamily::Roberta => ModelType::Roberta,
            BertFamily::Electra => ModelType::Electra,
        }
    }

    /// config.json's `model_type`.
    pub fn model_type(self) -> &'static str {
        self.kind().name()
    }

    /// The transformers class.
    pub fn architecture(self) -> &'static str {
        self.kind().architecture()
    }

    /// The base model's attribute: the prefix of every encoder tensor name.
    pub fn prefix(self) -> &'static str {
        self.model_type()
    }

    /// Whether run_qa.py feeds token type ids (RoBERTa's tokenizer returns none, DistilBERT
    /// has no table for them).
    pub fn uses_token_type_ids(self) -> bool {
        matches!(self, BertFamily::Bert | BertFamily::Electra)
    }
}

/// A BERT-family configuration: every field that shapes the forward pass, under BERT's names
/// (DistilBERT's `dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation` are read into them).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Which member of the family.
    pub family: BertFamily,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the embedding tables (ELECTRA's `embedding_size`; `hidden_size` for the others).
    pub embedding_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward network's inner layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward network (one of [`crate::SUPPORTED_ACTIVATIONS`]).
    pub hidden_act: String,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (0 for DistilBERT, which has none).
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm (DistilBERT's are fixed at 1e-12).
    pub layer_norm_eps: f32,
    /// The padding token's id: RoBERTa's positions count from it.
    pub pad_token_id: usize,
}

#[derive(Debug, Deserialize)]
struct RawBertConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    embedding_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    intermediate_size: Option<i64>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<i64>,
    type_vocab_size: Option<i64>,
    layer_norm_eps: Option<f64>,
    position_embedding_type: Option<String>,
    pad_token_id: Option<i64>,
    // DistilBERT's names.
    dim: Option<i64>,
    n_layers: Option<i64>,
    n_heads: Option<i64>,
    hidden_dim: Option<i64>,
    activation: Option<String>,
    num_labels: Option<i64>,
    id2label: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// Keys the family's configs carry that do not change the QA forward pass (dropouts, the
/// pretraining heads' settings, DistilBERT's sinusoidal switch: its table is stored either way).
const KNOWN_KEYS: &[&str] = &[
    "dropout",
    "attention_dropout",
    "qa_dropout",
    "seq_classif_dropout",
    "sinusoidal_pos_embds",
    "tie_weights_",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_last_dropout",
    "pooler_fc_size",
    "pooler_num_attention_heads",
    "pooler_num_fc_layers",
    "pooler_size_per_head",
    "pooler_type",
    "directionality",
];

impl BertConfig {
    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parses and validates a BERT-family config.json's bytes; `path` is only used in messages.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<LoadedConfig<BertConfig>> {
        let raw: RawBertConfig = parse_object(bytes, path)?;
        let family = match raw.model_type.as_deref() {
            Some("distilbert") => BertFamily::DistilBert,
            Some("roberta") => BertFamily::Roberta,
            Some("electra") => BertFamily::Electra,
            _ => BertFamily::Bert,
        };
        check_model_type(raw.model_type.as_deref(), raw.architectures.as_deref(), family.kind(), path)?;
        check_num_labels(raw.num_labels, raw.id2label.as_ref(), path)?;
        let size =
            |name: &str, value: Option<i64>, default: usize, max: usize| checked_size(name, value, default, max, path);
        let config_error = |message: String| CheckpointError::Config { path: path.to_owned(), message };
        if let Some(kind) = raw.position_embedding_type.as_deref().filter(|&k| k != "absolute") {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                message: format!("position_embedding_type `{kind}`; qaforge converts absolute position embeddings"),
            });
        }
        // The other family members' field names in a config are a sign of a mislabelled model.
        let foreign = match family {
            BertFamily::DistilBert => [
                ("hidden_size", raw.hidden_size),
                ("num_hidden_layers", raw.num_hidden_layers),
                ("intermediate_size", raw.intermediate_size),
            ],
            _ => [("dim", raw.dim), ("n_layers", raw.n_layers), ("hidden_dim", raw.hidden_dim)],
        };
        if let Some((key, _)) = foreign.iter().find(|(_, v)| v.is_some()) {
            return Err(config_error(format!("`{key}` is not a {} field", family.model_type())));
        }
        let config = match family {
            BertFamily::DistilBert => {
                let dim = size("dim", raw.dim, 768, MAX_DIM)?;
                BertConfig {
                    family,
                    vocab_size: size("vocab_size", raw.vocab_size, 30522, MAX_VOCAB)?,
                    hidden_size: dim,
                    embedding_size: dim,
                    num_hidden_layers: size("n_layers", raw.n_layers, 6, MAX_LAYERS)?,
                    num_attention_heads: size("n_heads", raw.n_heads, 12, MAX_DIM)?,
                    intermediate_size: size("hidden_dim", raw.hidden_dim, 4 * 768, MAX_DIM)?,
                    hidden_act: checked_activation(raw.activation, "gelu", path)?,
                    max_position_embeddings: size(
                        "max_position_embeddings",
                        raw.max_position_embeddings,
                        512,
                        MAX_DIM,
                    )?,
                    type_vocab_size: 0,
                    // transformers builds every DistilBERT LayerNorm with eps=1e-12, whatever the config says.
                    layer_norm_eps: 1e-12,
                    pad_token_id: 0,
                }
            }
            _ => {
                // transformers' defaults per config class.
                let (vocab, hidden, layers, heads, intermediate, pad) = match family {
                    BertFamily::Electra => (30522, 256, 12, 4, 1024, 0),
                    BertFamily::Roberta => (50265, 768, 12, 12, 3072, 1),
                    _ => (30522, 768, 12, 12, 3072, 0),
                };
                let hidden_size = size("hidden_size", raw.hidden_size, hidden, MAX_DIM)?;
                let embedding_size = match family {
                    BertFamily::Electra => size("embedding_size", raw.embedding_size, 128, MAX_DIM)?,
                    _ => {
                        if raw.embedding_size.is_some_and(|e| e != hidden_size as i64) {
                            return Err(config_error(format!(
                                "`embedding_size` differs from hidden_size, which {} does not support",
                                family.model_type()
                            )));
                        }
                        hidden_size
                    }
                };
                let pad_token_id = raw.pad_token_id.unwrap_or(pad);
                let vocab_size = size("vocab_size", raw.vocab_size, vocab, MAX_VOCAB)?;
                if pad_token_id < 0 || pad_token_id as u64 >= vocab_size as u64 {
                    return Err(config_error(format!(
                        "pad_token_id = {pad_token_id} is outside the vocabulary (0..{vocab_size})"
                    )));
                }
                BertConfig {
                    family,
                    vocab_size,
                    hidden_size,
                    embedding_size,
                    num_hidden_layers: size("num_hidden_layers", raw.num_hidden_layers, layers, MAX_LAYERS)?,
                    num_attention_heads: size("num_attention_heads", raw.num_attention_heads, heads, MAX_DIM)?,
                    intermediate_size: size("intermediate_size", raw.intermediate_size, intermediate, MAX_DIM)?,
                    hidden_act: checked_activation(raw.hidden_act, "gelu", path)?,
                    max_position_embeddings: size(
                        "max_position_embeddings",
                        raw.max_position_embeddings,
                        512,
                        MAX_DIM,
                    )?,
                    type_vocab_size: size("type_vocab_size", raw.type_vocab_size, 2, MAX_DIM)?,
                    layer_norm_eps: checked_eps(raw.layer_norm_eps, path)?,
                    pad_token_id: pad_token_id as usize,
                }
            }
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(config_error(format!(
                "hidden size {} is not divisible by {} attention heads",
                config.hidden_size, config.num_attention_heads
            )));
        }
        // RoBERTa's last position id is pad_token_id + sequence length.
        if family == BertFamily::Roberta && config.max_position_embeddings <= config.pad_token_id + 1 {
            return Err(config_error(format!(
                "max_position_embeddings = {} leaves no positions after padding index {}",
                config.max_position_embeddings, config.pad_token_id
            )));
        }
        let mut known: Vec<&str> = KNOWN_KEYS.to_vec();
        if family == BertFamily::DistilBert {
            known.extend(["layer_norm_eps", "hidden_act", "type_vocab_size"]);
        }
        Ok(LoadedConfig { config, unknown_keys: unknown_keys(&raw.rest, &known) })
    }

    /// The longest sequence the model accepts (RoBERTa spends `pad_token_id + 1` positions).
    pub fn max_sequence_length(&self) -> usize {
        match self.family {
            BertFamily::Roberta => self.max_position_embeddings - self.pad_token_id - 1,
            _ => self.max_position_embeddings,
        }
    }
}

/// Every parameter of the QA model, in transformers' module order, with its shape.
pub fn parameter_shapes(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let (h, e, i) = (c.hidden_size, c.embedding_size, c.intermediate_size);
    let p = c.family.prefix();
    out.push((format!("{p}.embeddings.word_embeddings.weight"), vec![c.vocab_size, e]));
    out.push((format!("{p}.embeddings.position_embeddings.weight"), vec![c.max_position_embeddings, e]));
    if c.family != BertFamily::DistilBert {
        out.push((format!("{p}.embeddings.token_type_embeddings.weight"), vec![c.type_vocab_size, e]));
    }
    norm(&mut out, format!("{p}.embeddings.LayerNorm"), e);
    if c.family == BertFamily::Electra && e != h {
        linear(&mut out, format!("{p}.embeddings_project"), e, h);
    }
    for l in 0..c.num_hidden_layers {
        match c.family {
            BertFamily::DistilBert => {
                let n = format!("{p}.transformer.layer.{l}");
                for q in ["q_lin", "k_lin", "v_lin", "out_lin"] {
                    linear(&mut out, format!("{n}.attention.{q}"), h, h);
                }
                norm(&mut out, format!("{n}.sa_layer_norm"), h);
                linear(&mut out, format!("{n}.ffn.lin1"), h, i);
                linear(&mut out, format!("{n}.ffn.lin2"), i, h);
                norm(&mut out, format!("{n}.output_layer_norm"), h);
            }
            _ => {
                let n = format!("{p}.encoder.layer.{l}");
                for q in ["query", "key", "value"] {
                    linear(&mut out, format!("{n}.attention.self.{q}"), h, h);
                }
                linear(&mut out, format!("{n}.attention.output.dense"), h, h);
                norm(&mut out, format!("{n}.attention.output.LayerNorm"), h);
                linear(&mut out, format!("{n}.intermediate.dense"), h, i);
                linear(&mut out, format!("{n}.output.dense"), i, h);
                norm(&mut out, format!("{n}.output.LayerNorm"), h);
            }
        }
    }
    linear(&mut out, "qa_outputs".into(), h, 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn parse(json: &str) -> Result<BertConfig> {
        match ModelConfig::from_json_bytes(json.as_bytes(), Path::new("config.json"))?.config {
            ModelConfig::Bert(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    fn count(c: &BertConfig) -> usize {
        parameter_shapes(c).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    #[test]
    fn defaults_give_the_base_models_parameter_counts() {
        // The QA models' parameter counts as transformers reports them (no pooler).
        assert_eq!(count(&parse(r#"{"model_type": "bert"}"#).unwrap()), 108_893_186);
        assert_eq!(count(&parse(r#"{"model_type": "distilbert"}"#).unwrap()), 66_364_418);
        assert_eq!(
            count(
                &parse(r#"{"model_type": "roberta", "max_position_embeddings": 514, "type_vocab_size": 1}"#).unwrap()
            ),
            124_056_578
        );
        // google/electra-small-discriminator's sizes.
        assert_eq!(count(&parse(r#"{"model_type": "electra"}"#).unwrap()), 13_483_522);
    }

    #[test]
    fn distilbert_reads_its_own_field_names() {
        let c = parse(r#"{"model_type": "distilbert", "dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 96, "activation": "relu"}"#).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (64, 2, 4, 96));
        assert_eq!((c.hidden_act.as_str(), c.type_vocab_size, c.layer_norm_eps), ("relu", 0, 1e-12));
        assert!(!c.family.uses_token_type_ids());
        let err = parse(r#"{"model_type": "distilbert", "hidden_size": 64}"#).unwrap_err().to_string();
        assert!(err.contains("`hidden_size` is not a distilbert field"), "{err}");
    }

    #[test]
    fn refuses_what_the_emitter_does_not_compute() {
        for (json, needle) in [
            (
                r#"{"model_type": "bert", "position_embedding_type": "relative_key"}"#,
                "position_embedding_type `relative_key`",
            ),
            (r#"{"model_type": "bert", "architectures": ["BertForMaskedLM"]}"#, "architecture `BertForMaskedLM`"),
            (
                r#"{"model_type": "roberta", "architectures": ["BertForQuestionAnswering"]}"#,
                "architecture `BertForQuestionAnswering`",
            ),
            (r#"{"model_type": "bert", "hidden_size": 100, "num_attention_heads": 12}"#, "not divisible"),
            (r#"{"model_type": "roberta", "pad_token_id": 60000}"#, "pad_token_id = 60000"),
            (r#"{"model_type": "roberta", "max_position_embeddings": 2}"#, "no positions after padding index 1"),
            (r#"{"model_type": "bert", "embedding_size": 128}"#, "embedding_size"),
            (r#"{"model_type": "electra", "hidden_act": "mish"}"#, "hidden_act `mish`"),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn roberta_spends_positions_on_its_padding_index() {
        let c = parse(r#"{"model_type": "roberta", "max_position_embeddings": 514}"#).unwrap();
        assert_eq!((c.pad_token_id, c.max_sequence_length()), (1, 512));
        assert!(!c.family.uses_token_type_ids());
    }
}
