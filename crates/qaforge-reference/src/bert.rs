//! The BERT family's QA models, written from transformers' modeling_bert.py,
//! modeling_distilbert.py, modeling_roberta.py and modeling_electra.py: one post-LayerNorm
//! encoder; the members differ in names, position ids, token types and ELECTRA's projection.

use candle_core::Tensor;
use qaforge_checkpoint::{BertConfig, BertFamily, Weights};

use crate::ops::{attention, embed, mask_bias, parameter, qa_logits, Linear, Norm};
use crate::ReferenceError;

/// `BertEmbeddings` / `Embeddings` (DistilBERT) / `RobertaEmbeddings` / `ElectraEmbeddings`,
/// with ELECTRA's `embeddings_project`.
struct Embeddings {
    words: Tensor,
    positions: Tensor,
    /// Absent in DistilBERT.
    token_types: Option<Tensor>,
    norm: Norm,
    project: Option<Linear>,
    family: BertFamily,
    pad_token_id: i64,
}

impl Embeddings {
    fn load(w: &Weights, c: &BertConfig) -> Result<Self, ReferenceError> {
        let p = format!("{}.embeddings", c.family.prefix());
        let e = c.embedding_size;
        let token_types = if c.family == BertFamily::DistilBert {
            None
        } else {
            Some(parameter(w, &format!("{p}.token_type_embeddings.weight"), &[c.type_vocab_size, e])?)
        };
        let project = if c.family == BertFamily::Electra && e != c.hidden_size {
            Some(Linear::load(w, &format!("{}.embeddings_project", c.family.prefix()), e, c.hidden_size)?)
        } else {
            None
        };
        Ok(Embeddings {
            words: parameter(w, &format!("{p}.word_embeddings.weight"), &[c.vocab_size, e])?,
            positions: parameter(w, &format!("{p}.position_embeddings.weight"), &[c.max_position_embeddings, e])?,
            token_types,
            norm: Norm::load(w, &format!("{p}.LayerNorm"), e, Some(c.layer_norm_eps as f64))?,
            project,
            family: c.family,
            pad_token_id: c.pad_token_id as i64,
        })
    }

    /// Position ids as each model makes them: RoBERTa's `create_position_ids_from_input_ids`
    /// (cumulative count of non-padding tokens, offset by the padding index, padding at the padding
    /// index); the others count from 0.
    fn position_ids(&self, ids: &[i64], b: usize, t: usize) -> Vec<i64> {
        match self.family {
            BertFamily::Roberta => (0..b)
                .flat_map(|row| {
                    let mut seen = 0;
                    ids[row * t..(row + 1) * t]
                        .iter()
                        .map(|&id| {
                            if id == self.pad_token_id {
                                self.pad_token_id
                            } else {
                                seen += 1;
                                seen + self.pad_token_id
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            _ => (0..b).flat_map(|_| 0..t as i64).collect(),
        }
    }

    fn forward(&self, ids: &[i64], types: &[i64], b: usize, t: usize) -> Result<Tensor, ReferenceError> {
        let mut x = embed(&self.words, ids, b, t, "token id")?;
        if let Some(table) = &self.token_types {
            // RoBERTa's and DistilBERT's run_qa.py features carry no token types: zeros.
            let zeros;
            let types = if self.family.uses_token_type_ids() {
                types
            } else {
                zeros = vec![0; b * t];
                &zeros
            };
            x = (x + embed(table, types, b, t, "token type id")?)?;
        }
        let x = (x + embed(&self.positions, &self.position_ids(ids, b, t), b, t, "position")?)?;
        let x = self.norm.forward(&x)?;
        match &self.project {
            Some(project) => project.forward(&x),
            None => Ok(x),
        }
    }
}

/// One encoder layer: self-attention, `attention.output` (dense + LayerNorm of the residual sum),
/// intermediate (dense + activation), output (dense + LayerNorm of the residual sum).
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_dense: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output_dense: Linear,
    output_norm: Norm,
    heads: usize,
    act: String,
}

impl Layer {
    fn load(w: &Weights, c: &BertConfig, l: usize) -> Result<Self, ReferenceError> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let eps = Some(c.layer_norm_eps as f64);
        let p = c.family.prefix();
        // The same modules under DistilBERT's names (TransformerBlock) and BERT's (BertLayer).
        let names: [String; 8] = if c.family == BertFamily::DistilBert {
            let n = format!("{p}.transformer.layer.{l}");
            [
                "attention.q_lin",
                "attention.k_lin",
                "attention.v_lin",
                "attention.out_lin",
                "sa_layer_norm",
                "ffn.lin1",
                "ffn.lin2",
                "output_layer_norm",
            ]
            .map(|s| format!("{n}.{s}"))
        } else {
            let n = format!("{p}.encoder.layer.{l}");
            [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ]
            .map(|s| format!("{n}.{s}"))
        };
        Ok(Layer {
            query: Linear::load(w, &names[0], h, h)?,
            key: Linear::load(w, &names[1], h, h)?,
            value: Linear::load(w, &names[2], h, h)?,
            attention_dense: Linear::load(w, &names[3], h, h)?,
            attention_norm: Norm::load(w, &names[4], h, eps)?,
            intermediate: Linear::load(w, &names[5], h, i)?,
            output_dense: Linear::load(w, &names[6], i, h)?,
            output_norm: Norm::load(w, &names[7], h, eps)?,
            heads: c.num_attention_heads,
            act: c.hidden_act.clone(),
        })
    }

    fn forward(&self, x: &Tensor, bias: Option<&[f32]>) -> Result<Tensor, ReferenceError> {
        let context =
            attention(&self.query.forward(x)?, &self.key.forward(x)?, &self.value.forward(x)?, self.heads, bias)?;
        let x = self.attention_dense.forward_then(&context, Some(x), Some(&self.attention_norm))?;
        let inner = self.intermediate.forward_activated(&x, &self.act)?;
        self.output_dense.forward_then(&inner, Some(&x), Some(&self.output_norm))
    }
}

/// `BertForQuestionAnswering` and its family.
pub(crate) struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    qa_outputs: Linear,
}

impl Bert {
    pub(crate) fn load(w: &Weights, c: &BertConfig) -> Result<Self, ReferenceError> {
        Ok(Bert {
            embeddings: Embeddings::load(w, c)?,
            layers: (0..c.num_hidden_layers).map(|l| Layer::load(w, c, l)).collect::<Result<_, _>>()?,
            qa_outputs: Linear::load(w, "qa_outputs", c.hidden_size, 2)?,
        })
    }

    pub(crate) fn forward(
        &self,
        b: usize,
        t: usize,
        ids: &[i64],
        mask: &[i64],
        types: &[i64],
    ) -> Result<(Vec<f32>, Vec<f32>), ReferenceError> {
        let bias = mask_bias(mask);
        let mut x = self.embeddings.forward(ids, types, b, t)?;
        for layer in &self.layers {
            x = layer.forward(&x, bias.as_deref())?;
        }
        qa_logits(&self.qa_outputs, &x)
    }
}
