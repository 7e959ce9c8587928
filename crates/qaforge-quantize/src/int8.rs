//! INT8: symmetric per-channel int8 weights for every MatMul by a constant weight, with the
//! activation quantized at run time (dynamic: DynamicQuantizeLinear + MatMulInteger) or from
//! calibrated ranges (static: QuantizeLinear → DequantizeLinear pairs, QDQ format). Large
//! embedding tables are stored int8 and dequantized before their Gather or Slice.

use std::collections::{BTreeMap, HashMap};

use qaforge_onnx::edit::{element_count, f32_values, int_attribute, node, raw_tensor, GraphIndex, Prune, Rewrite};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto};

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
    /// At run time: DynamicQuantizeLinear + MatMulInteger.
    Dynamic,
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
            (Activations::Dynamic, true) => {
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
                let cast = rw.names.fresh(&format!("{name}.integer.float"));
                nodes.push(node(
                    "Cast",
                    &cast,
                    &[&product],
                    &[&cast],
                    vec![int_attribute("to", DataType::Float as i64)],
                ));
                let scale = rw.names.fresh(&format!("{name}.output_scale"));
                nodes.push(node("Mul", &scale, &[&xs, &s_name], &[&scale], vec![]));
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
