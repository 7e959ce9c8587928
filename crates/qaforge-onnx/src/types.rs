//! Element types of every value of a graph, inferred node by node, and the type constraints of the
//! operators qaforge's passes touch: inputs an operator binds to one type parameter (ONNX's `T`)
//! must have one element type. ONNX Runtime refuses a graph that breaks this at load ("Type
//! parameter (T) of Optype (Mul) bound to different types"); qaforge checks its own outputs
//! before writing them, and the graphs it reads before any work, so such a graph is an error
//! naming the node, never a written artifact. (onnx's checker is Python and tract's analysis
//! casts silently, so neither can stand in here.)

use std::collections::HashMap;

use tract_onnx::pb::{self, tensor_proto::DataType};

use crate::edit::{int_attr, tensor_attr};

/// For each operator with a shared type parameter, the input positions bound to it.
fn same_type_inputs(op: &str, inputs: usize) -> Option<Vec<usize>> {
    Some(match op {
        "Add" | "Sub" | "Mul" | "Div" | "MatMul" | "Sum" | "Max" | "Min" | "Mean" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" | "Concat" | "PRelu" => (0..inputs).collect(),
        "Gemm" => (0..inputs.min(3)).collect(),
        "Where" => vec![1, 2],
        // The data and the padding value; the bounds of Clip; Range's start, limit and delta.
        "Pad" => vec![0, 2],
        "Clip" | "Range" => (0..inputs).collect(),
        "LayerNormalization" => (0..inputs.min(3)).collect(),
        // The data and its zero point share T (opset 13+).
        "DequantizeLinear" => vec![0, 2],
        _ => return None,
    })
}

fn name(t: i32) -> String {
    match DataType::try_from(t) {
        Ok(d) => format!("tensor({})", format!("{d:?}").to_lowercase()),
        Err(_) => format!("type {t}"),
    }
}

/// The element type of each output of `node`, given its inputs' (`None`: unknown).
fn output_types(node: &pb::NodeProto, inputs: &[Option<i32>]) -> Vec<Option<i32>> {
    let first = inputs.iter().flatten().next().copied();
    let one = |t: Option<i32>| vec![t; node.output.len()];
    if !crate::edit::is_default_domain(node) {
        return one(None);
    }
    let int64 = Some(DataType::Int64 as i32);
    match node.op_type.as_str() {
        "Cast" => one(int_attr(node, "to").map(|to| to as i32)),
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => one(int64),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or" | "Xor" | "IsNaN"
        | "IsInf" => one(Some(DataType::Bool as i32)),
        "Constant" => one(tensor_attr(node, "value").map(|t| t.data_type).or_else(|| {
            node.attribute.iter().find_map(|a| match a.name.as_str() {
                "value_float" | "value_floats" => Some(DataType::Float as i32),
                "value_int" | "value_ints" => int64,
                _ => None,
            })
        })),
        "ConstantOfShape" => one(Some(tensor_attr(node, "value").map_or(DataType::Float as i32, |t| t.data_type))),
        "QuantizeLinear" => one(Some(inputs.get(2).copied().flatten().unwrap_or(DataType::Uint8 as i32))),
        "DequantizeLinear" => one(inputs.get(1).copied().flatten()),
        "DynamicQuantizeLinear" => {
            vec![Some(DataType::Uint8 as i32), Some(DataType::Float as i32), Some(DataType::Uint8 as i32)]
        }
        "MatMulInteger" | "ConvInteger" => one(Some(DataType::Int32 as i32)),
        "Where" => one(inputs.get(1).copied().flatten()),
        // The data's type, unknown when the data's is (the other inputs are int64 shapes,
        // indices or pads): a data input computed by another domain's op stays untyped.
        "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Expand" | "Slice" | "Tile" | "Pad" | "Flatten"
        | "Identity" | "Split" | "Gather" | "GatherElements" => one(inputs.first().copied().flatten()),
        // Y has X's type; Mean and InvStdDev the stash type (float by default).
        "LayerNormalization" => {
            let mut out = one(Some(DataType::Float as i32));
            if let Some(y) = out.first_mut() {
                *y = inputs.first().copied().flatten();
            }
            out
        }
        _ => one(first),
    }
}

/// The element type (ONNX `DataType` code) a graph input or output declares; `None` when it
/// declares no tensor type.
pub fn declared_elem_type(value: &pb::ValueInfoProto) -> Option<i32> {
    match value.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t.elem_type),
    }
}

/// The element type of every value whose type follows from the graph inputs, initializers and
/// node attributes (ONNX `DataType` codes), by name.
pub fn element_types(graph: &pb::GraphProto) -> HashMap<String, i32> {
    let mut types: HashMap<String, i32> = HashMap::new();
    for input in &graph.input {
        if let Some(t) = declared_elem_type(input) {
            types.insert(input.name.clone(), t);
        }
    }
    for init in &graph.initializer {
        types.insert(init.name.clone(), init.data_type);
    }
    for node in &graph.node {
        let inputs: Vec<Option<i32>> =
            node.input.iter().map(|n| if n.is_empty() { None } else { types.get(n).copied() }).collect();
        for (output, t) in node.output.iter().zip(output_types(node, &inputs)) {
            if let (false, Some(t)) = (output.is_empty(), t) {
                types.insert(output.clone(), t);
            }
        }
    }
    types
}

/// Checks that every operator's type-bound inputs agree. Returns the first breach in ONNX
/// Runtime's words, naming the node.
pub fn check_types(model: &pb::ModelProto) -> Result<(), String> {
    let Some(graph) = model.graph.as_ref() else { return Ok(()) };
    let mut types: HashMap<&str, i32> = HashMap::new();
    for input in &graph.input {
        if let Some(t) = declared_elem_type(input) {
            types.insert(input.name.as_str(), t);
        }
    }
    for init in &graph.initializer {
        types.insert(init.name.as_str(), init.data_type);
    }
    for (i, node) in graph.node.iter().enumerate() {
        let inputs: Vec<Option<i32>> =
            node.input.iter().map(|n| if n.is_empty() { None } else { types.get(n.as_str()).copied() }).collect();
        if crate::edit::is_default_domain(node) {
            if let Some(bound) = same_type_inputs(&node.op_type, inputs.len()) {
                let known: Vec<(usize, i32)> =
                    bound.iter().filter_map(|&k| inputs.get(k).copied().flatten().map(|t| (k, t))).collect();
                if let Some(&(k, t)) = known.iter().find(|(_, t)| *t != known[0].1) {
                    let label = if node.name.is_empty() { format!("#{i}") } else { format!("`{}`", node.name) };
                    return Err(format!(
                        "node {label} ({}): type parameter T bound to different types: input `{}` is {}, input `{}` is {}",
                        node.op_type,
                        node.input[known[0].0],
                        name(known[0].1),
                        node.input[k],
                        name(t)
                    ));
                }
            }
        }
        for (output, t) in node.output.iter().zip(output_types(node, &inputs)) {
            if let (false, Some(t)) = (output.is_empty(), t) {
                types.insert(output.as_str(), t);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: DataType) -> pb::TensorProto {
        pb::TensorProto { name: name.into(), data_type: data_type as i32, dims: vec![1], ..Default::default() }
    }

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn model(initializers: Vec<pb::TensorProto>, nodes: Vec<pb::NodeProto>) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto { initializer: initializers, node: nodes, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_float16_value_meeting_a_float_constant_is_named() {
        // The torch export failure: a Mul of an fp16 activation and a float scalar left float.
        let m = model(
            vec![tensor("x", DataType::Float), tensor("half", DataType::Float)],
            vec![
                pb::NodeProto {
                    attribute: vec![pb::AttributeProto {
                        name: "to".into(),
                        i: DataType::Float16 as i64,
                        ..Default::default()
                    }],
                    ..node("Cast", "cast", &["x"], "x16")
                },
                node("Mul", "/encoder/layer.0/attention/self/Mul_1", &["x16", "half"], "y"),
            ],
        );
        let err = check_types(&m).unwrap_err();
        assert!(
            err.contains("`/encoder/layer.0/attention/self/Mul_1` (Mul)")
                && err.contains("tensor(float16)")
                && err.contains("tensor(float)"),
            "{err}"
        );
    }

    #[test]
    fn declared_element_types_are_read_where_a_tensor_type_is_given() {
        let typed = crate::builder::value_info("logits", DataType::Int64, &[]);
        assert_eq!(declared_elem_type(&typed), Some(DataType::Int64 as i32));
        let untyped = pb::ValueInfoProto { name: "x".into(), ..Default::default() };
        assert_eq!(declared_elem_type(&untyped), None);
    }

    #[test]
    fn consistent_graphs_and_free_type_parameters_pass() {
        // Shape gives int64, so an Add of two shapes is fine; Pow's exponent has its own type.
        let m = model(
            vec![tensor("x", DataType::Float), tensor("e", DataType::Int64)],
            vec![
                node("Shape", "s", &["x"], "sx"),
                node("Add", "a", &["sx", "sx"], "y"),
                node("Pow", "p", &["x", "e"], "z"),
            ],
        );
        check_types(&m).unwrap();
        // An int32 weight under a float MatMul is not.
        let m = model(
            vec![tensor("x", DataType::Float), tensor("w", DataType::Int32)],
            vec![node("MatMul", "mm", &["x", "w"], "y")],
        );
        assert!(check_types(&m).unwrap_err().contains("`mm` (MatMul)"));
    }
}
