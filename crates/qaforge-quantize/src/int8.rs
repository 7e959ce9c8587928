//! INT8: symmetric per-channel int8 weights for every MatMul by a constant weight, with the
//! activation quantized at run time (dynamic: DynamicQuantizeLinear + MatMulInteger) or from
//! calibrated ranges (static: QuantizeLinear → DequantizeLinear pairs, QDQ format). Large
//! embedding tables are stored int8 and dequantized before their Gather or Slice.

use std::collections::{BTreeMap, HashMap};

use qaforge_onnx::edit::{
    element_count, f32_values, int_attribute, ints_attribute, node, raw_tensor, GraphIndex, Prune, Rewrite,
};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};

use crate::calibrate::ActivationRange;
use crate::graph::Reasons;
use crate::options::{WeightOptions, WeightStorage};
use crate::selection::{activation_matmuls, is_float_matrix, Decision, Selection};
use crate::QuantizeError;

/// Embedding tables smaller than this stay float (token-type embeddings: 2 × hidden).
const MIN_TABLE_ELEMENTS: usize = 4096;

impl WeightStorage {
    /// The symmetric integer range of the quantized values before any offset.
    fn range(self) -> (f32, f32) {
        match self {
            WeightStorage::Int8 | WeightStorage::Uint8Offset => (-127.0, 127.0),
            WeightStorage::Int8SevenBit => (-64.0, 63.0),
        }
    }

    /// The ONNX element type, the zero point, and the stored bytes of symmetric values `q`.
    fn encode(self, q: &[i8]) -> (DataType, u8, Vec<u8>) {
        match self {
            WeightStorage::Int8 | WeightStorage::Int8SevenBit => {
                (DataType::Int8, 0, q.iter().map(|&v| v as u8).collect())
            }
            WeightStorage::Uint8Offset => (DataType::Uint8, 128, q.iter().map(|&v| (v as i16 + 128) as u8).collect()),
        }
    }
}

/// Symmetric int8 quantization of a `[rows, cols]` matrix with one scale per column (`axis` 1)
/// or per row (`axis` 0), or one scale for all. Returns (int8 values, scales).
pub fn quantize_symmetric(
    values: &[f32],
    rows: usize,
    cols: usize,
    axis: usize,
    options: WeightOptions,
) -> (Vec<i8>, Vec<f32>) {
    let (qmin, qmax) = options.storage.range();
    let channels = if options.per_tensor {
        1
    } else if axis == 0 {
        rows
    } else {
        cols
    };
    let channel = |r: usize, c: usize| {
        if options.per_tensor {
            0
        } else if axis == 0 {
            r
        } else {
            c
        }
    };
    let mut amax = vec![0f32; channels];
    for r in 0..rows {
        for c in 0..cols {
            let a = &mut amax[channel(r, c)];
            *a = a.max(values[r * cols + c].abs());
        }
    }
    // An all-zero channel gets scale 1: its values quantize to 0 either way.
    let scales: Vec<f32> = amax.iter().map(|&a| if a > 0.0 { a / qmax } else { 1.0 }).collect();
    let mut q = vec![0i8; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[channel(r, c)];
            q[r * cols + c] = (values[r * cols + c] / s).round().clamp(qmin, qmax) as i8;
        }
    }
    (q, scales)
}

/// Adds an int8 copy of the float matrix initializer `name` with its scales and zero points, and
/// returns a DequantizeLinear node producing the float matrix again.
pub(crate) fn dequantized_weight(
    rw: &mut Rewrite<'_>,
    name: &str,
    axis: usize,
    options: WeightOptions,
) -> Result<(NodeProto, String), QuantizeError> {
    let init = rw.initializer(name).ok_or_else(|| QuantizeError::Graph(format!("no initializer `{name}`")))?;
    let (rows, cols) = (init.dims[0] as usize, init.dims[1] as usize);
    let values = f32_values(init)?;
    let (q, scales) = quantize_symmetric(&values, rows, cols, axis, options);
    let channel_dims: Vec<i64> = if options.per_tensor { vec![] } else { vec![scales.len() as i64] };
    let (data_type, zero_point, stored) = options.storage.encode(&q);
    let q_name = rw
        .add_initializer(&format!("{name}.quantized"), raw_tensor("", &[rows as i64, cols as i64], data_type, stored));
    let s_name = rw.add_initializer(
        &format!("{name}.scale"),
        raw_tensor("", &channel_dims, DataType::Float, scales.iter().flat_map(|v| v.to_le_bytes()).collect()),
    );
    let z_name = rw.add_initializer(
        &format!("{name}.zero_point"),
        raw_tensor("", &channel_dims, data_type, vec![zero_point; scales.len()]),
    );
    let out = rw.names.fresh(&format!("{name}.dequantized"));
    let mut attributes = vec![];
    if !options.per_tensor {
        attributes.push(int_attribute("axis", axis as i64));
    }
    Ok((node("DequantizeLinear", &out, &[&q_name, &s_name, &z_name], &[&out], attributes), out))
}

/// Nodes (appended to `nodes`) quantizing `x` to uint8 with one range per row of its last axis,
/// as DynamicQuantizeLinear does for a whole tensor: each row's range is widened to contain 0,
/// its step is `(max − min) / 255` and its zero point `round(−min / step)`, and values round half
/// to even. Returns the uint8 tensor, the steps (float, one per row), the zero points (int32,
/// one per row), and a uint8 zero for MatMulInteger's `a_zero_point`.
///
/// Hand-written from standard ops because ONNX has no per-row dynamic quantization:
/// DynamicQuantizeLinear is per tensor, and QuantizeLinear's per-axis scales must be 1-D.
fn per_token_quantized(rw: &mut Rewrite<'_>, x: &str, opset: i64, nodes: &mut Vec<NodeProto>) -> [String; 4] {
    let mut scalar = |base: &str, v: f32| {
        rw.add_initializer(
            &format!("{x}.token_range.{base}"),
            raw_tensor("", &[], DataType::Float, v.to_le_bytes().to_vec()),
        )
    };
    let zero = scalar("zero", 0.0);
    let levels = scalar("levels", 255.0);
    // An all-zero row gets the smallest normal step instead of 0: its values quantize to its zero
    // point, 0, instead of 0/0.
    let least_step = scalar("least_step", f32::MIN_POSITIVE);
    // ReduceMin/ReduceMax take their axes as an attribute up to opset 17, as an input from 18.
    let mut reduce_inputs = vec![x.to_string()];
    let mut reduce_attributes = vec![int_attribute("keepdims", 1)];
    if opset >= 18 {
        reduce_inputs.push(rw.add_initializer(
            &format!("{x}.token_range.axes"),
            raw_tensor("", &[1], DataType::Int64, (-1i64).to_le_bytes().to_vec()),
        ));
    } else {
        reduce_attributes.push(ints_attribute("axes", &[-1]));
    }
    let mut add = |op: &str, suffix: &str, inputs: &[&str], attributes: Vec<AttributeProto>| {
        let out = rw.names.fresh(&format!("{x}.token_range.{suffix}"));
        nodes.push(node(op, &out, inputs, &[&out], attributes));
        out
    };
    let reduce_inputs: Vec<&str> = reduce_inputs.iter().map(String::as_str).collect();
    let row_min = add("ReduceMin", "row_min", &reduce_inputs, reduce_attributes.clone());
    let row_max = add("ReduceMax", "row_max", &reduce_inputs, reduce_attributes);
    let low = add("Min", "low", &[&row_min, &zero], vec![]);
    let high = add("Max", "high", &[&row_max, &zero], vec![]);
    let span = add("Sub", "span", &[&high, &low], vec![]);
    let raw_step = add("Div", "raw_step", &[&span, &levels], vec![]);
    let step = add("Max", "step", &[&raw_step, &least_step], vec![]);
    let negated_low = add("Neg", "negated_low", &[&low], vec![]);
    let zero_point_ratio = add("Div", "zero_point_ratio", &[&negated_low, &step], vec![]);
    let zero_point = add("Round", "zero_point", &[&zero_point_ratio], vec![]);
    let ratio = add("Div", "ratio", &[x, &step], vec![]);
    let rounded = add("Round", "rounded", &[&ratio], vec![]);
    let shifted = add("Add", "shifted", &[&rounded, &zero_point], vec![]);
    let clipped = add("Clip", "clipped", &[&shifted, &zero, &levels], vec![]);
    let to = |t: DataType| vec![int_attribute("to", t as i64)];
    let quantized = add("Cast", "quantized", &[&clipped], to(DataType::Uint8));
    let zero_point_int = add("Cast", "zero_point_int", &[&zero_point], to(DataType::Int32));
    let no_offset = rw.add_initializer(&format!("{x}.no_zero_point"), raw_tensor("", &[], DataType::Uint8, vec![0]));
    [quantized, step, zero_point_int, no_offset]
}

/// Embedding tables: float matrices of at least [`MIN_TABLE_ELEMENTS`] that only Gathers or
/// Slices read (as their data), each with the positions of its readers.
pub(crate) fn embedding_tables(graph: &GraphProto) -> Vec<(String, Vec<usize>)> {
    let index = GraphIndex::new(graph);
    graph
        .initializer
        .iter()
        .filter(|t| is_float_matrix(t) && element_count(t).is_ok_and(|n| n >= MIN_TABLE_ELEMENTS))
        .filter_map(|t| {
            let readers = index.consumers.get(&t.name)?;
            readers
                .iter()
                .all(|&r| {
                    matches!(graph.node[r].op_type.as_str(), "Gather" | "Slice") && graph.node[r].input[0] == t.name
                })
                .then(|| (t.name.clone(), readers.clone()))
        })
        .collect()
}

/// Stores `table` int8 per row, dequantized before its `readers`. Tables are only dequantized
/// (exact on every engine), never multiplied as integers: full-range int8 whatever the target.
pub(crate) fn store_table_int8(rw: &mut Rewrite<'_>, table: &str, readers: &[usize]) -> Result<(), QuantizeError> {
    let (dq, dq_out) =
        dequantized_weight(rw, table, 0, WeightOptions { per_tensor: false, storage: WeightStorage::Int8 })?;
    rw.insert_before(readers[0], dq);
    for &r in readers {
        rw.graph.node[r].input[0] = dq_out.clone();
    }
    Ok(())
}

/// How activations of quantized MatMuls are quantized.
pub enum Activations<'a> {
    /// At run time, one range per tensor: DynamicQuantizeLinear + MatMulInteger.
    Dynamic,
    /// At run time, one range per token (row), written with standard ops (ReduceMin/ReduceMax
    /// per row, MatMulInteger, each row's zero point taken out in int32); `opset` is the graph's
    /// default-domain opset, which decides how ReduceMin/ReduceMax take their axes.
    DynamicPerToken {
        /// The graph's default-domain opset.
        opset: i64,
    },
    /// From calibrated ranges, by tensor name: QuantizeLinear → DequantizeLinear.
    Static(&'a BTreeMap<String, ActivationRange>),
}

/// What the INT8 pass did.
#[derive(Debug, Default)]
pub struct Int8Summary {
    /// MatMuls with int8 weights and activations.
    pub quantized: Vec<String>,
    /// Nodes kept float, or with float activations, and why.
    pub kept_float: Reasons,
    /// Embedding tables stored int8.
    pub tables: Vec<String>,
}

/// Quantizes `graph` in place.
pub fn quantize(
    graph: &mut GraphProto,
    selection: &Selection,
    weights: WeightOptions,
    activations: Activations<'_>,
) -> Result<Int8Summary, QuantizeError> {
    let mut summary = Int8Summary { kept_float: activation_matmuls(graph), ..Default::default() };
    let mut rw = Rewrite::new(graph);
    let mut activation_qdq: HashMap<String, String> = HashMap::new();
    let mut dynamic_inputs: HashMap<String, [String; 3]> = HashMap::new();
    let mut per_token_inputs: HashMap<String, [String; 4]> = HashMap::new();

    for (i, decision) in selection.decisions().iter().cloned() {
        let (x, w, name) = {
            let n = rw.node(i);
            (n.input[0].clone(), n.input[1].clone(), n.name.clone())
        };
        if let Decision::Float(reason) = &decision {
            summary.kept_float.insert(name, reason.clone());
            continue;
        }
        let quantize_activation = decision == Decision::Quantize;
        if let Decision::WeightOnly(reason) = &decision {
            summary.kept_float.insert(name.clone(), reason.clone());
        }
        match (&activations, quantize_activation) {
            (Activations::Dynamic | Activations::DynamicPerToken { .. }, true) => {
                let init = rw.initializer(&w).ok_or_else(|| QuantizeError::Graph(format!("no initializer `{w}`")))?;
                let (rows, cols) = (init.dims[0] as usize, init.dims[1] as usize);
                let (q, scales) = quantize_symmetric(&f32_values(init)?, rows, cols, 1, weights);
                let scale_dims: Vec<i64> = if weights.per_tensor { vec![] } else { vec![cols as i64] };
                let (data_type, zero_point, stored) = weights.storage.encode(&q);
                let q_name = rw.add_initializer(
                    &format!("{w}.quantized"),
                    raw_tensor("", &[rows as i64, cols as i64], data_type, stored),
                );
                let s_name = rw.add_initializer(
                    &format!("{w}.scale"),
                    raw_tensor("", &scale_dims, DataType::Float, scales.iter().flat_map(|v| v.to_le_bytes()).collect()),
                );
                // uint8 weights carry their offset as MatMulInteger's b_zero_point (one scalar:
                // every column is offset by 128).
                let weight_zero_point = (zero_point != 0).then(|| {
                    rw.add_initializer(&format!("{w}.zero_point"), raw_tensor("", &[], data_type, vec![zero_point]))
                });
                let mut nodes = vec![];
                // The integer product and the activation's scale (per tensor, or one per row).
                let (integer, activation_scale) = if let Activations::DynamicPerToken { opset } = activations {
                    let [xq, step, zero_point, no_offset] = match per_token_inputs.get(&x) {
                        Some(outs) => outs.clone(),
                        None => {
                            let outs = per_token_quantized(&mut rw, &x, opset, &mut nodes);
                            per_token_inputs.insert(x.clone(), outs.clone());
                            outs
                        }
                    };
                    // Σ_k (q_k − z)·w_kj = Σ_k q_k·w_kj − z·Σ_k w_kj: MatMulInteger with a zero
                    // `a_zero_point`, then each row's zero point times the weight's column sums,
                    // subtracted in int32 (exact).
                    let column_sums: Vec<u8> = (0..cols)
                        .map(|c| (0..rows).map(|r| q[r * cols + c] as i32).sum::<i32>())
                        .flat_map(|v| v.to_le_bytes())
                        .collect();
                    let sums = rw.add_initializer(
                        &format!("{w}.column_sums"),
                        raw_tensor("", &[cols as i64], DataType::Int32, column_sums),
                    );
                    let product = rw.names.fresh(&format!("{name}.integer"));
                    let mut inputs = vec![xq.as_str(), q_name.as_str(), no_offset.as_str()];
                    inputs.extend(weight_zero_point.as_deref());
                    nodes.push(node("MatMulInteger", &product, &inputs, &[&product], vec![]));
                    let offset = rw.names.fresh(&format!("{name}.zero_point_offset"));
                    nodes.push(node("Mul", &offset, &[&zero_point, &sums], &[&offset], vec![]));
                    let centred = rw.names.fresh(&format!("{name}.integer.centred"));
                    nodes.push(node("Sub", &centred, &[&product, &offset], &[&centred], vec![]));
                    (centred, step)
                } else {
                    let [xq, xs, xz] = match dynamic_inputs.get(&x) {
                        Some(outs) => outs.clone(),
                        None => {
                            let base = rw.names.fresh(&format!("{x}.quantize_dynamic"));
                            let outs = [
                                base.clone(),
                                rw.names.fresh(&format!("{base}.scale")),
                                rw.names.fresh(&format!("{base}.zero_point")),
                            ];
                            nodes.push(node(
                                "DynamicQuantizeLinear",
                                &base,
                                &[&x],
                                &[&outs[0], &outs[1], &outs[2]],
                                vec![],
                            ));
                            dynamic_inputs.insert(x.clone(), outs.clone());
                            outs
                        }
                    };
                    let product = rw.names.fresh(&format!("{name}.integer"));
                    let mut inputs = vec![xq.as_str(), q_name.as_str(), xz.as_str()];
                    inputs.extend(weight_zero_point.as_deref());
                    nodes.push(node("MatMulInteger", &product, &inputs, &[&product], vec![]));
                    (product, xs)
                };
                let cast = rw.names.fresh(&format!("{name}.integer.float"));
                nodes.push(node(
                    "Cast",
                    &cast,
                    &[&integer],
                    &[&cast],
                    vec![int_attribute("to", DataType::Float as i64)],
                ));
                let scale = rw.names.fresh(&format!("{name}.output_scale"));
                nodes.push(node("Mul", &scale, &[&activation_scale, &s_name], &[&scale], vec![]));
                // The last node keeps the MatMul's name and output, so the rest of the graph is untouched.
                let output = rw.node(i).output[0].clone();
                nodes.push(node("Mul", &name, &[&cast, &scale], &[&output], vec![]));
                rw.replace(i, nodes);
                summary.quantized.push(name);
            }
            _ => {
                let (dq, dq_out) = dequantized_weight(&mut rw, &w, 1, weights)?;
                rw.insert_before(i, dq);
                if let (Activations::Static(ranges), true) = (&activations, quantize_activation) {
                    let range = ranges.get(&x).ok_or_else(|| {
                        QuantizeError::Calibration(format!("no calibrated range for `{x}` (input of {name})"))
                    })?;
                    let qdq = match activation_qdq.get(&x) {
                        Some(q) => q.clone(),
                        None => {
                            let (scale, zero_point) = range.scale_zero_point();
                            let s = rw.add_initializer(
                                &format!("{x}.scale"),
                                raw_tensor("", &[], DataType::Float, scale.to_le_bytes().to_vec()),
                            );
                            let z = rw.add_initializer(
                                &format!("{x}.zero_point"),
                                raw_tensor("", &[], DataType::Uint8, vec![zero_point]),
                            );
                            let q = rw.names.fresh(&format!("{x}.quantized"));
                            rw.insert_before(i, node("QuantizeLinear", &q, &[&x, &s, &z], &[&q], vec![]));
                            let d = rw.names.fresh(&format!("{x}.dequantized"));
                            rw.insert_before(i, node("DequantizeLinear", &d, &[&q, &s, &z], &[&d], vec![]));
                            activation_qdq.insert(x.clone(), d.clone());
                            d
                        }
                    };
                    rw.graph.node[i].input[0] = qdq;
                    summary.quantized.push(name.clone());
                }
                rw.graph.node[i].input[1] = dq_out;
            }
        }
    }

    // Embedding tables: int8 per row, dequantized before the Gather/Slice that reads them.
    for (table, readers) in embedding_tables(rw.graph) {
        store_table_int8(&mut rw, &table, &readers)?;
        summary.tables.push(table);
    }
    // The float originals of quantized weights are read no more.
    rw.finish(Prune::Initializers);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{type_proto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto};
    use tract_onnx::prelude::*;

    const K: usize = 8;
    const N: usize = 6;

    fn float_input(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = |d: i64| tract_onnx::pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(d)),
        };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto { dim: dims.iter().map(|&d| dim(d)).collect() }),
                })),
            }),
            doc_string: String::new(),
        }
    }

    fn weights() -> Vec<f32> {
        (0..K * N).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect()
    }

    /// One product `x [2, 3, K] · w [K, N]`, quantized as `activations` asks, in opset `opset`.
    fn quantized_product(activations: Activations<'_>, storage: WeightStorage, opset: i64) -> ModelProto {
        let w_bytes = weights().iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut graph = GraphProto {
            node: vec![node("MatMul", "product", &["x", "w"], &["y"], vec![])],
            name: "one_product".into(),
            initializer: vec![raw_tensor("w", &[K as i64, N as i64], DataType::Float, w_bytes)],
            input: vec![float_input("x", &[2, 3, K as i64])],
            output: vec![float_input("y", &[2, 3, N as i64])],
            ..Default::default()
        };
        let selection = Selection::of(&graph, &[], true);
        let summary =
            quantize(&mut graph, &selection, WeightOptions { per_tensor: false, storage }, activations).unwrap();
        assert_eq!(summary.quantized, vec!["product".to_string()]);
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(model: &ModelProto, x: &[f32]) -> Vec<f32> {
        let plan =
            tract_onnx::onnx().model_for_proto_model(model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
        let input = Tensor::from_shape(&[2, 3, K], x).unwrap();
        let out = plan.run(tvec![input.into_tvalue()]).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    /// Six rows of very different ranges: one all-negative, one all-zero, one with an outlier.
    fn rows() -> Vec<f32> {
        (0..6 * K)
            .map(|i| {
                let (r, c) = (i / K, i % K);
                let v = ((i * 13 % 17) as f32 - 8.0) / 3.0;
                match r {
                    1 => -v.abs() - 0.5,
                    2 => 0.0,
                    3 if c == 5 => 400.0,
                    4 => v * 0.01,
                    _ => v,
                }
            })
            .collect()
    }

    /// Each row quantized on its own range as DynamicQuantizeLinear quantizes a tensor, times the
    /// per-column int8 weights, in f64.
    fn per_row_reference(x: &[f32]) -> Vec<f32> {
        let (q, scales) = quantize_symmetric(&weights(), K, N, 1, WeightOptions::default());
        let mut out = vec![];
        for row in x.chunks_exact(K) {
            let lo = row.iter().fold(0f32, |a, &v| a.min(v));
            let hi = row.iter().fold(0f32, |a, &v| a.max(v));
            let step = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE);
            let zero = (-lo / step).round_ties_even();
            let xq: Vec<f64> = row
                .iter()
                .map(|&v| ((v / step).round_ties_even() + zero).clamp(0.0, 255.0) as f64 - zero as f64)
                .collect();
            for c in 0..N {
                let acc: f64 = (0..K).map(|k| xq[k] * q[k * N + c] as f64).sum();
                out.push((acc * step as f64 * scales[c] as f64) as f32);
            }
        }
        out
    }

    #[test]
    fn per_token_scales_quantize_each_row_on_its_own_range() {
        let x = rows();
        let expected = per_row_reference(&x);
        for storage in [WeightStorage::Int8, WeightStorage::Uint8Offset] {
            for opset in [17, 18] {
                let got = run(&quantized_product(Activations::DynamicPerToken { opset }, storage, opset), &x);
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "{storage:?} opset {opset} [{i}]: {g} vs {e}");
                }
            }
        }
        // The all-zero row gives exactly zero.
        assert!(expected[2 * N..3 * N].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn per_token_rows_do_not_depend_on_their_batch_where_per_tensor_rows_do() {
        let x = rows();
        let mut louder = x.clone();
        louder[3 * K + 5] = 4000.0; // one outlier in row 3 grows tenfold
        let token = quantized_product(Activations::DynamicPerToken { opset: 17 }, WeightStorage::Int8, 17);
        let tensor = quantized_product(Activations::Dynamic, WeightStorage::Int8, 17);
        let changed_rows = |model: &ModelProto| {
            let (a, b) = (run(model, &x), run(model, &louder));
            (0..6).filter(|&r| a[r * N..(r + 1) * N] != b[r * N..(r + 1) * N]).collect::<Vec<_>>()
        };
        assert_eq!(changed_rows(&token), vec![3]);
        assert!(changed_rows(&tensor).len() > 2, "per-tensor rows should move with the outlier");
    }

    #[test]
    fn symmetric_per_column_scales_cover_each_column() {
        // [[1, -4], [-2, 8]]: column scales 2/127 and 8/127.
        let (q, s) = quantize_symmetric(&[1.0, -4.0, -2.0, 8.0], 2, 2, 1, WeightOptions::default());
        assert_eq!(s, vec![2.0 / 127.0, 8.0 / 127.0]);
        assert_eq!(q, vec![64, -64, -127, 127]);
        let (q, s) = quantize_symmetric(
            &[1.0, -3.0, -2.0, 8.0],
            2,
            2,
            1,
            WeightOptions { per_tensor: true, storage: WeightStorage::Int8SevenBit },
        );
        assert_eq!(s, vec![8.0 / 63.0]);
        assert_eq!(q, vec![8, -24, -16, 63]);
        let (q, s) = quantize_symmetric(&[0.0, 0.0], 1, 2, 0, WeightOptions::default());
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
    }

    #[test]
    fn uint8_offset_keeps_the_int8_levels() {
        let values = [1.0, -4.0, -2.0, 8.0];
        let int8 = quantize_symmetric(&values, 2, 2, 1, WeightOptions::default());
        let uint8 = quantize_symmetric(
            &values,
            2,
            2,
            1,
            WeightOptions { per_tensor: false, storage: WeightStorage::Uint8Offset },
        );
        assert_eq!(int8, uint8);
        let (ty, zero_point, bytes) = WeightStorage::Uint8Offset.encode(&uint8.0);
        assert_eq!((ty, zero_point), (DataType::Uint8, 128));
        assert_eq!(bytes, vec![192, 64, 1, 255]);
        assert_eq!(bytes.iter().zip(&int8.0).filter(|(&b, &q)| b as i32 - 128 != q as i32).count(), 0);
    }
}
