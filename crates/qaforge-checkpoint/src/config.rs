//! `config.json`: the model type it names, dispatched to that architecture's config
//! ([`crate::mobilebert`], [`crate::bert_family`]); the checks every architecture shares are in
//! [`crate::config_fields`].

use std::path::Path;

use serde::Deserialize;

use crate::bert_family::BertConfig;
use crate::config_fields::{parse_object, LoadedConfig, ModelType};
use crate::error::{CheckpointError, Result};
use crate::mobilebert::{MobileBertConfig, Normalization};

/// A validated configuration of any architecture qaforge converts.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// `MobileBertForQuestionAnswering`.
    MobileBert(MobileBertConfig),
    /// BERT, DistilBERT, RoBERTa or ELECTRA question answering.
    Bert(BertConfig),
}

impl ModelConfig {
    /// Reads and validates `config.json`, whichever architecture it names.
    pub fn from_file(path: &Path) -> Result<LoadedConfig<ModelConfig>> {
        let text = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
        Self::from_json_bytes(&text, path)
    }

    /// Parses config.json's bytes: its `model_type` picks the architecture's parser.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<LoadedConfig<ModelConfig>> {
        #[derive(Deserialize)]
        struct Probe {
            model_type: Option<serde_json::Value>,
        }
        let probe: Probe = parse_object(bytes, path)?;
        let unsupported = |message: String| CheckpointError::Unsupported { path: path.to_owned(), message };
        let model_type = match probe.model_type {
            Some(serde_json::Value::String(t)) => t,
            Some(other) => {
                return Err(CheckpointError::Config {
                    path: path.to_owned(),
                    message: format!("`model_type`: expected a string, found {other}"),
                })
            }
            None => {
                return Err(unsupported(format!(
                    "config.json has no model_type; qaforge converts: {}",
                    ModelType::supported_list()
                )))
            }
        };
        match ModelType::of_name(&model_type) {
            Some(ModelType::MobileBert) => {
                MobileBertConfig::from_json_bytes(bytes, path).map(|l| l.map(ModelConfig::MobileBert))
            }
            Some(_) => BertConfig::from_json_bytes(bytes, path).map(|l| l.map(ModelConfig::Bert)),
            None => Err(unsupported(format!(
                "model_type `{model_type}`; qaforge converts: {}",
                ModelType::supported_list()
            ))),
        }
    }

    /// The transformers class this config builds.
    pub fn architecture(&self) -> &'static str {
        match self {
            ModelConfig::MobileBert(_) => ModelType::MobileBert.architecture(),
            ModelConfig::Bert(c) => c.family.architecture(),
        }
    }

    /// Whether the model reads token type ids (the graph's third input).
    pub fn uses_token_type_ids(&self) -> bool {
        match self {
            ModelConfig::MobileBert(_) => true,
            ModelConfig::Bert(c) => c.family.uses_token_type_ids(),
        }
    }

    /// One line describing the topology, for `convert`'s summary.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::MobileBert(c) => format!(
                "{} layers, hidden {}, bottleneck {}, embedding {}, {} heads, {} FFN(s), {}, {}{}",
                c.num_hidden_layers,
                c.hidden_size,
                if c.use_bottleneck { c.intra_bottleneck_size.to_string() } else { "none".into() },
                c.embedding_size,
                c.num_attention_heads,
                c.num_feedforward_networks,
                c.hidden_act,
                match c.normalization {
                    Normalization::NoNorm => "NoNorm",
                    Normalization::LayerNorm => "LayerNorm",
                },
                if c.trigram_input { ", trigram input" } else { "" },
            ),
            ModelConfig::Bert(c) => format!(
                "{} layers, hidden {}, embedding {}, {} heads, intermediate {}, {}, vocabulary {}{}",
                c.num_hidden_layers,
                c.hidden_size,
                c.embedding_size,
                c.num_attention_heads,
                c.intermediate_size,
                c.hidden_act,
                c.vocab_size,
                if c.family.uses_token_type_ids() { "" } else { ", no token type ids" },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_models_listing_what_is_supported() {
        let err = ModelConfig::from_json_bytes(br#"{"model_type": "gpt2"}"#, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        for needle in [
            "model_type `gpt2`",
            "mobilebert (MobileBertForQuestionAnswering)",
            "roberta (RobertaForQuestionAnswering)",
            "distilbert",
            "electra",
            "bert (BertForQuestionAnswering)",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let err =
            ModelConfig::from_json_bytes(br#"{"hidden_size": 4}"#, Path::new("config.json")).unwrap_err().to_string();
        assert!(err.contains("no model_type"), "{err}");
        let err = MobileBertConfig::from_json_bytes(
            br#"{"model_type": "mobilebert", "architectures": ["MobileBertForMaskedLM"]}"#,
            Path::new("config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("MobileBertForMaskedLM") && err.contains("MobileBertForQuestionAnswering"), "{err}");
    }
}
