//! The MobileBERT question-answering forward pass, emitted as ONNX.
//!
//! Mirrors transformers' `modeling_mobilebert.py` for every config switch: trigram input or not,
//! the embedding transformation, NoNorm or LayerNorm (with the 1e-5 default epsilon where
//! transformers omits `config.layer_norm_eps`), bottlenecks with or without bottleneck attention,
//! the shared key/query bottleneck, stacked FFNs, and the QA head split into start/end logits.

use qaforge_checkpoint::{Checkpoint, MobileBertConfig, Normalization};
use tract_onnx::pb::tensor_proto::DataType;

use crate::blocks::{Blocks, EmitOptions, Emitted};
use crate::builder::{Attr, Dim};
use crate::EmitError;

/// LayerNorm epsilon transformers uses where it builds `nn.LayerNorm(size)` without passing
/// `config.layer_norm_eps` (the embeddings and `MobileBertOutput`).
const TORCH_DEFAULT_LAYER_NORM_EPS: f32 = 1e-5;

struct Emitter<'a> {
    b: Blocks<'a>,
    config: &'a MobileBertConfig,
}

impl<'a> Emitter<'a> {
    /// NoNorm (`x * weight + bias`) or LayerNorm over the last axis.
    fn norm(&mut self, x: &str, hf: &str, node: &str, width: usize, eps: f32) -> Result<String, EmitError> {
        match self.config.normalization {
            Normalization::NoNorm => {
                let weight = self.b.param(&format!("{hf}.weight"), &[width])?;
                let bias = self.b.param(&format!("{hf}.bias"), &[width])?;
                let scaled = self.b.g.node("Mul", &format!("{node}.scale"), &[x, &weight], vec![]);
                Ok(self.b.g.node("Add", &format!("{node}.shift"), &[&scaled, &bias], vec![]))
            }
            Normalization::LayerNorm => self.b.layer_norm(x, hf, node, width, eps),
        }
    }

    fn embeddings(&mut self, input_ids: &str, token_type_ids: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (e, h) = (c.embedding_size, c.hidden_size);
        let hf = "mobilebert.embeddings";
        let table = self.b.param(&format!("{hf}.word_embeddings.weight"), &[c.vocab_size, e])?;
        let mut x = self.b.g.node("Gather", "embeddings.word", &[&table, input_ids], vec![("axis", Attr::Int(0))]);
        let mut width = e;
        if c.trigram_input {
            // cat([x[:, 1:] padded after, x, x[:, :-1] padded before], dim=2)
            let one = self.b.g.i64_constant("const.i64.1", &[1], &[1]);
            let zero = self.b.g.i64_constant("const.i64.0", &[1], &[0]);
            let minus_one = self.b.g.i64_constant("const.i64.-1", &[1], &[-1]);
            let end = self.b.g.i64_constant("const.i64.max", &[1], &[i64::MAX]);
            let next = self.b.g.node("Slice", "embeddings.trigram.next", &[&x, &one, &end, &one], vec![]);
            let pad_after = self.b.g.i64_constant("const.pads.after", &[6], &[0, 0, 0, 0, 1, 0]);
            let next = self.b.g.node("Pad", "embeddings.trigram.next.pad", &[&next, &pad_after], vec![]);
            let prev = self.b.g.node("Slice", "embeddings.trigram.prev", &[&x, &zero, &minus_one, &one], vec![]);
            let pad_before = self.b.g.i64_constant("const.pads.before", &[6], &[0, 1, 0, 0, 0, 0]);
            let prev = self.b.g.node("Pad", "embeddings.trigram.prev.pad", &[&prev, &pad_before], vec![]);
            x = self.b.g.node("Concat", "embeddings.trigram", &[&next, &x, &prev], vec![("axis", Attr::Int(2))]);
            width = 3 * e;
        }
        if c.trigram_input || e != h {
            x = self.b.linear(&x, &format!("{hf}.embedding_transformation"), "embeddings.transformation", width, h)?;
        }
        let positions = self.b.param(&format!("{hf}.position_embeddings.weight"), &[c.max_position_embeddings, h])?;
        let seq_len = self.b.g.node(
            "Shape",
            "embeddings.sequence_length",
            &[input_ids],
            vec![("start", Attr::Int(1)), ("end", Attr::Int(2))],
        );
        let zero = self.b.g.i64_constant("const.i64.0", &[1], &[0]);
        let position = self.b.g.node("Slice", "embeddings.position", &[&positions, &zero, &seq_len, &zero], vec![]);
        let types = self.b.param(&format!("{hf}.token_type_embeddings.weight"), &[c.type_vocab_size, h])?;
        let token_type =
            self.b.g.node("Gather", "embeddings.token_type", &[&types, token_type_ids], vec![("axis", Attr::Int(0))]);
        let sum = self.b.g.node("Add", "embeddings.add_position", &[&x, &position], vec![]);
        let sum = self.b.g.node("Add", "embeddings.add_token_type", &[&sum, &token_type], vec![]);
        self.norm(&sum, &format!("{hf}.LayerNorm"), "embeddings.norm", h, TORCH_DEFAULT_LAYER_NORM_EPS)
    }

    fn attention(&mut self, l: usize, q_in: &str, k_in: &str, v_in: &str, bias: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (t, heads, d) = (c.true_hidden_size(), c.num_attention_heads, c.head_size());
        let all = heads * d;
        let v_width = if c.use_bottleneck_attention { t } else { c.hidden_size };
        let hf = format!("mobilebert.encoder.layer.{l}.attention.self");
        let n = format!("layer.{l}.attention");
        let q = self.b.linear(q_in, &format!("{hf}.query"), &format!("{n}.query"), t, all)?;
        let k = self.b.linear(k_in, &format!("{hf}.key"), &format!("{n}.key"), t, all)?;
        let v = self.b.linear(v_in, &format!("{hf}.value"), &format!("{n}.value"), v_width, all)?;
        Ok(self.b.multi_head_attention(&n, &q, &k, &v, heads, d, bias))
    }

    fn layer(&mut self, l: usize, hidden: &str, bias: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (h, t, eps) = (c.hidden_size, c.true_hidden_size(), c.layer_norm_eps);
        let hf = format!("mobilebert.encoder.layer.{l}");
        let n = format!("layer.{l}");
        let (q_in, k_in, v_in, layer_input) = if c.use_bottleneck {
            let input = self.b.linear(
                hidden,
                &format!("{hf}.bottleneck.input.dense"),
                &format!("{n}.bottleneck.input"),
                h,
                t,
            )?;
            let input = self.norm(
                &input,
                &format!("{hf}.bottleneck.input.LayerNorm"),
                &format!("{n}.bottleneck.input.norm"),
                t,
                eps,
            )?;
            if c.use_bottleneck_attention {
                (input.clone(), input.clone(), input.clone(), input)
            } else if c.key_query_shared_bottleneck {
                let shared = self.b.linear(
                    hidden,
                    &format!("{hf}.bottleneck.attention.dense"),
                    &format!("{n}.bottleneck.attention"),
                    h,
                    t,
                )?;
                let shared = self.norm(
                    &shared,
                    &format!("{hf}.bottleneck.attention.LayerNorm"),
                    &format!("{n}.bottleneck.attention.norm"),
                    t,
                    eps,
                )?;
                (shared.clone(), shared, hidden.to_string(), input)
            } else {
                (hidden.to_string(), hidden.to_string(), hidden.to_string(), input)
            }
        } else {
            (hidden.to_string(), hidden.to_string(), hidden.to_string(), hidden.to_string())
        };
        let context = self.attention(l, &q_in, &k_in, &v_in, bias)?;
        let out =
            self.b.linear(&context, &format!("{hf}.attention.output.dense"), &format!("{n}.attention.output"), t, t)?;
        let out = self.b.g.node("Add", &format!("{n}.attention.output.residual"), &[&out, &layer_input], vec![]);
        let mut x = self.norm(
            &out,
            &format!("{hf}.attention.output.LayerNorm"),
            &format!("{n}.attention.output.norm"),
            t,
            eps,
        )?;

        for f in 0..c.num_feedforward_networks - 1 {
            let fhf = format!("{hf}.ffn.{f}");
            let fname = format!("{n}.ffn.{f}");
            let inner = self.b.linear(
                &x,
                &format!("{fhf}.intermediate.dense"),
                &format!("{fname}.intermediate"),
                t,
                c.intermediate_size,
            )?;
            let inner = self.b.activation(&inner, &format!("{fname}.intermediate.act"), &c.hidden_act);
            let out = self.b.linear(
                &inner,
                &format!("{fhf}.output.dense"),
                &format!("{fname}.output"),
                c.intermediate_size,
                t,
            )?;
            let out = self.b.g.node("Add", &format!("{fname}.output.residual"), &[&out, &x], vec![]);
            x = self.norm(&out, &format!("{fhf}.output.LayerNorm"), &format!("{fname}.output.norm"), t, eps)?;
        }

        let inner = self.b.linear(
            &x,
            &format!("{hf}.intermediate.dense"),
            &format!("{n}.intermediate"),
            t,
            c.intermediate_size,
        )?;
        let inner = self.b.activation(&inner, &format!("{n}.intermediate.act"), &c.hidden_act);
        let out =
            self.b.linear(&inner, &format!("{hf}.output.dense"), &format!("{n}.output"), c.intermediate_size, t)?;
        let out = self.b.g.node("Add", &format!("{n}.output.residual"), &[&out, &x], vec![]);
        let out = self.norm(
            &out,
            &format!("{hf}.output.LayerNorm"),
            &format!("{n}.output.norm"),
            t,
            TORCH_DEFAULT_LAYER_NORM_EPS,
        )?;
        if !c.use_bottleneck {
            return Ok(out);
        }
        let up =
            self.b.linear(&out, &format!("{hf}.output.bottleneck.dense"), &format!("{n}.output.bottleneck"), t, h)?;
        let up = self.b.g.node("Add", &format!("{n}.output.bottleneck.residual"), &[&up, hidden], vec![]);
        self.norm(&up, &format!("{hf}.output.bottleneck.LayerNorm"), &format!("{n}.output.bottleneck.norm"), h, eps)
    }
}

/// Emits the MobileBERT QA graph of `checkpoint` (whose config is `config`) at `options.opset`,
/// with `metadata` as metadata_props.
pub(crate) fn emit(
    checkpoint: &Checkpoint,
    config: &MobileBertConfig,
    options: EmitOptions,
    metadata: Vec<(String, String)>,
) -> Result<Emitted, EmitError> {
    let mut e = Emitter { b: Blocks::new(checkpoint, options), config };
    let dims = [Dim::Symbol("batch"), Dim::Symbol("sequence")];
    let input_ids = e.b.g.input("input_ids", DataType::Int64, &dims);
    let attention_mask = e.b.g.input("attention_mask", DataType::Int64, &dims);
    let token_type_ids = e.b.g.input("token_type_ids", DataType::Int64, &dims);

    let mut hidden = e.embeddings(&input_ids, &token_type_ids)?;
    let bias = e.b.attention_bias(&attention_mask);
    for l in 0..config.num_hidden_layers {
        hidden = e.layer(l, &hidden, &bias)?;
    }
    e.b.qa_head(&hidden, config.hidden_size, &dims)?;
    Ok(e.b.finish("mobilebert_qa", options.opset, metadata))
}
