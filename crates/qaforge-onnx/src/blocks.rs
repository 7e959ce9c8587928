//! What every architecture's emitter is built from, and the options and results of emission.
//! One architecture is one module beside this one (`mobilebert`, `bert`), each a config and one
//! function per block, calling these.

use std::collections::BTreeSet;

use qaforge_checkpoint::Checkpoint;
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

/// The graph under construction and the checkpoint it reads, with what every architecture's
/// emitter builds from: checkpoint tensors as initializers, `nn.Linear`, LayerNorm, activations,
/// the attention mask bias, multi-head attention and the QA head.
pub(crate) struct Blocks<'a> {
    /// The graph.
    pub g: GraphBuilder,
    checkpoint: &'a Checkpoint,
    used: BTreeSet<String>,
    parameters: usize,
    allow_non_finite: bool,
    non_finite: Vec<(String, usize)>,
}

impl<'a> Blocks<'a> {
    /// An empty graph reading `checkpoint`.
    pub fn new(checkpoint: &'a Checkpoint, options: EmitOptions) -> Self {
        Blocks {
            g: GraphBuilder::new(),
            checkpoint,
            used: BTreeSet::new(),
            parameters: 0,
            allow_non_finite: options.allow_non_finite,
            non_finite: Vec::new(),
        }
    }

    /// A float32 weight from the checkpoint, checked against the shape the config implies.
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmitError> {
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
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<String, EmitError> {
        let values = self.weight(name, shape)?;
        Ok(self.g.f32_initializer(name, shape, &values))
    }

    /// `nn.Linear(in, out)` at `hf` applied to `x`: MatMul by the transposed weight, then Add.
    pub fn linear(
        &mut self,
        x: &str,
        hf: &str,
        node: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<String, EmitError> {
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

    /// LayerNorm over the last axis.
    pub fn layer_norm(&mut self, x: &str, hf: &str, node: &str, width: usize, eps: f32) -> Result<String, EmitError> {
        let weight = self.param(&format!("{hf}.weight"), &[width])?;
        let bias = self.param(&format!("{hf}.bias"), &[width])?;
        Ok(self.g.node(
            "LayerNormalization",
            node,
            &[x, &weight, &bias],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
        ))
    }

    /// The activation `act` (one of SUPPORTED_ACTIVATIONS), exactly as transformers' ACT2FN computes it.
    pub fn activation(&mut self, x: &str, node: &str, act: &str) -> String {
        match act {
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

    /// (1 - mask) * ATTENTION_MASK_VALUE, shaped [batch, 1, 1, sequence] for every layer.
    pub fn attention_bias(&mut self, attention_mask: &str) -> String {
        let mask = self.g.node(
            "Cast",
            "attention_mask.float",
            &[attention_mask],
            vec![("to", Attr::Int(DataType::Float as i64))],
        );
        let one = self.g.f32_scalar("const.one", 1.0);
        let inverted = self.g.node("Sub", "attention_mask.inverted", &[&one, &mask], vec![]);
        let value = self.g.f32_scalar("const.attention_mask_value", ATTENTION_MASK_VALUE);
        let bias = self.g.node("Mul", "attention_mask.bias", &[&inverted, &value], vec![]);
        let axes = self.g.i64_constant("const.axes.1_2", &[2], &[1, 2]);
        self.g.node("Unsqueeze", "attention_mask.bias.unsqueeze", &[&bias, &axes], vec![])
    }

    /// Scaled dot-product attention of projected `q`, `k`, `v` (`[batch, sequence, heads * d]`)
    /// with the additive mask `bias`, merged back to `[batch, sequence, heads * d]`. Node names
    /// start with `n`.
    pub fn multi_head_attention(
        &mut self,
        n: &str,
        q: &str,
        k: &str,
        v: &str,
        heads: usize,
        d: usize,
        bias: &str,
    ) -> String {
        let all = heads * d;
        let split =
            self.g.i64_constant(&format!("const.shape.heads.{heads}x{d}"), &[4], &[0, 0, heads as i64, d as i64]);
        let heads_of = |g: &mut GraphBuilder, x: &str, name: &str, perm: Vec<i64>| {
            let r = g.node("Reshape", &format!("{n}.{name}.heads"), &[x, &split], vec![]);
            g.node("Transpose", &format!("{n}.{name}.transpose"), &[&r], vec![("perm", Attr::Ints(perm))])
        };
        let q = heads_of(&mut self.g, q, "query", vec![0, 2, 1, 3]);
        let k = heads_of(&mut self.g, k, "key", vec![0, 2, 3, 1]);
        let v = heads_of(&mut self.g, v, "value", vec![0, 2, 1, 3]);
        let scores = self.g.node("MatMul", &format!("{n}.scores"), &[&q, &k], vec![]);
        let scale = self.g.f32_scalar(&format!("const.sqrt_head_size.{d}"), (d as f64).sqrt() as f32);
        let scores = self.g.node("Div", &format!("{n}.scores.scale"), &[&scores, &scale], vec![]);
        let scores = self.g.node("Add", &format!("{n}.scores.mask"), &[&scores, bias], vec![]);
        let probs = self.g.node("Softmax", &format!("{n}.softmax"), &[&scores], vec![("axis", Attr::Int(-1))]);
        let context = self.g.node("MatMul", &format!("{n}.context"), &[&probs, &v], vec![]);
        let context = self.g.node(
            "Transpose",
            &format!("{n}.context.transpose"),
            &[&context],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merge = self.g.i64_constant(&format!("const.shape.merge.{all}"), &[3], &[0, 0, all as i64]);
        self.g.node("Reshape", &format!("{n}.context.merge"), &[&context, &merge], vec![])
    }

    /// The QA head (`qa_outputs`, `nn.Linear(width, 2)`) split into the graph's outputs
    /// `start_logits` and `end_logits`, `[batch, sequence]` each.
    pub fn qa_head(&mut self, hidden: &str, width: usize, dims: &[Dim]) -> Result<(), EmitError> {
        let logits = self.linear(hidden, "qa_outputs", "qa_outputs", width, 2)?;
        for (index, name) in ["start_logits", "end_logits"].into_iter().enumerate() {
            let at = self.g.i64_constant(&format!("const.i64.scalar.{index}"), &[], &[index as i64]);
            self.g.node("Gather", name, &[&logits, &at], vec![("axis", Attr::Int(2))]);
            self.g.output(name, DataType::Float, dims);
        }
        Ok(())
    }

    /// The finished model and what emission used of the checkpoint.
    pub fn finish(self, graph_name: &str, opset: i64, metadata: Vec<(String, String)>) -> Emitted {
        let unused_tensors =
            self.checkpoint.weights.names().filter(|n| !self.used.contains(*n)).map(String::from).collect();
        Emitted {
            tensors_used: self.used.len(),
            parameters: self.parameters,
            unused_tensors,
            non_finite: self.non_finite,
            model: self.g.finish(graph_name, opset, metadata),
        }
    }
}
