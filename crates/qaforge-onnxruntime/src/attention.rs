//! Scaled dot-product attention fused into ONNX Runtime's attention kernels, found by structure:
//!
//! ```text
//! q → Reshape[·,·,H,d] → Transpose(0,2,1,3) ─┐
//! k → Reshape[·,·,H,d] → Transpose(0,2,3,1) ─┴ MatMul → Div(√d) | Mul(1/√d) → Add(mask bias) → Softmax ─┐
//! v → Reshape[·,·,H,d] → Transpose(0,2,1,3) ──────────────────────────────────────────────────────────┴ MatMul
//!   → Transpose(0,2,1,3) → Reshape[·,·,H·d]
//! ```
//!
//! (the key may also be split as Transpose(0,2,1,3) then Transpose(0,1,3,2)), where the mask bias
//! is `(1 - mask) × c` unsqueezed to `[batch, 1, 1, keys]` from an integer graph input (in any
//! order of Cast, Unsqueeze, Sub and Mul). ONNX Runtime's kernels take that mask as it is
//! (1 keeps a key, 0 adds `mask_filter_value` = c to its scores), so the fused op computes the
//! same function.
//!
//! - When query, key and value are three linear layers of one input (BERT, DistilBERT, RoBERTa,
//!   ELECTRA, MobileBERT with bottleneck attention), the fusion is `com.microsoft.Attention` with
//!   the three weight matrices packed into one: one GEMM for the three projections.
//! - Otherwise (MobileBERT's shared key/query bottleneck, where the value projection reads the
//!   layer input; int8 projections) it is ONNX's own `Attention` (opset 23) on the projected
//!   tensors, the padding mask's bias expanded once to `[batch, 1, keys, keys]` (the form ONNX
//!   Runtime's CPU kernel reads) and shared by every layer. ONNX Runtime 1.32.0 runs it 1.27× as
//!   fast as `com.microsoft.MultiHeadAttention` at MobileBERT's width (1.14× on 1.23.2) with
//!   identical outputs (`bench/ort_attention_kernels.py`). It needs the graph at opset 23, so it
//!   is used only where every standard op of the graph means the same there
//!   ([`OPSET_23_SAME_MEANING`]: a user's export at an older opset may hold ops whose form changed,
//!   such as the Reduce ops whose `axes` became an input at 18); elsewhere the fusion is
//!   `com.microsoft.MultiHeadAttention`, with the projections' biases packed into its `bias` input
//!   where each is a constant addition.

use std::collections::HashMap;

use qaforge_onnx::builder::{f32_tensor, i64_tensor};
use qaforge_onnx::edit::{float_attribute, int_attr, int_attribute, ints_attr, is_default_domain, node};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, NodeProto};

use qaforge_onnx::edit::Rewrite;
use qaforge_onnx::edit::MS_DOMAIN;

use crate::{FuseError, Pass};

/// The fusion (see the module documentation).
pub struct AttentionFusion;

fn perm(rw: &Rewrite<'_>, i: usize) -> Option<Vec<i64>> {
    ints_attr(rw.node(i), "perm").map(<[i64]>::to_vec)
}

/// A tensor split into heads: the tensor before the split, heads, head size.
struct Split {
    input: String,
    heads: usize,
    head_size: usize,
}

/// `Reshape(x, [a, b, H, d])` with a, b each 0 (copy) or -1 (infer, at most one).
fn reshape_to_heads(rw: &Rewrite<'_>, tensor: &str) -> Option<Split> {
    let r = rw.producer_op(tensor, "Reshape")?;
    let shape = rw.int_constant(rw.node(r).input.get(1)?)?;
    let [a, b, h, d] = shape[..] else { return None };
    let copy_or_infer = |v: i64| v == 0 || v == -1;
    if !(copy_or_infer(a) && copy_or_infer(b) && !(a == -1 && b == -1) && h > 0 && d > 0)
        || !rw.only_read_by(tensor, rw.consumers(tensor).first().copied()?)
    {
        return None;
    }
    Some(Split { input: rw.node(r).input[0].clone(), heads: h as usize, head_size: d as usize })
}

/// The transposes of one split: `perms` from the last back to the first (each output read once).
fn split_heads(rw: &Rewrite<'_>, tensor: &str, perms: &[&[i64]]) -> Option<Split> {
    let mut t = tensor.to_string();
    for p in perms {
        let tr = rw.producer_op(&t, "Transpose")?;
        if perm(rw, tr).as_deref() != Some(*p) || !rw.only_read_by(&t, rw.consumers(&t).first().copied()?) {
            return None;
        }
        t = rw.node(tr).input[0].clone();
    }
    reshape_to_heads(rw, &t)
}

/// The integer graph input a mask bias is computed from and the bias of masked keys, if `bias`
/// is `(1 - mask) × c` shaped `[batch, 1, 1, keys]` (see the module documentation).
fn trace_mask(rw: &Rewrite<'_>, bias: &str) -> Option<(String, f32)> {
    // bias = a × y + b for the tensor y reached so far, walking back.
    let (mut a, mut b) = (1f64, 0f64);
    let mut unsqueezes: Vec<Vec<i64>> = vec![];
    let mut t = bias.to_string();
    for _ in 0..16 {
        if rw.graph.input.iter().any(|i| i.name == t) {
            let elem = rw.input_elem_type(&t)?;
            if elem != DataType::Int64 as i32 && elem != DataType::Int32 as i32 {
                return None;
            }
            // Forward: [batch, keys] with the unsqueezes applied in graph order.
            let mut dims = vec!["batch", "keys"];
            for axes in unsqueezes.iter().rev() {
                let rank = (dims.len() + axes.len()) as i64;
                let mut axes: Vec<usize> =
                    axes.iter().map(|&x| if x < 0 { (x + rank) as usize } else { x as usize }).collect();
                axes.sort_unstable();
                for x in axes {
                    if x > dims.len() {
                        return None;
                    }
                    dims.insert(x, "1");
                }
            }
            let masked = b as f32;
            let exact = (a + b).abs() <= f64::EPSILON * b.abs();
            return (dims == ["batch", "1", "1", "keys"] && exact && masked != 0.0 && masked.is_finite())
                .then_some((t, masked));
        }
        let p = rw.producer(&t)?;
        let n = rw.node(p);
        if !is_default_domain(n) {
            return None;
        }
        let constant_operand = |n: &NodeProto| -> Option<(usize, f64)> {
            let [x, y] = n.input.as_slice() else { return None };
            match (rw.f32_scalar(x), rw.f32_scalar(y)) {
                (Some(c), None) => Some((0, c as f64)),
                (None, Some(c)) => Some((1, c as f64)),
                _ => None,
            }
        };
        t = match n.op_type.as_str() {
            "Cast" | "Identity" => n.input[0].clone(),
            "Unsqueeze" => {
                let axes = match n.input.get(1) {
                    Some(axes) => rw.int_constant(axes)?,
                    None => ints_attr(n, "axes")?.to_vec(),
                };
                unsqueezes.push(axes);
                n.input[0].clone()
            }
            "Mul" => {
                let (at, c) = constant_operand(n)?;
                a *= c;
                n.input[1 - at].clone()
            }
            "Add" => {
                let (at, c) = constant_operand(n)?;
                b += a * c;
                n.input[1 - at].clone()
            }
            "Sub" => {
                let (at, c) = constant_operand(n)?;
                if at == 0 {
                    // c - y
                    b += a * c;
                    a = -a;
                } else {
                    b -= a * c;
                }
                n.input[1 - at].clone()
            }
            _ => return None,
        };
    }
    None
}

/// A linear layer `MatMul(x, W) + b` producing `tensor`: (x, the name of W, b).
fn linear(rw: &Rewrite<'_>, tensor: &str) -> Option<(String, String, Vec<f32>)> {
    let add = rw.producer_op(tensor, "Add")?;
    let product = rw.node(add).input.iter().find(|i| rw.producer_op(i, "MatMul").is_some())?.clone();
    let m = rw.producer_op(&product, "MatMul")?;
    let (_, _, cols) = rw.f32_matrix(&rw.node(m).input[1])?;
    let b = rw.other_input(add, &product).and_then(|b| rw.f32_vector(&b, Some(cols)))?;
    rw.only_read_by(&product, add).then(|| (rw.node(m).input[0].clone(), rw.node(m).input[1].clone(), b))
}

/// A constant bias addition producing `tensor`: (the other operand, the bias).
fn bias_add(rw: &Rewrite<'_>, tensor: &str, width: usize) -> Option<(String, Vec<f32>)> {
    let add = rw.producer_op(tensor, "Add")?;
    let [x, y] = rw.node(add).input.as_slice() else { return None };
    let (input, bias) = match (rw.f32_vector(x, Some(width)), rw.f32_vector(y, Some(width))) {
        (None, Some(b)) => (x.clone(), b),
        (Some(b), None) => (y.clone(), b),
        _ => return None,
    };
    Some((input, bias))
}

/// The opset ONNX's own `Attention` needs.
pub const STANDARD_ATTENTION_OPSET: i64 = 23;

/// Standard ops whose every version from opset 13 to 23 means the same for the same attributes and
/// inputs (later versions only widen the types, or add attributes and inputs whose defaults keep
/// the earlier meaning), or that first appear after 13: a graph of these alone may be raised to
/// opset 23 unchanged. Deliberately short; anything else keeps the graph at its opset.
pub const OPSET_23_SAME_MEANING: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Attention",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Cos",
    "CumSum",
    "DequantizeLinear",
    "Div",
    "DynamicQuantizeLinear",
    "Einsum",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "Log",
    "MatMul",
    "MatMulInteger",
    "Max",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "QuantizeLinear",
    "Range",
    "Reciprocal",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// Whether the graph may be raised to opset 23 for [`STANDARD_ATTENTION_OPSET`]'s `Attention`.
fn standard_attention_allowed(rw: &Rewrite<'_>) -> bool {
    rw.graph.node.iter().filter(|n| is_default_domain(n)).all(|n| OPSET_23_SAME_MEANING.contains(&n.op_type.as_str()))
}

/// `bias` (`[batch, 1, 1, keys]`) expanded to `[batch, 1, keys, keys]`, the keys counted from
/// `mask_input` (`[batch, keys]`); the nodes go before node `at`. Returns the expanded tensor.
fn expanded_mask_bias(rw: &mut Rewrite<'_>, at: usize, bias: &str, mask_input: &str) -> String {
    let keys = rw.names.fresh(&format!("{bias}.keys"));
    let shape_node =
        node("Shape", &keys, &[mask_input], &[&keys], vec![int_attribute("start", 1), int_attribute("end", 2)]);
    let ones = rw.add_initializer(&format!("{bias}.ones"), i64_tensor("", &[2], &[1, 1]));
    let one = rw.add_initializer(&format!("{bias}.one"), i64_tensor("", &[1], &[1]));
    let target = rw.names.fresh(&format!("{bias}.target"));
    let concat = node("Concat", &target, &[&ones, &keys, &one], &[&target], vec![int_attribute("axis", 0)]);
    let expanded = rw.names.fresh(&format!("{bias}.per_query"));
    let expand = node("Expand", &expanded, &[bias, &target], &[&expanded], vec![]);
    for n in [shape_node, concat, expand] {
        rw.insert_before(at, n);
    }
    expanded
}

impl Pass for AttentionFusion {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn describe(&self) -> &'static str {
        "scaled dot-product attention with a padding mask fused into com.microsoft Attention (packed QKV), ONNX Attention (opset 23) or com.microsoft MultiHeadAttention"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        // The int32 mask each integer mask input is cast to, and each mask bias expanded for
        // ONNX Attention, shared by every layer.
        let mut masks: HashMap<String, String> = HashMap::new();
        let mut expanded_biases: HashMap<String, String> = HashMap::new();
        let standard = standard_attention_allowed(rw);
        rw.each_live(&["Softmax"], |rw, softmax| {
            let n = rw.node(softmax);
            let axis = int_attr(n, "axis").unwrap_or(-1);
            if axis != -1 && axis != 3 {
                return Ok(false);
            }
            let Some(m) = self.match_at(rw, softmax) else { return Ok(false) };
            let (query, key, value) = (&m.q, &m.k, &m.v);
            if (key.heads, key.head_size) != (query.heads, query.head_size)
                || (value.heads, value.head_size) != (query.heads, query.head_size)
            {
                return Ok(false);
            }
            let (heads, width) = (query.heads, query.heads * query.head_size);
            let projections = [linear(rw, &query.input), linear(rw, &key.input), linear(rw, &value.input)];
            let packed =
                matches!(&projections, [Some((xq, ..)), Some((xk, ..)), Some((xv, ..))] if xq == xk && xk == xv);
            let output = rw.node(m.output_node).output[0].clone();
            if standard && !packed {
                let bias = match expanded_biases.get(&m.mask_bias) {
                    Some(b) => b.clone(),
                    None => {
                        let b = expanded_mask_bias(rw, m.output_node, &m.mask_bias, &m.mask_input);
                        expanded_biases.insert(m.mask_bias.clone(), b.clone());
                        b
                    }
                };
                let base = rw.node(m.output_node).name.clone();
                let name = rw.names.fresh(&format!("{base}.fused"));
                let attributes = vec![
                    int_attribute("q_num_heads", heads as i64),
                    int_attribute("kv_num_heads", heads as i64),
                    float_attribute("scale", m.scale),
                ];
                rw.insert_before(
                    m.output_node,
                    node("Attention", &name, &[&query.input, &key.input, &value.input, &bias], &[&output], attributes),
                );
                rw.remove([m.output_node]);
                return Ok(true);
            }
            let mask = match masks.get(&m.mask_input) {
                Some(mask) => mask.clone(),
                None => {
                    let mask = if rw.input_elem_type(&m.mask_input) == Some(DataType::Int32 as i32) {
                        m.mask_input.clone()
                    } else {
                        let name = rw.names.fresh(&format!("{}.int32", m.mask_input));
                        let cast = node(
                            "Cast",
                            &name,
                            &[&m.mask_input],
                            &[&name],
                            vec![int_attribute("to", DataType::Int32 as i64)],
                        );
                        rw.insert_before(m.output_node, cast);
                        name
                    };
                    masks.insert(m.mask_input.clone(), mask.clone());
                    mask
                }
            };
            let base = rw.node(m.output_node).name.clone();
            let attributes = |extra: Vec<AttributeProto>| {
                let mut a = vec![
                    int_attribute("num_heads", heads as i64),
                    float_attribute("scale", m.scale),
                    float_attribute("mask_filter_value", m.masked),
                ];
                a.extend(extra);
                a
            };
            let fused_node = match projections {
                [Some((xq, wq, bq)), Some((xk, wk, bk)), Some((xv, wv, bv))] if xq == xk && xk == xv => {
                    // One packed [in, 3 × width] weight: row i is Wq[i] ‖ Wk[i] ‖ Wv[i].
                    let (q, rows, _) =
                        rw.f32_matrix(&wq).ok_or_else(|| FuseError::Graph(format!("`{wq}` is not a float matrix")))?;
                    let (k, k_rows, _) =
                        rw.f32_matrix(&wk).ok_or_else(|| FuseError::Graph(format!("`{wk}` is not a float matrix")))?;
                    let (v, v_rows, _) =
                        rw.f32_matrix(&wv).ok_or_else(|| FuseError::Graph(format!("`{wv}` is not a float matrix")))?;
                    if bq.len() != width || bk.len() != width || bv.len() != width || k_rows != rows || v_rows != rows {
                        return Ok(false);
                    }
                    let mut packed = Vec::with_capacity(rows * 3 * width);
                    for r in 0..rows {
                        for w in [&q, &k, &v] {
                            packed.extend_from_slice(&w[r * width..(r + 1) * width]);
                        }
                    }
                    let bias: Vec<f32> = bq.iter().chain(&bk).chain(&bv).copied().collect();
                    let w =
                        rw.add_initializer(&format!("{base}.qkv_weight"), f32_tensor("", &[rows, 3 * width], &packed));
                    let b = rw.add_initializer(&format!("{base}.qkv_bias"), f32_tensor("", &[3 * width], &bias));
                    let name = rw.names.fresh(&format!("{base}.fused"));
                    NodeProto {
                        domain: MS_DOMAIN.into(),
                        ..node("Attention", &name, &[&xq, &w, &b, &mask], &[&output], attributes(vec![]))
                    }
                }
                _ => {
                    let biased = [
                        bias_add(rw, &query.input, width),
                        bias_add(rw, &key.input, width),
                        bias_add(rw, &value.input, width),
                    ];
                    let name = rw.names.fresh(&format!("{base}.fused"));
                    let op = |inputs: &[&str]| NodeProto {
                        domain: MS_DOMAIN.into(),
                        ..node("MultiHeadAttention", &name, inputs, &[&output], attributes(vec![]))
                    };
                    match biased {
                        [Some((pq, bq)), Some((pk, bk)), Some((pv, bv))] => {
                            let bias: Vec<f32> = bq.iter().chain(&bk).chain(&bv).copied().collect();
                            let b =
                                rw.add_initializer(&format!("{base}.qkv_bias"), f32_tensor("", &[3 * width], &bias));
                            op(&[&pq, &pk, &pv, &b, &mask])
                        }
                        _ => op(&[&query.input, &key.input, &value.input, "", &mask]),
                    }
                }
            };
            rw.insert_before(m.output_node, fused_node);
            rw.remove([m.output_node]);
            Ok(true)
        })
    }
}

/// One matched attention.
struct Match {
    q: Split,
    k: Split,
    v: Split,
    scale: f32,
    mask_input: String,
    masked: f32,
    /// The mask bias tensor, `[batch, 1, 1, keys]`.
    mask_bias: String,
    /// The Reshape merging the heads, whose output the fused op produces.
    output_node: usize,
}

impl AttentionFusion {
    fn match_at(&self, rw: &Rewrite<'_>, softmax: usize) -> Option<Match> {
        let once = |t: &str| rw.consumers(t).first().copied().filter(|&c| rw.only_read_by(t, c));
        // Softmax → MatMul(·, V) → Transpose(0,2,1,3) → Reshape[·,·,H·d].
        let probs = rw.node(softmax).output[0].clone();
        let context = once(&probs).filter(|&c| rw.node(c).op_type == "MatMul" && rw.node(c).input[0] == probs)?;
        let v = split_heads(rw, &rw.node(context).input[1], &[&[0, 2, 1, 3]])?;
        let merged = once(&rw.node(context).output[0])
            .filter(|&t| rw.node(t).op_type == "Transpose" && perm(rw, t).as_deref() == Some(&[0, 2, 1, 3][..]))?;
        let output_node = once(&rw.node(merged).output[0]).filter(|&r| rw.node(r).op_type == "Reshape")?;
        let merge_shape = rw.int_constant(rw.node(output_node).input.get(1)?)?;
        let [a, b, width] = merge_shape[..] else { return None };
        if !((a == 0 || a == -1)
            && (b == 0 || b == -1)
            && !(a == -1 && b == -1)
            && width == (v.heads * v.head_size) as i64)
        {
            return None;
        }
        // Add(scaled scores, mask bias) → Softmax.
        let add = rw.producer_op(&rw.node(softmax).input[0], "Add")?;
        if !rw.only_read_by(&rw.node(softmax).input[0], softmax) {
            return None;
        }
        let [x, y] = rw.node(add).input.as_slice() else { return None };
        let ((mask_input, masked), scaled, mask_bias) = match (trace_mask(rw, x), trace_mask(rw, y)) {
            (None, Some(m)) => (m, x.clone(), y.clone()),
            (Some(m), None) => (m, y.clone(), x.clone()),
            _ => return None,
        };
        // Div(scores, √d) or Mul(scores, 1/√d).
        let s = rw.producer(&scaled).filter(|_| rw.only_read_by(&scaled, add))?;
        let sn = rw.node(s);
        if !is_default_domain(sn) || sn.input.len() != 2 {
            return None;
        }
        let (scores, scale) = match sn.op_type.as_str() {
            "Div" => (sn.input[0].clone(), 1.0 / rw.f32_scalar(&sn.input[1])?),
            "Mul" => match (rw.f32_scalar(&sn.input[0]), rw.f32_scalar(&sn.input[1])) {
                (Some(c), None) => (sn.input[1].clone(), c),
                (None, Some(c)) => (sn.input[0].clone(), c),
                _ => return None,
            },
            _ => return None,
        };
        if !(scale.is_finite() && scale > 0.0) {
            return None;
        }
        let qk = rw.producer_op(&scores, "MatMul").filter(|_| rw.only_read_by(&scores, s))?;
        let q = split_heads(rw, &rw.node(qk).input[0], &[&[0, 2, 1, 3]])?;
        let k_input = &rw.node(qk).input[1];
        let k = split_heads(rw, k_input, &[&[0, 2, 3, 1]])
            .or_else(|| split_heads(rw, k_input, &[&[0, 1, 3, 2], &[0, 2, 1, 3]]))?;
        Some(Match { q, k, v, scale, mask_input, masked, mask_bias, output_node })
    }
}

#[cfg(test)]
mod tests {
    use qaforge_onnx::builder::{Attr, Dim, GraphBuilder};
    use tract_onnx::pb::tensor_proto::DataType;

    use super::trace_mask;
    use qaforge_onnx::edit::Rewrite;

    fn traced(build: impl FnOnce(&mut GraphBuilder, &str) -> String) -> Option<(String, f32)> {
        let mut g = GraphBuilder::new();
        let mask = g.input("attention_mask", DataType::Int64, &[Dim::Symbol("batch"), Dim::Symbol("sequence")]);
        let bias = build(&mut g, &mask);
        g.output(&bias, DataType::Float, &[]);
        let mut model = g.finish("mask", 17, vec![]);
        let rw = Rewrite::new(model.graph.as_mut().unwrap());
        trace_mask(&rw, &bias)
    }

    #[test]
    fn mask_biases_are_recognised_in_every_exporter_order() {
        // qaforge: Cast → Sub(1, ·) → Mul(-10000) → Unsqueeze([1, 2]).
        let ours = traced(|g, m| {
            let f = g.node("Cast", "cast", &[m], vec![("to", Attr::Int(DataType::Float as i64))]);
            let one = g.f32_scalar("one", 1.0);
            let inv = g.node("Sub", "inv", &[&one, &f], vec![]);
            let c = g.f32_scalar("c", -10000.0);
            let b = g.node("Mul", "bias", &[&inv, &c], vec![]);
            let axes = g.i64_constant("axes", &[2], &[1, 2]);
            g.node("Unsqueeze", "unsq", &[&b, &axes], vec![])
        });
        assert_eq!(ours, Some(("attention_mask".to_string(), -10000.0)));
        // transformers' TorchScript export: Unsqueeze(1) → Unsqueeze(2) → Cast → Sub(1, ·) → Mul(finfo.min).
        let torch = traced(|g, m| {
            let a1 = g.i64_constant("a1", &[1], &[1]);
            let a2 = g.i64_constant("a2", &[1], &[2]);
            let u1 = g.node("Unsqueeze", "u1", &[m, &a1], vec![]);
            let u2 = g.node("Unsqueeze", "u2", &[&u1, &a2], vec![]);
            let f = g.node("Cast", "cast", &[&u2], vec![("to", Attr::Int(DataType::Float as i64))]);
            let one = g.f32_scalar("one", 1.0);
            let inv = g.node("Sub", "inv", &[&one, &f], vec![]);
            let c = g.f32_scalar("c", f32::MIN);
            g.node("Mul", "bias", &[&c, &inv], vec![])
        });
        assert_eq!(torch, Some(("attention_mask".to_string(), f32::MIN)));
    }

    #[test]
    fn other_functions_of_the_mask_are_not_masks() {
        // mask × c: keeps masked keys at 0 and adds c to the others.
        let scaled = traced(|g, m| {
            let f = g.node("Cast", "cast", &[m], vec![("to", Attr::Int(DataType::Float as i64))]);
            let c = g.f32_scalar("c", -10000.0);
            let b = g.node("Mul", "bias", &[&f, &c], vec![]);
            let axes = g.i64_constant("axes", &[2], &[1, 2]);
            g.node("Unsqueeze", "unsq", &[&b, &axes], vec![])
        });
        assert_eq!(scaled, None);
        // [batch, 1, keys, 1]: the wrong axes.
        let transposed = traced(|g, m| {
            let f = g.node("Cast", "cast", &[m], vec![("to", Attr::Int(DataType::Float as i64))]);
            let one = g.f32_scalar("one", 1.0);
            let inv = g.node("Sub", "inv", &[&one, &f], vec![]);
            let c = g.f32_scalar("c", -10000.0);
            let b = g.node("Mul", "bias", &[&inv, &c], vec![]);
            let axes = g.i64_constant("axes", &[2], &[1, 3]);
            g.node("Unsqueeze", "unsq", &[&b, &axes], vec![])
        });
        assert_eq!(transposed, None);
    }
}
