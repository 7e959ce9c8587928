//! What every architecture's config.json shares: the names of the models qaforge converts
//! ([`ModelType`], written once), parsing a JSON object strictly (no repeated keys, the key of a
//! mistyped field named), the range checks of sizes, labels, activations and epsilon, and the
//! keys every `PretrainedConfig` may carry. The architectures' own configs (mobilebert.rs,
//! bert_family.rs) build on these; nothing here knows an architecture.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{CheckpointError, Result};

/// Activation functions of transformers' `ACT2FN` that the ONNX emitter implements exactly.
pub const SUPPORTED_ACTIVATIONS: &[&str] =
    &["relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "tanh"];

/// The models qaforge converts, each with config.json's `model_type` and the one `architectures`
/// entry it admits (the question-answering head): the one place their names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// `mobilebert`: MobileBertForQuestionAnswering.
    MobileBert,
    /// `bert`: BertForQuestionAnswering.
    Bert,
    /// `distilbert`: DistilBertForQuestionAnswering.
    DistilBert,
    /// `roberta`: RobertaForQuestionAnswering.
    Roberta,
    /// `electra`: ElectraForQuestionAnswering.
    Electra,
}

impl ModelType {
    /// Every model type qaforge converts, in the order messages list them.
    pub const ALL: [ModelType; 5] =
        [ModelType::MobileBert, ModelType::Bert, ModelType::DistilBert, ModelType::Roberta, ModelType::Electra];

    /// config.json's `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            ModelType::MobileBert => "mobilebert",
            ModelType::Bert => "bert",
            ModelType::DistilBert => "distilbert",
            ModelType::Roberta => "roberta",
            ModelType::Electra => "electra",
        }
    }

    /// The transformers class of its question-answering model.
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::MobileBert => "MobileBertForQuestionAnswering",
            ModelType::Bert => "BertForQuestionAnswering",
            ModelType::DistilBert => "DistilBertForQuestionAnswering",
            ModelType::Roberta => "RobertaForQuestionAnswering",
            ModelType::Electra => "ElectraForQuestionAnswering",
        }
    }

    /// The model type config.json's `model_type` names, if qaforge converts it.
    pub fn of_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// "model_type (Architecture), ..." for messages.
    pub fn supported_list() -> String {
        Self::ALL.iter().map(|t| format!("{} ({})", t.name(), t.architecture())).collect::<Vec<_>>().join(", ")
    }
}

/// Parses config.json's bytes into `R`: a JSON object without repeated keys, and when a field
/// has the wrong type, the message names it.
pub(crate) fn parse_object<R: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<R> {
    let config_error = |message: String| CheckpointError::Config { path: path.to_owned(), message };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(config_error("expected a JSON object".into()));
    };
    // serde_json keeps the last of repeated keys silently (as Python does); a config that says
    // two things about one key is refused instead.
    let TopLevelKeys(keys) = serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    if let Some(repeated) = keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(config_error(format!("duplicate key `{repeated}`")));
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        // serde's message does not say which key held the wrong type: find it by trying the keys
        // one at a time (every field is optional).
        let key = object.iter().find(|(k, v)| {
            let single = serde_json::Value::Object([((*k).clone(), (*v).clone())].into_iter().collect());
            serde_json::from_value::<R>(single).is_err()
        });
        config_error(match key {
            Some((k, _)) => format!("`{k}`: {e}"),
            None => e.to_string(),
        })
    })
}

/// `model_type` must be `expected`'s, and `architectures`, where given, its QA head only.
pub(crate) fn check_model_type(
    model_type: Option<&str>,
    architectures: Option<&[String]>,
    expected: ModelType,
    path: &Path,
) -> Result<()> {
    let unsupported = |message: String| CheckpointError::Unsupported { path: path.to_owned(), message };
    if model_type != Some(expected.name()) {
        return Err(unsupported(format!(
            "model_type `{}`; qaforge converts: {}",
            model_type.unwrap_or("none"),
            ModelType::supported_list()
        )));
    }
    if let Some(other) = architectures.unwrap_or_default().iter().find(|a| a.as_str() != expected.architecture()) {
        return Err(unsupported(format!(
            "architecture `{other}` (model_type {}); qaforge converts: {}",
            expected.name(),
            ModelType::supported_list()
        )));
    }
    Ok(())
}

/// A size field: `default` when absent, refused outside `1..=max`.
pub(crate) fn checked_size(name: &str, value: Option<i64>, default: usize, max: usize, path: &Path) -> Result<usize> {
    let v = value.unwrap_or(default as i64);
    if v <= 0 || v as u64 > max as u64 {
        return Err(CheckpointError::Config {
            path: path.to_owned(),
            message: format!("{name} = {v} is out of range (1..={max})"),
        });
    }
    Ok(v as usize)
}

/// A question-answering head has two labels.
pub(crate) fn check_num_labels(
    num_labels: Option<i64>,
    id2label: Option<&BTreeMap<String, serde_json::Value>>,
    path: &Path,
) -> Result<()> {
    let n = match (num_labels, id2label) {
        (Some(n), _) => n,
        (None, Some(labels)) => labels.len() as i64,
        (None, None) => 2,
    };
    if n != 2 {
        return Err(CheckpointError::Unsupported {
            path: path.to_owned(),
            message: format!("a question-answering head has 2 labels (start, end), this one has {n}"),
        });
    }
    Ok(())
}

/// The activation, `default` when absent, one of [`SUPPORTED_ACTIVATIONS`].
pub(crate) fn checked_activation(act: Option<String>, default: &str, path: &Path) -> Result<String> {
    let act = act.unwrap_or_else(|| default.into());
    if !SUPPORTED_ACTIVATIONS.contains(&act.as_str()) {
        return Err(CheckpointError::Unsupported {
            path: path.to_owned(),
            message: format!("hidden_act `{act}`; supported: {}", SUPPORTED_ACTIVATIONS.join(", ")),
        });
    }
    Ok(act)
}

/// `layer_norm_eps` (1e-12 when absent) in (0, 1).
pub(crate) fn checked_eps(eps: Option<f64>, path: &Path) -> Result<f32> {
    let eps = eps.unwrap_or(1e-12);
    if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
        return Err(CheckpointError::Config {
            path: path.to_owned(),
            message: format!("layer_norm_eps = {eps} is out of range (0, 1)"),
        });
    }
    Ok(eps as f32)
}

/// Keys of `rest` that neither PretrainedConfig nor the architecture (`known`) defines.
pub(crate) fn unknown_keys(rest: &BTreeMap<String, serde_json::Value>, known: &[&str]) -> Vec<String> {
    rest.keys().filter(|k| !GENERIC_KEYS.contains(&k.as_str()) && !known.contains(&k.as_str())).cloned().collect()
}

/// Fields that every `PretrainedConfig` may carry and that do not change the forward pass.
const GENERIC_KEYS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "classifier_activation",
    "id2label",
    "label2id",
    "num_labels",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "use_cache",
    "gradient_checkpointing",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "task_specific_params",
    "true_hidden_size",
    "layer_norm_type",
    "is_decoder",
    "add_cross_attention",
    "chunk_size_feed_forward",
    "pruned_heads",
    "tie_word_embeddings",
    "torchscript",
    "use_bfloat16",
    "pad_token_id",
];

/// Upper bounds that keep a hostile config from asking for absurd graphs (far above any real BERT),
/// for every architecture's config.
pub(crate) const MAX_DIM: usize = 1 << 16;
pub(crate) const MAX_LAYERS: usize = 1024;
pub(crate) const MAX_VOCAB: usize = 1 << 22;

/// The top-level keys of a JSON object in document order, repeats included.
struct TopLevelKeys(Vec<String>);

impl<'de> Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// A parsed config and the keys qaforge did not recognise (reported, not fatal).
#[derive(Debug, Clone)]
pub struct LoadedConfig<C> {
    /// The configuration.
    pub config: C,
    /// Keys of config.json that neither the architecture's config nor PretrainedConfig defines.
    pub unknown_keys: Vec<String>,
}

impl<C> LoadedConfig<C> {
    /// The same keys around another view of the config.
    pub fn map<D>(self, f: impl FnOnce(C) -> D) -> LoadedConfig<D> {
        LoadedConfig { config: f(self.config), unknown_keys: self.unknown_keys }
    }
}
