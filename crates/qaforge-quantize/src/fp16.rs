//! FP16: float16 weights and compute, float32 inputs and outputs, with the ops that overflow or
//! lose too much in float16 kept in float32 and Casts inserted wherever the two meet.

use std::collections::{BTreeSet, HashMap};

use half::f16;
use qaforge_onnx::edit::{f32_values, int_attr, int_attribute, node, tensor_attr, GraphIndex, Prune, Rewrite};
use qaforge_onnx::element_types;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto};

use crate::graph::{matching_pattern, KeptFloat, Reasons};
use crate::QuantizeError;

/// Ops kept in float32 by default, and why:
/// - LayerNormalization: its variance squares activations, which overflows float16 (max 65504)
///   once |x| > 256, and MobileBERT's residual stream is that large in places;
/// - Softmax: sums of exponentials over 384 positions lose most of float16's 11 bits;
/// - Pow: the cube in tanh-GELU overflows float16 for |x| > 40;
/// - ReduceMean, ReduceSum, Exp, Log, Sqrt: the same overflow and accumulation error in
///   graphs from other exporters (decomposed LayerNorm or Softmax).
pub const FP16_KEEP_FLOAT_OPS: &[&str] =
    &["LayerNormalization", "Softmax", "Pow", "ReduceMean", "ReduceSum", "Exp", "Log", "Sqrt"];

/// What the FP16 pass did.
#[derive(Debug, Default)]
pub struct Fp16Summary {
    /// Nodes computing in float16.
    pub half_nodes: Vec<String>,
    /// Float nodes kept in float32, with the reason.
    pub kept_float: Reasons,
    /// Cast nodes inserted at float16/float32 boundaries.
    pub casts: usize,
}

/// Converts the float32 graph of `model` to float16 in place, keeping the ops of
/// [`FP16_KEEP_FLOAT_OPS`] and nodes matching `exclude` (name or op patterns) in float32.
pub fn convert(model: &mut ModelProto, exclude: &[String]) -> Result<Fp16Summary, QuantizeError> {
    let graph = model.graph.as_mut().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
    let types = element_types(graph);
    let index = GraphIndex::new(graph);
    let is_f32 = |t: &str| types.get(t) == Some(&(DataType::Float as i32));
    let mut summary = Fp16Summary::default();

    // Float constants holding values beyond float16's range (±65504), which become ±inf there:
    // torch exports scale the attention mask by finfo(float32).min, and (1 − mask) × −inf is NaN
    // where the mask is 1. Their readers compute in float32.
    let beyond_half = |t: &tract_onnx::pb::TensorProto| {
        t.data_type == DataType::Float as i32
            && f32_values(t).is_ok_and(|v| v.iter().any(|x| x.is_finite() && x.abs() > f16::MAX.to_f32()))
    };
    let mut out_of_range: BTreeSet<&str> =
        graph.initializer.iter().filter(|t| beyond_half(t)).map(|t| t.name.as_str()).collect();
    for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
        if tensor_attr(n, "value").is_some_and(beyond_half) {
            out_of_range.extend(n.output.iter().map(String::as_str));
        }
    }

    // Which nodes compute in float16.
    let mut half = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate() {
        let float_out = n.output.first().is_some_and(|o| is_f32(o));
        // Constants keep their float32 values (ConstantOfShape's `value` attribute included) and
        // meet float16 readers through a Cast.
        if !float_out || n.op_type == "Constant" || n.op_type == "ConstantOfShape" {
            continue;
        }
        let reason = if FP16_KEEP_FLOAT_OPS.contains(&n.op_type.as_str()) {
            Some(KeptFloat::Fp16KeptOp(n.op_type.clone()))
        } else if let Some(p) = matching_pattern(exclude, n) {
            Some(KeptFloat::Excluded(p.to_string()))
        } else if n.output.iter().any(|o| index.outputs.contains(o)) {
            Some(KeptFloat::GraphOutput)
        } else {
            n.input.iter().find(|i| out_of_range.contains(i.as_str())).map(|c| KeptFloat::BeyondHalf(c.clone()))
        };
        match reason {
            Some(r) => {
                summary.kept_float.insert(n.name.clone(), r);
            }
            None => half[i] = true,
        }
    }
    let half_tensors: BTreeSet<String> =
        graph.node.iter().zip(&half).filter(|(_, h)| **h).flat_map(|(n, _)| n.output.iter().cloned()).collect();

    // Float initializers read only by float16 nodes become float16; others stay and get a Cast.
    let mut half_initializers = BTreeSet::new();
    for init in &graph.initializer {
        if init.data_type != DataType::Float as i32 {
            continue;
        }
        let readers = index.consumers.get(&init.name).map(Vec::as_slice).unwrap_or(&[]);
        if !readers.is_empty() && readers.iter().all(|&r| half[r]) {
            half_initializers.insert(init.name.clone());
        }
    }
    for init in graph.initializer.iter_mut().filter(|t| half_initializers.contains(&t.name)) {
        let values = f32_values(init)?;
        init.raw_data = values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        init.float_data.clear();
        init.data_type = DataType::Float16 as i32;
    }

    // Casts go just before their first reader; every later reader of the same tensor shares it.
    let mut rw = Rewrite::new(graph);
    let mut casts: HashMap<(String, bool), String> = HashMap::new();
    // `half` has one entry per node: insertions are planned, not applied, until `finish`.
    for (i, &computes_half) in half.iter().enumerate() {
        for k in 0..rw.graph.node[i].input.len() {
            let input = rw.graph.node[i].input[k].clone();
            if input.is_empty() {
                continue;
            }
            let produced_half = half_tensors.contains(&input) || half_initializers.contains(&input);
            let to_half = computes_half && is_f32(&input) && !produced_half;
            let to_float = !computes_half && produced_half;
            if !(to_half || to_float) {
                continue;
            }
            let cast = match casts.get(&(input.clone(), to_half)) {
                Some(cast) => cast.clone(),
                None => {
                    let name = rw.names.fresh(&format!("{input}.{}", if to_half { "to_fp16" } else { "to_fp32" }));
                    let to = if to_half { DataType::Float16 } else { DataType::Float };
                    rw.insert_before(i, node("Cast", &name, &[&input], &[&name], vec![int_attribute("to", to as i64)]));
                    summary.casts += 1;
                    casts.insert((input, to_half), name.clone());
                    name
                }
            };
            rw.graph.node[i].input[k] = cast;
        }
        if computes_half {
            let n = &mut rw.graph.node[i];
            if n.op_type == "Cast" && int_attr(n, "to") == Some(DataType::Float as i64) {
                n.attribute.retain(|a| a.name != "to");
                n.attribute.push(int_attribute("to", DataType::Float16 as i64));
            }
            summary.half_nodes.push(n.name.clone());
        }
    }
    rw.finish(Prune::Initializers);
    Ok(summary)
}
