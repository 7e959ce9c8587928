//! Row lookups from an int8 table read the int8 rows, not a dequantized table: a table stored int8
//! per row (`DequantizeLinear(q, scale[rows], 0, axis=0)`) and read only by Gather and Slice along
//! its rows is dequantized after the lookup, so each run converts the rows it reads (a sequence's
//! worth) instead of the whole table (30,522 rows of the word embeddings, about a fifth of an
//! int8 BERT-base-width run's kernel time in ONNX Runtime's profile).
//!
//! - `Gather(DQ(q), ids)` → `Cast(Gather(q, ids)) × Unsqueeze(Gather(scale, ids), -1)`;
//! - `Slice(DQ(q), starts, ends, [0])` → `DQ(Slice(q), Slice(scale), Slice(zero point), axis=0)`.
//!
//! Both compute every element as `float(q) × scale` exactly as before (zero points are zero),
//! bit for bit.

use qaforge_onnx::edit::{int_attr, int_attribute, node, raw_tensor, Rewrite};
use tract_onnx::pb::{tensor_proto::DataType, NodeProto};

use crate::{FuseError, Pass};

/// The rewrite (see the module documentation).
pub struct GatherQuantizedRows;

impl Pass for GatherQuantizedRows {
    fn name(&self) -> &'static str {
        "gather_quantized_rows"
    }

    fn describe(&self) -> &'static str {
        "int8 embedding tables dequantized after their Gather/Slice (the rows read), not whole"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        rw.each_live(&["DequantizeLinear"], |rw, dq| {
            let n = rw.node(dq);
            if int_attr(n, "axis").unwrap_or(1) != 0 {
                return Ok(false);
            }
            let [q, scale, zero] = n.input.as_slice() else { return Ok(false) };
            let (q, scale, zero, table) = (q.clone(), scale.clone(), zero.clone(), n.output[0].clone());
            let Some(qt) = rw.initializer(&q) else { return Ok(false) };
            let rows = qt.dims.first().copied().unwrap_or(0);
            if qt.dims.len() != 2 || !(qt.data_type == DataType::Int8 as i32 || qt.data_type == DataType::Uint8 as i32)
            {
                return Ok(false);
            }
            let per_row = |name: &str| rw.initializer(name).is_some_and(|t| t.dims == [rows]);
            let zeros = rw
                .initializer(&zero)
                .is_some_and(|t| t.raw_data.iter().all(|&b| b == 0) && t.int32_data.iter().all(|&v| v == 0));
            if !per_row(&scale) || !per_row(&zero) || !zeros || rw.is_graph_output(&table) {
                return Ok(false);
            }
            let readers: Vec<usize> = rw.consumers(&table).to_vec();
            let reads_rows = |r: usize| {
                let n = rw.node(r);
                let data_only = n.input.iter().skip(1).all(|i| i != &table) && n.input.first() == Some(&table);
                match n.op_type.as_str() {
                    "Gather" => data_only && int_attr(n, "axis").unwrap_or(0) == 0,
                    "Slice" => data_only && n.input.get(3).and_then(|a| rw.int_constant(a)).is_some_and(|a| a == [0]),
                    _ => false,
                }
            };
            if readers.is_empty() || !readers.iter().all(|&r| reads_rows(r)) {
                return Ok(false);
            }
            for r in readers {
                let n = rw.node(r).clone();
                let output = n.output[0].clone();
                let fresh = |rw: &mut Rewrite<'_>, what: &str| rw.names.fresh(&format!("{}.{what}", n.name));
                let mut nodes = vec![];
                if n.op_type == "Gather" {
                    let ids = n.input[1].clone();
                    let (rows_q, rows_scale, rows_f) =
                        (fresh(rw, "int8_rows"), fresh(rw, "row_scales"), fresh(rw, "rows_float"));
                    let column = fresh(rw, "row_scales.column");
                    let axes = rw.add_initializer(
                        &format!("{}.axes", n.name),
                        raw_tensor("", &[1], DataType::Int64, (-1i64).to_le_bytes().to_vec()),
                    );
                    nodes.push(node("Gather", &rows_q, &[&q, &ids], &[&rows_q], vec![int_attribute("axis", 0)]));
                    nodes.push(node(
                        "Gather",
                        &rows_scale,
                        &[&scale, &ids],
                        &[&rows_scale],
                        vec![int_attribute("axis", 0)],
                    ));
                    nodes.push(node(
                        "Cast",
                        &rows_f,
                        &[&rows_q],
                        &[&rows_f],
                        vec![int_attribute("to", DataType::Float as i64)],
                    ));
                    nodes.push(node("Unsqueeze", &column, &[&rows_scale, &axes], &[&column], vec![]));
                    let name = fresh(rw, "dequantized");
                    nodes.push(node("Mul", &name, &[&rows_f, &column], &[&output], vec![]));
                } else {
                    let bounds: Vec<String> = n.input[1..].to_vec();
                    let slice = |rw: &mut Rewrite<'_>, of: &str, what: &str, nodes: &mut Vec<NodeProto>| {
                        let out = fresh(rw, what);
                        let mut inputs = vec![of.to_string()];
                        inputs.extend(bounds.iter().cloned());
                        nodes.push(NodeProto { input: inputs, ..node("Slice", &out, &[], &[&out], vec![]) });
                        out
                    };
                    let (sq, ss, sz) = (
                        slice(rw, &q, "int8_rows", &mut nodes),
                        slice(rw, &scale, "row_scales", &mut nodes),
                        slice(rw, &zero, "row_zero_points", &mut nodes),
                    );
                    let name = fresh(rw, "dequantized");
                    nodes.push(node(
                        "DequantizeLinear",
                        &name,
                        &[&sq, &ss, &sz],
                        &[&output],
                        vec![int_attribute("axis", 0)],
                    ));
                }
                for m in nodes {
                    rw.insert_before(r, m);
                }
                rw.remove([r]);
            }
            Ok(true)
        })
    }
}
