//! The precision of an artifact that records none (ONNX Runtime's quantize_dynamic or
//! quantize_static output, another tool's fp16 conversion), read from its operators, so that
//! verify judges it with its own precision's tolerances instead of fp32's; and of one whose
//! recorded precision its operators contradict: other tools copy their input's metadata_props
//! (ONNX Runtime's quantize_dynamic of qaforge's fp32 artifact still says
//! `qaforge.precision = fp32`), so the key alone is not evidence.

use qaforge_provenance::{keys, Precision};

use crate::edit::{int_attr, tensor_attr};
use crate::pb::{tensor_proto::DataType, ModelProto};

/// What the operators say: the precision and the evidence, in words. `Err` names a precision
/// qaforge does not judge yet.
pub fn infer_precision(model: &ModelProto) -> Result<(Precision, String), String> {
    let Some(graph) = model.graph.as_ref() else { return Ok((Precision::Fp32, "no graph".into())) };
    // The first of `ops` (in the order given: the strongest evidence first) that the graph uses.
    let has =
        |ops: &[&str]| ops.iter().find(|op| graph.node.iter().any(|n| n.op_type == **op)).map(|op| op.to_string());
    let four_bit = |t: i32| t == DataType::Int4 as i32 || t == DataType::Uint4 as i32;
    // Block-quantized weights (of 4 bits, or 8 in MatMulNBits): judged at int4's tolerances,
    // the loosest, whatever else the graph quantizes.
    if let Some(op) = has(&["MatMulNBits", "GatherBlockQuantized"]) {
        return Ok((Precision::Int4, format!("inferred from its operators ({op}: block-quantized weights)")));
    }
    if graph.initializer.iter().any(|t| four_bit(t.data_type)) {
        return Ok((Precision::Int4, "inferred from its operators (4-bit weight tensors)".into()));
    }
    if let Some(op) = has(&["DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"]) {
        return Ok((
            Precision::Int8Dynamic,
            format!("inferred from its operators ({op}: activations quantized at run time)"),
        ));
    }
    if let Some(op) =
        has(&["QuantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulIntegerToFloat", "DequantizeLinear"])
    {
        return Ok((Precision::Int8Static, format!("inferred from its operators ({op}: int8 quantized tensors)")));
    }
    let half = |t: i32| t == DataType::Float16 as i32;
    let half_cast =
        graph.node.iter().any(|n| n.op_type == "Cast" && int_attr(n, "to") == Some(DataType::Float16 as i64));
    let half_constant = graph.initializer.iter().any(|t| half(t.data_type))
        || graph
            .node
            .iter()
            .any(|n| n.op_type == "Constant" && tensor_attr(n, "value").is_some_and(|t| half(t.data_type)));
    if half_cast || half_constant {
        return Ok((Precision::Fp16, "inferred from its operators (float16 weights or casts)".into()));
    }
    Ok((Precision::Fp32, "inferred from its operators (no quantized or float16 tensors)".into()))
}

/// The precision an artifact is judged and treated at, and where it comes from, in words: its
/// `qaforge.precision` metadata, unless the operators show a lossier precision (a quantized or
/// float16 graph carrying a float model's copied metadata), or the operators where it records
/// none. A recorded precision lossier than the operators show is kept: it only loosens the
/// tolerances its maker chose. `Err` names a value that is no precision, or a precision qaforge
/// does not judge yet.
pub fn artifact_precision(model: &ModelProto) -> Result<(Precision, String), String> {
    let recorded = model.metadata_props.iter().find(|p| p.key == keys::PRECISION).map(|p| p.value.as_str());
    let Some(name) = recorded else {
        return infer_precision(model).map_err(|why| format!("records no {} and {why}", keys::PRECISION));
    };
    let recorded: Precision = name.parse().map_err(|e| format!("metadata {}: {e}", keys::PRECISION))?;
    match infer_precision(model) {
        Ok((shown, why)) if shown.loss_rank() > recorded.loss_rank() => Ok((
            shown,
            format!(
                "{why}; its metadata {} says {recorded}, which its operators contradict (metadata copied from \
                 its input by the tool that made it?)",
                keys::PRECISION
            ),
        )),
        _ => Ok((recorded, format!("from metadata {}", keys::PRECISION))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::{int_attribute, node, raw_tensor};
    use crate::pb::GraphProto;

    fn model(nodes: Vec<crate::pb::NodeProto>, initializers: Vec<crate::pb::TensorProto>) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto { node: nodes, initializer: initializers, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn operators_say_the_precision() {
        let of = |m: &ModelProto| infer_precision(m).map(|(p, _)| p);
        assert_eq!(
            of(&model(vec![node("DynamicQuantizeLinear", "q", &["x"], &["a", "b", "c"], vec![])], vec![])),
            Ok(Precision::Int8Dynamic)
        );
        assert_eq!(
            of(&model(
                vec![
                    node("QuantizeLinear", "q", &["x", "s", "z"], &["y"], vec![]),
                    node("DequantizeLinear", "d", &["y", "s", "z"], &["w"], vec![])
                ],
                vec![]
            )),
            Ok(Precision::Int8Static)
        );
        assert_eq!(
            of(&model(
                vec![node("Cast", "c", &["x"], &["y"], vec![int_attribute("to", DataType::Float16 as i64)])],
                vec![]
            )),
            Ok(Precision::Fp16)
        );
        assert_eq!(
            of(&model(
                vec![node("MatMul", "m", &["x", "w"], &["y"], vec![])],
                vec![raw_tensor("w", &[1], DataType::Float, vec![0; 4])]
            )),
            Ok(Precision::Fp32)
        );
        assert_eq!(
            of(&model(vec![node("MatMulNBits", "m", &["x", "w"], &["y"], vec![])], vec![])),
            Ok(Precision::Int4)
        );
        assert_eq!(of(&model(vec![], vec![raw_tensor("w", &[2], DataType::Int4, vec![0])])), Ok(Precision::Int4));
    }

    #[test]
    fn recorded_precision_stands_unless_the_operators_contradict_it() {
        let with =
            |nodes: Vec<crate::pb::NodeProto>, recorded: Option<&str>| {
                let mut m = model(nodes, vec![]);
                m.metadata_props.extend(recorded.map(|value| crate::pb::StringStringEntryProto {
                    key: keys::PRECISION.into(),
                    value: value.into(),
                }));
                artifact_precision(&m)
            };
        let dynamic = || vec![node("DynamicQuantizeLinear", "q", &["x"], &["a", "b", "c"], vec![])];
        let matmul = || vec![node("MatMul", "m", &["x", "w"], &["y"], vec![])];
        // Recorded and consistent: the metadata says it.
        let (p, why) = with(dynamic(), Some("int8-dynamic")).unwrap();
        assert_eq!((p, why.as_str()), (Precision::Int8Dynamic, "from metadata qaforge.precision"));
        // A float model's metadata on a quantized graph (ONNX Runtime's quantize_dynamic of
        // qaforge's fp32 artifact): the operators win, and the report says why.
        let (p, why) = with(dynamic(), Some("fp32")).unwrap();
        assert_eq!(p, Precision::Int8Dynamic);
        assert!(
            why.contains("DynamicQuantizeLinear") && why.contains("says fp32, which its operators contradict"),
            "{why}"
        );
        let fp16_cast = vec![node("Cast", "c", &["x"], &["y"], vec![int_attribute("to", DataType::Float16 as i64)])];
        assert_eq!(with(fp16_cast, Some("fp32")).unwrap().0, Precision::Fp16);
        // A lossier record than the operators show only loosens the tolerances: kept.
        assert_eq!(with(matmul(), Some("int4")).unwrap().0, Precision::Int4);
        // None recorded: the operators; a value that is no precision: an error naming the key.
        assert_eq!(with(matmul(), None).unwrap().0, Precision::Fp32);
        assert!(with(matmul(), Some("int7")).unwrap_err().contains("metadata qaforge.precision"));
    }
}
