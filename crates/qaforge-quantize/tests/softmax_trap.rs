//! Why qaforge never quantizes Softmax's input or output: tract (0.23) fuses
//! DequantizeLinear → Softmax → QuantizeLinear into a fixed-point softmax whose output sticks at
//! the top of the uint8 range, where exact arithmetic gives a spread of probabilities. This test
//! keeps the 3-node repro; if tract fixes it, the first assertion fails and the exclusion can be
//! revisited. That no quantized artifact puts Q/DQ next to a Softmax is checked end to end on every
//! precision by tests/quantize.rs (`quantization_is_byte_identical_and_keeps_softmax_float`).

use qaforge_onnx::edit::{int_attribute, node, raw_tensor};
use tract_onnx::pb::{
    tensor_proto::DataType, type_proto, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use tract_onnx::prelude::*;

fn value_info(name: &str, elem_type: DataType, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tract_onnx::pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                        })
                        .collect(),
                }),
            })),
        }),
        doc_string: String::new(),
    }
}

#[test]
fn tract_fixed_point_softmax_sticks_at_255() {
    // uint8 scores with scale 0.1: DequantizeLinear → Softmax → QuantizeLinear (scale 1/255, zp 0).
    let scores: Vec<u8> = vec![0, 10, 20, 30, 40, 50, 60, 70];
    let graph = GraphProto {
        node: vec![
            node("DequantizeLinear", "dq", &["x", "in_scale", "in_zero"], &["dq"], vec![]),
            node("Softmax", "softmax", &["dq"], &["softmax"], vec![int_attribute("axis", -1)]),
            node("QuantizeLinear", "q", &["softmax", "out_scale", "out_zero"], &["y"], vec![]),
        ],
        name: "softmax_trap".into(),
        initializer: vec![
            raw_tensor("in_scale", &[], DataType::Float, 0.1f32.to_le_bytes().to_vec()),
            raw_tensor("in_zero", &[], DataType::Uint8, vec![0]),
            raw_tensor("out_scale", &[], DataType::Float, (1.0f32 / 255.0).to_le_bytes().to_vec()),
            raw_tensor("out_zero", &[], DataType::Uint8, vec![0]),
        ],
        input: vec![value_info("x", DataType::Uint8, &[1, 8])],
        output: vec![value_info("y", DataType::Uint8, &[1, 8])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    };
    // Exact: softmax of 0.0..7.0, quantized to 1/255 steps.
    let logits: Vec<f32> = scores.iter().map(|&s| s as f32 * 0.1).collect();
    let sum: f32 = logits.iter().map(|v| v.exp()).sum();
    let exact: Vec<u8> = logits.iter().map(|v| (v.exp() / sum * 255.0).round() as u8).collect();
    assert!(
        exact[..6].iter().all(|&v| v < 255) && exact.iter().map(|&v| v as u32).sum::<u32>() <= 260,
        "exact {exact:?}"
    );

    let plan =
        tract_onnx::onnx().model_for_proto_model(&model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(&[1, 8], &scores).unwrap();
    let out = plan.run(tvec![input.into_tvalue()]).unwrap();
    let got: Vec<u8> = out[0].to_plain_array_view::<u8>().unwrap().iter().copied().collect();
    // Measured with tract 0.23.9: [255; 8] where exact arithmetic gives [0, 0, 1, 3, 8, 22, 59, 161].
    assert!(
        got.iter().all(|&v| v == 255),
        "tract's quantized softmax changed ({got:?}, exact {exact:?}); the Softmax exclusion may be revisited"
    );
}
