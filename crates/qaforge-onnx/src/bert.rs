//! The BERT family's question-answering forward pass, emitted as ONNX: BERT (MiniLM-style
//! checkpoints included), DistilBERT, RoBERTa and ELECTRA.
//!
//! Mirrors transformers' `modeling_bert.py`, `modeling_distilbert.py`, `modeling_roberta.py` and
//! `modeling_electra.py`: word + token type + position embeddings and a LayerNorm (ELECTRA then
//! projects them to the hidden width), post-LayerNorm layers of self-attention and one
//! feed-forward network, and the QA head split into start/end logits. The members differ only
//! in names, in RoBERTa's position ids (counted from the padding index, over non-padding
//! tokens) and in which inputs the graph takes: DistilBERT and RoBERTa take no token type ids,
//! as run_qa.py feeds them none.

use qaforge_checkpoint::{BertConfig, BertFamily, Checkpoint};
use tract_onnx::pb::tensor_proto::DataType;

use crate::blocks::{Blocks, EmitOptions, Emitted};
use crate::builder::{Attr, Dim};
use crate::EmitError;

/// Module paths of one layer's tensors, under the layer's own prefix.
struct LayerNames {
    /// The layer prefix, `{layer}` replaced by the index.
    layer: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_output: &'static str,
    attention_norm: &'static str,
    intermediate: &'static str,
    output: &'static str,
    output_norm: &'static str,
}

const BERT_LAYER: LayerNames = LayerNames {
    layer: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT_LAYER: LayerNames = LayerNames {
    layer: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

struct Emitter<'a> {
    b: Blocks<'a>,
    config: &'a BertConfig,
}

impl<'a> Emitter<'a> {
    /// Word, token type and position embeddings, summed in transformers' order, then the
    /// embedding LayerNorm (and ELECTRA's projection to the hidden width).
    fn embeddings(&mut self, input_ids: &str, token_type_ids: Option<&str>) -> Result<String, EmitError> {
        let c = self.config;
        let e = c.embedding_size;
        let p = format!("{}.embeddings", c.family.prefix());
        let words = self.b.param(&format!("{p}.word_embeddings.weight"), &[c.vocab_size, e])?;
        let mut x = self.b.g.node("Gather", "embeddings.word", &[&words, input_ids], vec![("axis", Attr::Int(0))]);
        if c.family != BertFamily::DistilBert {
            let types = self.b.param(&format!("{p}.token_type_embeddings.weight"), &[c.type_vocab_size, e])?;
            // RoBERTa's graph takes no token type ids: transformers then uses type 0 everywhere.
            let type_ids = match token_type_ids {
                Some(ids) => ids.to_string(),
                None => self.b.g.i64_constant("const.i64.scalar.0", &[], &[0]),
            };
            let token_type =
                self.b.g.node("Gather", "embeddings.token_type", &[&types, &type_ids], vec![("axis", Attr::Int(0))]);
            x = self.b.g.node("Add", "embeddings.add_token_type", &[&x, &token_type], vec![]);
        }
        let positions = self.b.param(&format!("{p}.position_embeddings.weight"), &[c.max_position_embeddings, e])?;
        let position = if c.family == BertFamily::Roberta {
            // create_position_ids_from_input_ids: cumsum(mask) * mask + padding_idx, where mask
            // marks tokens other than padding. Counted in int32: tract takes int64 values for
            // symbolic dimensions, which its CumSum cannot evaluate.
            let pad =
                self.b.g.i64_constant(&format!("const.i64.scalar.{}", c.pad_token_id), &[], &[c.pad_token_id as i64]);
            let is_pad = self.b.g.node("Equal", "embeddings.position.is_pad", &[input_ids, &pad], vec![]);
            let not_pad = self.b.g.node("Not", "embeddings.position.not_pad", &[&is_pad], vec![]);
            let mask = self.b.g.node(
                "Cast",
                "embeddings.position.mask",
                &[&not_pad],
                vec![("to", Attr::Int(DataType::Int32 as i64))],
            );
            let axis = self.b.g.i64_constant("const.i64.scalar.1", &[], &[1]);
            let count = self.b.g.node("CumSum", "embeddings.position.count", &[&mask, &axis], vec![]);
            let count = self.b.g.node("Mul", "embeddings.position.count.masked", &[&count, &mask], vec![]);
            let pad32 =
                self.b.g.i32_constant(&format!("const.i32.scalar.{}", c.pad_token_id), &[], &[c.pad_token_id as i32]);
            let ids = self.b.g.node("Add", "embeddings.position.ids", &[&count, &pad32], vec![]);
            self.b.g.node("Gather", "embeddings.position", &[&positions, &ids], vec![("axis", Attr::Int(0))])
        } else {
            let seq_len = self.b.g.node(
                "Shape",
                "embeddings.sequence_length",
                &[input_ids],
                vec![("start", Attr::Int(1)), ("end", Attr::Int(2))],
            );
            let zero = self.b.g.i64_constant("const.i64.0", &[1], &[0]);
            self.b.g.node("Slice", "embeddings.position", &[&positions, &zero, &seq_len, &zero], vec![])
        };
        let sum = self.b.g.node("Add", "embeddings.add_position", &[&x, &position], vec![]);
        let x = self.b.layer_norm(&sum, &format!("{p}.LayerNorm"), "embeddings.norm", e, c.layer_norm_eps)?;
        if c.family == BertFamily::Electra && e != c.hidden_size {
            let project = format!("{}.embeddings_project", c.family.prefix());
            return self.b.linear(&x, &project, "embeddings.project", e, c.hidden_size);
        }
        Ok(x)
    }

    /// One post-LayerNorm layer: self-attention, residual, LayerNorm; FFN, residual, LayerNorm.
    fn layer(&mut self, l: usize, hidden: &str, bias: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let names = if c.family == BertFamily::DistilBert { &DISTILBERT_LAYER } else { &BERT_LAYER };
        let hf = format!("{}.{}.{l}", c.family.prefix(), names.layer);
        let n = format!("layer.{l}");
        let q = self.b.linear(hidden, &format!("{hf}.{}", names.query), &format!("{n}.attention.query"), h, h)?;
        let k = self.b.linear(hidden, &format!("{hf}.{}", names.key), &format!("{n}.attention.key"), h, h)?;
        let v = self.b.linear(hidden, &format!("{hf}.{}", names.value), &format!("{n}.attention.value"), h, h)?;
        let context = self.b.multi_head_attention(
            &format!("{n}.attention"),
            &q,
            &k,
            &v,
            c.num_attention_heads,
            c.head_size(),
            bias,
        );
        let out = self.b.linear(
            &context,
            &format!("{hf}.{}", names.attention_output),
            &format!("{n}.attention.output"),
            h,
            h,
        )?;
        let out = self.b.g.node("Add", &format!("{n}.attention.output.residual"), &[&out, hidden], vec![]);
        let x = self.b.layer_norm(
            &out,
            &format!("{hf}.{}", names.attention_norm),
            &format!("{n}.attention.output.norm"),
            h,
            eps,
        )?;
        let inner = self.b.linear(&x, &format!("{hf}.{}", names.intermediate), &format!("{n}.intermediate"), h, i)?;
        let inner = self.b.activation(&inner, &format!("{n}.intermediate.act"), &c.hidden_act);
        let out = self.b.linear(&inner, &format!("{hf}.{}", names.output), &format!("{n}.output"), i, h)?;
        let out = self.b.g.node("Add", &format!("{n}.output.residual"), &[&out, &x], vec![]);
        self.b.layer_norm(&out, &format!("{hf}.{}", names.output_norm), &format!("{n}.output.norm"), h, eps)
    }
}

/// Emits the QA graph of a BERT-family `checkpoint` (whose config is `config`) at
/// `options.opset`, with `metadata` as metadata_props. Inputs: `input_ids`, `attention_mask`,
/// and `token_type_ids` where the model uses them.
pub(crate) fn emit(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    options: EmitOptions,
    metadata: Vec<(String, String)>,
) -> Result<Emitted, EmitError> {
    let mut e = Emitter { b: Blocks::new(checkpoint, options), config };
    let dims = [Dim::Symbol("batch"), Dim::Symbol("sequence")];
    let input_ids = e.b.g.input("input_ids", DataType::Int64, &dims);
    let attention_mask = e.b.g.input("attention_mask", DataType::Int64, &dims);
    let token_type_ids =
        config.family.uses_token_type_ids().then(|| e.b.g.input("token_type_ids", DataType::Int64, &dims));

    let mut hidden = e.embeddings(&input_ids, token_type_ids.as_deref())?;
    let bias = e.b.attention_bias(&attention_mask);
    for l in 0..config.num_hidden_layers {
        hidden = e.layer(l, &hidden, &bias)?;
    }
    e.b.qa_head(&hidden, config.hidden_size, &dims)?;
    Ok(e.b.finish(&format!("{}_qa", config.family.model_type()), options.opset, metadata))
}
