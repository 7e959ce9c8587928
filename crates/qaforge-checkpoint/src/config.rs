//! `config.json`: the model type it names, dispatched to that architecture's config
//! ([`MobileBertConfig`] here, the BERT family in [`crate::bert_family`]), with transformers'
//! defaults for missing fields, and the checks every architecture shares.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::bert_family::BertConfig;
use crate::error::{CheckpointError, Result};

/// Activation functions of transformers' `ACT2FN` that the ONNX emitter implements exactly.
pub const SUPPORTED_ACTIVATIONS: &[&str] =
    &["relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "tanh"];

/// The models qaforge converts: config.json's `model_type` and the one `architectures` entry
/// each admits (the question-answering head).
pub const SUPPORTED_MODELS: &[(&str, &str)] = &[
    ("mobilebert", "MobileBertForQuestionAnswering"),
    ("bert", "BertForQuestionAnswering"),
    ("distilbert", "DistilBertForQuestionAnswering"),
    ("roberta", "RobertaForQuestionAnswering"),
    ("electra", "ElectraForQuestionAnswering"),
];

/// "model_type (Architecture), ..." for messages.
fn supported_list() -> String {
    SUPPORTED_MODELS.iter().map(|(t, a)| format!("{t} ({a})")).collect::<Vec<_>>().join(", ")
}

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
    pub fn from_file(path: &Path) -> Result<LoadedConfig> {
        let text = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
        Self::from_json_bytes(&text, path)
    }

    /// Parses config.json's bytes: its `model_type` picks the architecture's parser.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<LoadedConfig> {
        #[derive(Deserialize)]
        struct ModelType {
            model_type: Option<serde_json::Value>,
        }
        let probe: ModelType = parse_object(bytes, path)?;
        let unsupported = |message: String| CheckpointError::Unsupported { path: path.to_owned(), message };
        let model_type = match probe.model_type {
            Some(serde_json::Value::String(t)) => t,
            Some(other) => return Err(CheckpointError::Config { path: path.to_owned(), message: format!("`model_type`: expected a string, found {other}") }),
            None => return Err(unsupported(format!("config.json has no model_type; qaforge converts: {}", supported_list()))),
        };
        match model_type.as_str() {
            "mobilebert" => MobileBertConfig::from_json_bytes(bytes, path).map(|l| l.map(ModelConfig::MobileBert)),
            "bert" | "distilbert" | "roberta" | "electra" => BertConfig::from_json_bytes(bytes, path).map(|l| l.map(ModelConfig::Bert)),
            other => Err(unsupported(format!("model_type `{other}`; qaforge converts: {}", supported_list()))),
        }
    }

    /// The transformers class this config builds.
    pub fn architecture(&self) -> &'static str {
        match self {
            ModelConfig::MobileBert(_) => "MobileBertForQuestionAnswering",
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

/// `model_type` must be `expected`, and `architectures`, where given, its QA head only.
pub(crate) fn check_model_type(model_type: Option<&str>, architectures: Option<&[String]>, expected: &str, path: &Path) -> Result<()> {
    let unsupported = |message: String| CheckpointError::Unsupported { path: path.to_owned(), message };
    if model_type != Some(expected) {
        return Err(unsupported(format!("model_type `{}`; qaforge converts: {}", model_type.unwrap_or("none"), supported_list())));
    }
    let admitted = SUPPORTED_MODELS.iter().find(|(t, _)| *t == expected).map(|(_, a)| *a).unwrap_or_default();
    if let Some(other) = architectures.unwrap_or_default().iter().find(|a| a.as_str() != admitted) {
        return Err(unsupported(format!("architecture `{other}` (model_type {expected}); qaforge converts: {}", supported_list())));
    }
    Ok(())
}

/// A size field: `default` when absent, refused outside `1..=max`.
pub(crate) fn checked_size(name: &str, value: Option<i64>, default: usize, max: usize, path: &Path) -> Result<usize> {
    let v = value.unwrap_or(default as i64);
    if v <= 0 || v as u64 > max as u64 {
        return Err(CheckpointError::Config { path: path.to_owned(), message: format!("{name} = {v} is out of range (1..={max})") });
    }
    Ok(v as usize)
}

/// A question-answering head has two labels.
pub(crate) fn check_num_labels(num_labels: Option<i64>, id2label: Option<&BTreeMap<String, serde_json::Value>>, path: &Path) -> Result<()> {
    let n = match (num_labels, id2label) {
        (Some(n), _) => n,
        (None, Some(labels)) => labels.len() as i64,
        (None, None) => 2,
    };
    if n != 2 {
        return Err(CheckpointError::Unsupported { path: path.to_owned(), message: format!("a question-answering head has 2 labels (start, end), this one has {n}") });
    }
    Ok(())
}

/// The activation, `default` when absent, one of [`SUPPORTED_ACTIVATIONS`].
pub(crate) fn checked_activation(act: Option<String>, default: &str, path: &Path) -> Result<String> {
    let act = act.unwrap_or_else(|| default.into());
    if !SUPPORTED_ACTIVATIONS.contains(&act.as_str()) {
        return Err(CheckpointError::Unsupported { path: path.to_owned(), message: format!("hidden_act `{act}`; supported: {}", SUPPORTED_ACTIVATIONS.join(", ")) });
    }
    Ok(act)
}

/// `layer_norm_eps` (1e-12 when absent) in (0, 1).
pub(crate) fn checked_eps(eps: Option<f64>, path: &Path) -> Result<f32> {
    let eps = eps.unwrap_or(1e-12);
    if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
        return Err(CheckpointError::Config { path: path.to_owned(), message: format!("layer_norm_eps = {eps} is out of range (0, 1)") });
    }
    Ok(eps as f32)
}

/// Keys of `rest` that neither PretrainedConfig nor the architecture (`known`) defines.
pub(crate) fn unknown_keys(rest: &BTreeMap<String, serde_json::Value>, known: &[&str]) -> Vec<String> {
    rest.keys().filter(|k| !GENERIC_KEYS.contains(&k.as_str()) && !known.contains(&k.as_str())).cloned().collect()
}

/// Fields that every `PretrainedConfig` may carry and that do not change the forward pass.
const GENERIC_KEYS: &[&str] = &[
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "initializer_range", "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
    "classifier_activation", "id2label", "label2id", "num_labels", "bos_token_id", "eos_token_id",
    "sep_token_id", "output_hidden_states", "output_attentions", "return_dict", "use_cache",
    "gradient_checkpointing", "problem_type", "finetuning_task", "tokenizer_class", "task_specific_params",
    "true_hidden_size", "layer_norm_type", "is_decoder", "add_cross_attention", "chunk_size_feed_forward",
    "pruned_heads", "tie_word_embeddings", "torchscript", "use_bfloat16", "pad_token_id",
];

/// Upper bounds that keep a hostile config from asking for absurd graphs (far above any real BERT),
/// for every architecture's config.
pub(crate) const MAX_DIM: usize = 1 << 16;
pub(crate) const MAX_LAYERS: usize = 1024;
pub(crate) const MAX_VOCAB: usize = 1 << 22;

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
    /// Activation of the feed-forward networks (one of [`SUPPORTED_ACTIVATIONS`]).
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
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<TopLevelKeys, A::Error> {
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

/// A parsed config and the keys qaforge did not recognise (reported, not fatal).
#[derive(Debug, Clone)]
pub struct LoadedConfig<C = ModelConfig> {
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

        check_model_type(raw.model_type.as_deref(), raw.architectures.as_deref(), "mobilebert", path)?;
        let size = |name: &str, value: Option<i64>, default: usize, max: usize| checked_size(name, value, default, max, path);
        check_num_labels(raw.num_labels, raw.id2label.as_ref(), path)?;
        let hidden_act = checked_activation(raw.hidden_act, "relu", path)?;
        let normalization = match raw.normalization_type.as_deref().unwrap_or("no_norm") {
            "no_norm" => Normalization::NoNorm,
            "layer_norm" => Normalization::LayerNorm,
            other => {
                return Err(unsupported(format!("normalization_type `{other}`; supported: no_norm, layer_norm")))
            }
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
        if config.true_hidden_size() % config.num_attention_heads != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<LoadedConfig<MobileBertConfig>> {
        MobileBertConfig::from_json_bytes(json.as_bytes(), Path::new("config.json"))
    }

    #[test]
    fn defaults_are_google_mobilebert_uncased() {
        let c = parse(r#"{"model_type": "mobilebert"}"#).unwrap().config;
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.embedding_size, c.intra_bottleneck_size), (512, 24, 128, 128));
        assert_eq!((c.num_feedforward_networks, c.normalization, c.hidden_act.as_str()), (4, Normalization::NoNorm, "relu"));
        assert!(c.trigram_input && c.use_bottleneck && c.key_query_shared_bottleneck && !c.use_bottleneck_attention);
        assert_eq!(c.true_hidden_size(), 128);
        assert_eq!(c.head_size(), 32);
    }

    #[test]
    fn refuses_other_models_listing_what_is_supported() {
        let err = ModelConfig::from_json_bytes(br#"{"model_type": "gpt2"}"#, Path::new("config.json")).unwrap_err().to_string();
        for needle in ["model_type `gpt2`", "mobilebert (MobileBertForQuestionAnswering)", "roberta (RobertaForQuestionAnswering)", "distilbert", "electra", "bert (BertForQuestionAnswering)"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let err = ModelConfig::from_json_bytes(br#"{"hidden_size": 4}"#, Path::new("config.json")).unwrap_err().to_string();
        assert!(err.contains("no model_type"), "{err}");
        let err = parse(r#"{"model_type": "mobilebert", "architectures": ["MobileBertForMaskedLM"]}"#).unwrap_err().to_string();
        assert!(err.contains("MobileBertForMaskedLM") && err.contains("MobileBertForQuestionAnswering"), "{err}");
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
