//! The MobileBERT question-answering forward pass, emitted as ONNX.
//!
//! Mirrors transformers' `modeling_mobilebert.py` for every config switch: trigram input or not,
//! the embedding transformation, NoNorm or LayerNorm (with the 1e-5 default epsilon where
//! transformers omits `config.layer_norm_eps`), bottlenecks with or without bottleneck attention,
//! the shared key/query bottleneck, stacked FFNs, and the QA head split into start/end logits.

use std::collections::BTreeSet;

use qaforge_checkpoint::{Checkpoint, MobileBertConfig, Normalization};
use tract_onnx::pb::{tensor_proto::DataType, ModelProto};

use crate::builder::{Attr, Dim, GraphBuilder};
use crate::EmitError;

/// The additive attention-mask value for padded positions. transformers uses float32's minimum
/// (-3.4e38), which overflows to -inf in float16 and turns softmax into NaN; -10000 already makes
/// exp() underflow to exactly 0 in float32, so the logits are unchanged and FP16/INT8 stay sane.
pub const ATTENTION_MASK_VALUE: f32 = -10000.0;

/// Opsets the emitter supports (LayerNormalization needs 17).
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// Default opset.
pub const DEFAULT_OPSET: i64 = 17;

/// What emission produced, besides the model itself.
#[derive(Debug)]
pub struct Emitted {
    /// The ONNX model.
    pub model: ModelProto,
    /// Parameters of the tensors the graph uses.
    pub parameters: usize,
    /// Checkpoint tensors the graph uses.
    pub tensors_used: usize,
    /// Checkpoint tensors the QA forward pass does not need (pooler, MLM head, position_ids...).
    pub unused_tensors: Vec<String>,
    /// Tensors holding NaN/Inf (only with [`EmitOptions::allow_non_finite`]): name, count.
    pub non_finite: Vec<(String, usize)>,
}

/// How to emit.
#[derive(Debug, Clone, Copy)]
pub struct EmitOptions {
    /// ONNX opset (see [`SUPPORTED_OPSETS`]).
    pub opset: i64,
    /// Emit tensors holding NaN/Inf (reported in [`Emitted::non_finite`]) instead of refusing.
    pub allow_non_finite: bool,
}

impl Default for EmitOptions {
    fn default() -> Self {
        EmitOptions { opset: DEFAULT_OPSET, allow_non_finite: false }
    }
}

/// LayerNorm epsilon transformers uses where it builds `nn.LayerNorm(size)` without passing
/// `config.layer_norm_eps` (the embeddings and `MobileBertOutput`).
const TORCH_DEFAULT_LAYER_NORM_EPS: f32 = 1e-5;

struct Emitter<'a> {
    g: GraphBuilder,
    checkpoint: &'a Checkpoint,
    config: &'a MobileBertConfig,
    used: BTreeSet<String>,
    parameters: usize,
    allow_non_finite: bool,
    non_finite: Vec<(String, usize)>,
}

impl<'a> Emitter<'a> {
    /// A float32 weight from the checkpoint, checked against the shape the config implies.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmitError> {
        let values = if self.allow_non_finite {
            let (values, non_finite) = self.checkpoint.weights.f32_counting_non_finite(name, shape)?;
            if let Some((count, _)) = non_finite {
                self.non_finite.push((name.to_string(), count));
            }
            values
        } else {
            self.checkpoint.weights.f32(name, shape)?
        };
        self.used.insert(name.to_string());
        self.parameters += values.len();
        Ok(values)
    }

    /// Adds a checkpoint tensor as an initializer of the same name.
    fn param(&mut self, name: &str, shape: &[usize]) -> Result<String, EmitError> {
        let values = self.weight(name, shape)?;
        Ok(self.g.f32_initializer(name, shape, &values))
    }

    /// `nn.Linear(in, out)` at `hf` applied to `x`: MatMul by the transposed weight, then Add.
    fn linear(&mut self, x: &str, hf: &str, node: &str, inputs: usize, outputs: usize) -> Result<String, EmitError> {
        let weight = self.weight(&format!("{hf}.weight"), &[outputs, inputs])?;
        // Transposed in 32 x 32 tiles: the naive loop strides through memory and was a tenth of a
        // full-size convert.
        let mut transposed = vec![0f32; weight.len()];
        const TILE: usize = 32;
        for o0 in (0..outputs).step_by(TILE) {
            for i0 in (0..inputs).step_by(TILE) {
                for o in o0..(o0 + TILE).min(outputs) {
                    for i in i0..(i0 + TILE).min(inputs) {
                        transposed[i * outputs + o] = weight[o * inputs + i];
                    }
                }
            }
        }
        let w = self.g.f32_initializer(&format!("{hf}.weight.T"), &[inputs, outputs], &transposed);
        let b = self.param(&format!("{hf}.bias"), &[outputs])?;
        let product = self.g.node("MatMul", node, &[x, &w], vec![]);
        Ok(self.g.node("Add", &format!("{node}.add_bias"), &[&product, &b], vec![]))
    }

    /// NoNorm (`x * weight + bias`) or LayerNorm over the last axis.
    fn norm(&mut self, x: &str, hf: &str, node: &str, width: usize, eps: f32) -> Result<String, EmitError> {
        let weight = self.param(&format!("{hf}.weight"), &[width])?;
        let bias = self.param(&format!("{hf}.bias"), &[width])?;
        Ok(match self.config.normalization {
            Normalization::NoNorm => {
                let scaled = self.g.node("Mul", &format!("{node}.scale"), &[x, &weight], vec![]);
                self.g.node("Add", &format!("{node}.shift"), &[&scaled, &bias], vec![])
            }
            Normalization::LayerNorm => self.g.node(
                "LayerNormalization",
                node,
                &[x, &weight, &bias],
                vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
            ),
        })
    }

    /// The configured activation, exactly as transformers' ACT2FN computes it.
    fn activation(&mut self, x: &str, node: &str) -> String {
        let act = self.config.hidden_act.clone();
        match act.as_str() {
            "relu" => self.g.node("Relu", node, &[x], vec![]),
            "tanh" => self.g.node("Tanh", node, &[x], vec![]),
            "silu" | "swish" => {
                let s = self.g.node("Sigmoid", &format!("{node}.sigmoid"), &[x], vec![]);
                self.g.node("Mul", node, &[x, &s], vec![])
            }
            "gelu" => {
                // x * 0.5 * (1 + erf(x / sqrt(2)))
                let sqrt2 = self.g.f32_scalar("const.sqrt2", std::f32::consts::SQRT_2);
                let half = self.g.f32_scalar("const.half", 0.5);
                let one = self.g.f32_scalar("const.one", 1.0);
                let scaled = self.g.node("Div", &format!("{node}.div"), &[x, &sqrt2], vec![]);
                let erf = self.g.node("Erf", &format!("{node}.erf"), &[&scaled], vec![]);
                let plus = self.g.node("Add", &format!("{node}.add"), &[&erf, &one], vec![]);
                let xh = self.g.node("Mul", &format!("{node}.half"), &[x, &half], vec![]);
                self.g.node("Mul", node, &[&xh, &plus], vec![])
            }
            _ => {
                // gelu_new, gelu_pytorch_tanh, gelu_fast: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                let c = self.g.f32_scalar("const.sqrt_2_over_pi", (2.0f64 / std::f64::consts::PI).sqrt() as f32);
                let k = self.g.f32_scalar("const.gelu_cubic", 0.044715);
                let half = self.g.f32_scalar("const.half", 0.5);
                let one = self.g.f32_scalar("const.one", 1.0);
                let three = self.g.f32_scalar("const.three", 3.0);
                let cube = self.g.node("Pow", &format!("{node}.cube"), &[x, &three], vec![]);
                let kc = self.g.node("Mul", &format!("{node}.cubic"), &[&cube, &k], vec![]);
                let inner = self.g.node("Add", &format!("{node}.inner"), &[x, &kc], vec![]);
                let arg = self.g.node("Mul", &format!("{node}.arg"), &[&inner, &c], vec![]);
                let t = self.g.node("Tanh", &format!("{node}.tanh"), &[&arg], vec![]);
                let plus = self.g.node("Add", &format!("{node}.add"), &[&t, &one], vec![]);
                let xh = self.g.node("Mul", &format!("{node}.half"), &[x, &half], vec![]);
                self.g.node("Mul", node, &[&xh, &plus], vec![])
            }
        }
    }

    fn embeddings(&mut self, input_ids: &str, token_type_ids: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (e, h) = (c.embedding_size, c.hidden_size);
        let hf = "mobilebert.embeddings";
        let table = self.param(&format!("{hf}.word_embeddings.weight"), &[c.vocab_size, e])?;
        let mut x = self.g.node("Gather", "embeddings.word", &[&table, input_ids], vec![("axis", Attr::Int(0))]);
        let mut width = e;
        if c.trigram_input {
            // cat([x[:, 1:] padded after, x, x[:, :-1] padded before], dim=2)
            let one = self.g.i64_constant("const.i64.1", &[1], &[1]);
            let zero = self.g.i64_constant("const.i64.0", &[1], &[0]);
            let minus_one = self.g.i64_constant("const.i64.-1", &[1], &[-1]);
            let end = self.g.i64_constant("const.i64.max", &[1], &[i64::MAX]);
            let next = self.g.node("Slice", "embeddings.trigram.next", &[&x, &one, &end, &one], vec![]);
            let pad_after = self.g.i64_constant("const.pads.after", &[6], &[0, 0, 0, 0, 1, 0]);
            let next = self.g.node("Pad", "embeddings.trigram.next.pad", &[&next, &pad_after], vec![]);
            let prev = self.g.node("Slice", "embeddings.trigram.prev", &[&x, &zero, &minus_one, &one], vec![]);
            let pad_before = self.g.i64_constant("const.pads.before", &[6], &[0, 1, 0, 0, 0, 0]);
            let prev = self.g.node("Pad", "embeddings.trigram.prev.pad", &[&prev, &pad_before], vec![]);
            x = self.g.node("Concat", "embeddings.trigram", &[&next, &x, &prev], vec![("axis", Attr::Int(2))]);
            width = 3 * e;
        }
        if c.trigram_input || e != h {
            x = self.linear(&x, &format!("{hf}.embedding_transformation"), "embeddings.transformation", width, h)?;
        }
        let positions = self.param(&format!("{hf}.position_embeddings.weight"), &[c.max_position_embeddings, h])?;
        let seq_len = self.g.node("Shape", "embeddings.sequence_length", &[input_ids], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))]);
        let zero = self.g.i64_constant("const.i64.0", &[1], &[0]);
        let position = self.g.node("Slice", "embeddings.position", &[&positions, &zero, &seq_len, &zero], vec![]);
        let types = self.param(&format!("{hf}.token_type_embeddings.weight"), &[c.type_vocab_size, h])?;
        let token_type = self.g.node("Gather", "embeddings.token_type", &[&types, token_type_ids], vec![("axis", Attr::Int(0))]);
        let sum = self.g.node("Add", "embeddings.add_position", &[&x, &position], vec![]);
        let sum = self.g.node("Add", "embeddings.add_token_type", &[&sum, &token_type], vec![]);
        self.norm(&sum, &format!("{hf}.LayerNorm"), "embeddings.norm", h, TORCH_DEFAULT_LAYER_NORM_EPS)
    }

    /// (1 - mask) * ATTENTION_MASK_VALUE, shaped [batch, 1, 1, sequence] for every layer.
    fn attention_bias(&mut self, attention_mask: &str) -> String {
        let mask = self.g.node("Cast", "attention_mask.float", &[attention_mask], vec![("to", Attr::Int(DataType::Float as i64))]);
        let one = self.g.f32_scalar("const.one", 1.0);
        let inverted = self.g.node("Sub", "attention_mask.inverted", &[&one, &mask], vec![]);
        let value = self.g.f32_scalar("const.attention_mask_value", ATTENTION_MASK_VALUE);
        let bias = self.g.node("Mul", "attention_mask.bias", &[&inverted, &value], vec![]);
        let axes = self.g.i64_constant("const.axes.1_2", &[2], &[1, 2]);
        self.g.node("Unsqueeze", "attention_mask.bias.unsqueeze", &[&bias, &axes], vec![])
    }

    fn attention(&mut self, l: usize, q_in: &str, k_in: &str, v_in: &str, bias: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (t, heads, d) = (c.true_hidden_size(), c.num_attention_heads, c.head_size());
        let all = heads * d;
        let v_width = if c.use_bottleneck_attention { t } else { c.hidden_size };
        let hf = format!("mobilebert.encoder.layer.{l}.attention.self");
        let n = format!("layer.{l}.attention");
        let q = self.linear(q_in, &format!("{hf}.query"), &format!("{n}.query"), t, all)?;
        let k = self.linear(k_in, &format!("{hf}.key"), &format!("{n}.key"), t, all)?;
        let v = self.linear(v_in, &format!("{hf}.value"), &format!("{n}.value"), v_width, all)?;
        let split = self.g.i64_constant(&format!("const.shape.heads.{heads}x{d}"), &[4], &[0, 0, heads as i64, d as i64]);
        let heads_of = |g: &mut GraphBuilder, x: &str, name: &str, perm: Vec<i64>| {
            let r = g.node("Reshape", &format!("{n}.{name}.heads"), &[x, &split], vec![]);
            g.node("Transpose", &format!("{n}.{name}.transpose"), &[&r], vec![("perm", Attr::Ints(perm))])
        };
        let q = heads_of(&mut self.g, &q, "query", vec![0, 2, 1, 3]);
        let k = heads_of(&mut self.g, &k, "key", vec![0, 2, 3, 1]);
        let v = heads_of(&mut self.g, &v, "value", vec![0, 2, 1, 3]);
        let scores = self.g.node("MatMul", &format!("{n}.scores"), &[&q, &k], vec![]);
        let scale = self.g.f32_scalar(&format!("const.sqrt_head_size.{d}"), (d as f64).sqrt() as f32);
        let scores = self.g.node("Div", &format!("{n}.scores.scale"), &[&scores, &scale], vec![]);
        let scores = self.g.node("Add", &format!("{n}.scores.mask"), &[&scores, bias], vec![]);
        let probs = self.g.node("Softmax", &format!("{n}.softmax"), &[&scores], vec![("axis", Attr::Int(-1))]);
        let context = self.g.node("MatMul", &format!("{n}.context"), &[&probs, &v], vec![]);
        let context = self.g.node("Transpose", &format!("{n}.context.transpose"), &[&context], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let merge = self.g.i64_constant(&format!("const.shape.merge.{all}"), &[3], &[0, 0, all as i64]);
        Ok(self.g.node("Reshape", &format!("{n}.context.merge"), &[&context, &merge], vec![]))
    }

    fn layer(&mut self, l: usize, hidden: &str, bias: &str) -> Result<String, EmitError> {
        let c = self.config;
        let (h, t, eps) = (c.hidden_size, c.true_hidden_size(), c.layer_norm_eps);
        let hf = format!("mobilebert.encoder.layer.{l}");
        let n = format!("layer.{l}");
        let (q_in, k_in, v_in, layer_input) = if c.use_bottleneck {
            let input = self.linear(hidden, &format!("{hf}.bottleneck.input.dense"), &format!("{n}.bottleneck.input"), h, t)?;
            let input = self.norm(&input, &format!("{hf}.bottleneck.input.LayerNorm"), &format!("{n}.bottleneck.input.norm"), t, eps)?;
            if c.use_bottleneck_attention {
                (input.clone(), input.clone(), input.clone(), input)
            } else if c.key_query_shared_bottleneck {
                let shared = self.linear(hidden, &format!("{hf}.bottleneck.attention.dense"), &format!("{n}.bottleneck.attention"), h, t)?;
                let shared = self.norm(&shared, &format!("{hf}.bottleneck.attention.LayerNorm"), &format!("{n}.bottleneck.attention.norm"), t, eps)?;
                (shared.clone(), shared, hidden.to_string(), input)
            } else {
                (hidden.to_string(), hidden.to_string(), hidden.to_string(), input)
            }
        } else {
            (hidden.to_string(), hidden.to_string(), hidden.to_string(), hidden.to_string())
        };
        let context = self.attention(l, &q_in, &k_in, &v_in, bias)?;
        let out = self.linear(&context, &format!("{hf}.attention.output.dense"), &format!("{n}.attention.output"), t, t)?;
        let out = self.g.node("Add", &format!("{n}.attention.output.residual"), &[&out, &layer_input], vec![]);
        let mut x = self.norm(&out, &format!("{hf}.attention.output.LayerNorm"), &format!("{n}.attention.output.norm"), t, eps)?;

        for f in 0..c.num_feedforward_networks - 1 {
            let fhf = format!("{hf}.ffn.{f}");
            let fname = format!("{n}.ffn.{f}");
            let inner = self.linear(&x, &format!("{fhf}.intermediate.dense"), &format!("{fname}.intermediate"), t, c.intermediate_size)?;
            let inner = self.activation(&inner, &format!("{fname}.intermediate.act"));
            let out = self.linear(&inner, &format!("{fhf}.output.dense"), &format!("{fname}.output"), c.intermediate_size, t)?;
            let out = self.g.node("Add", &format!("{fname}.output.residual"), &[&out, &x], vec![]);
            x = self.norm(&out, &format!("{fhf}.output.LayerNorm"), &format!("{fname}.output.norm"), t, eps)?;
        }

        let inner = self.linear(&x, &format!("{hf}.intermediate.dense"), &format!("{n}.intermediate"), t, c.intermediate_size)?;
        let inner = self.activation(&inner, &format!("{n}.intermediate.act"));
        let out = self.linear(&inner, &format!("{hf}.output.dense"), &format!("{n}.output"), c.intermediate_size, t)?;
        let out = self.g.node("Add", &format!("{n}.output.residual"), &[&out, &x], vec![]);
        let out = self.norm(&out, &format!("{hf}.output.LayerNorm"), &format!("{n}.output.norm"), t, TORCH_DEFAULT_LAYER_NORM_EPS)?;
        if !c.use_bottleneck {
            return Ok(out);
        }
        let up = self.linear(&out, &format!("{hf}.output.bottleneck.dense"), &format!("{n}.output.bottleneck"), t, h)?;
        let up = self.g.node("Add", &format!("{n}.output.bottleneck.residual"), &[&up, hidden], vec![]);
        self.norm(&up, &format!("{hf}.output.bottleneck.LayerNorm"), &format!("{n}.output.bottleneck.norm"), h, eps)
    }
}

/// Emits the MobileBERT QA graph of `checkpoint` at `opset`, with `metadata` as metadata_props.
pub fn emit(checkpoint: &Checkpoint, options: EmitOptions, metadata: Vec<(String, String)>) -> Result<Emitted, EmitError> {
    let opset = options.opset;
    if !SUPPORTED_OPSETS.contains(&opset) {
        return Err(EmitError::Opset(opset));
    }
    let config = &checkpoint.config;
    let mut e = Emitter {
        g: GraphBuilder::new(),
        checkpoint,
        config,
        used: BTreeSet::new(),
        parameters: 0,
        allow_non_finite: options.allow_non_finite,
        non_finite: Vec::new(),
    };
    let dims = [Dim::Symbol("batch"), Dim::Symbol("sequence")];
    let input_ids = e.g.input("input_ids", DataType::Int64, &dims);
    let attention_mask = e.g.input("attention_mask", DataType::Int64, &dims);
    let token_type_ids = e.g.input("token_type_ids", DataType::Int64, &dims);

    let mut hidden = e.embeddings(&input_ids, &token_type_ids)?;
    let bias = e.attention_bias(&attention_mask);
    for l in 0..config.num_hidden_layers {
        hidden = e.layer(l, &hidden, &bias)?;
    }
    let logits = e.linear(&hidden, "qa_outputs", "qa_outputs", config.hidden_size, 2)?;
    for (index, name) in ["start_logits", "end_logits"].into_iter().enumerate() {
        let at = e.g.i64_constant(&format!("const.i64.scalar.{index}"), &[], &[index as i64]);
        e.g.node("Gather", name, &[&logits, &at], vec![("axis", Attr::Int(2))]);
        e.g.output(name, DataType::Float, &dims);
    }

    let unused_tensors = checkpoint.weights.names().filter(|n| !e.used.contains(*n)).map(String::from).collect();
    Ok(Emitted {
        tensors_used: e.used.len(),
        parameters: e.parameters,
        unused_tensors,
        non_finite: e.non_finite,
        model: e.g.finish("mobilebert_qa", opset, metadata),
    })
}
