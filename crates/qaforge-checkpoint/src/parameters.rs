//! The parameters of a question-answering model for a given config: names as transformers writes
//! them and the shapes the config implies (MobileBERT's here, the BERT family's in
//! [`crate::bert_family`]).

use crate::config::{MobileBertConfig, ModelConfig};

/// Every parameter of the QA model, in transformers' module order, with its shape
/// (`nn.Linear` weights are `[out, in]`).
pub fn parameter_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    match config {
        ModelConfig::MobileBert(c) => mobilebert_parameter_shapes(c),
        ModelConfig::Bert(c) => crate::bert_family::parameter_shapes(c),
    }
}

/// Appends `nn.Linear(inputs, outputs)` at `name`: weight `[outputs, inputs]`, bias `[outputs]`.
pub(crate) fn linear(out: &mut Vec<(String, Vec<usize>)>, name: String, inputs: usize, outputs: usize) {
    out.push((format!("{name}.weight"), vec![outputs, inputs]));
    out.push((format!("{name}.bias"), vec![outputs]));
}

/// Appends a LayerNorm (or NoNorm) of `width` at `name`: weight and bias `[width]`.
pub(crate) fn norm(out: &mut Vec<(String, Vec<usize>)>, name: String, width: usize) {
    out.push((format!("{name}.weight"), vec![width]));
    out.push((format!("{name}.bias"), vec![width]));
}

/// `MobileBertForQuestionAnswering`'s parameters.
fn mobilebert_parameter_shapes(c: &MobileBertConfig) -> Vec<(String, Vec<usize>)> {
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

/// Total parameter count of the QA model.
pub fn parameter_count(c: &ModelConfig) -> usize {
    parameter_shapes(c).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn google_mobilebert_uncased_has_24_582_914_parameters() {
        let c = ModelConfig::from_json_bytes(br#"{"model_type": "mobilebert"}"#, Path::new("config.json")).unwrap().config;
        assert_eq!(parameter_count(&c), 24_582_914);
    }
}
