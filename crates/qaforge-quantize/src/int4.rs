//! INT4: weight-only 4-bit block-wise quantization. Every MatMul by a constant weight that int8
//! would quantize becomes ONNX Runtime's `com.microsoft.MatMulNBits` (4 bits, one scale per block
//! of `block_size` weights along K, symmetric: zero point 8, the operator's default); activations
//! stay float. Embedding tables read by Gather become `com.microsoft.GatherBlockQuantized` (4 bits,
//! blocks along each row) or stay int8 per row ([`TableBits`]); the embedding path's products,
//! which read the table rows directly, get int8 weights, and the QA head stays float, as in int8.
//!
//! Why these operators (measured with ONNX Runtime 1.32.0 and tract 0.23.9): both engines run
//! MatMulNBits with 4 and 2 bits (ONNX Runtime before 1.32 refuses 2 bits) and GatherBlockQuantized
//! with 4 bits; tract refuses 8-bit MatMulNBits, so 8-bit products are int8 DequantizeLinear. The
//! opset-21 form (int4 DequantizeLinear with `block_size` before a MatMul) would be standard ONNX,
//! but ONNX Runtime's CPU fuses it into MatMulNBits only with its optimizer on, and tract 0.23
//! does not read int4 tensors.
//!
//! With input statistics ([`crate::gram`]) products may be rounded by GPTQ, and under a size
//! budget each gets 2 or 4 bits, int8 or float ([`crate::budget`]); 2-bit blocks carry zero points
//! ([`crate::blockwise`]).
//!
//! Scales are rounded to float16 before the weights are rounded with them: tract keeps a block-32
//! weight as its Q4_0 format, whose scales are float16, so both engines then dequantize to the same
//! values.

use qaforge_onnx::edit::{f32_values, int_attribute, node, raw_tensor, Prune, Rewrite, MS_DOMAIN};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, GraphProto, TensorProto};

use crate::blockwise::{self, BlockWeights};
use crate::budget::{Plan, Stored};
use crate::graph::{KeptFloat, Reasons};
use crate::int8;
use crate::options::{Int4Options, TableBits, WeightOptions, WeightStorage};
use crate::selection::{activation_matmuls, Decision, Selection};
use crate::QuantizeError;

/// What the INT4 pass did.
#[derive(Debug, Default)]
pub struct Int4Summary {
    /// MatMuls with 4-bit weights.
    pub quantized: Vec<String>,
    /// MatMuls with 2-bit weights (under a size budget).
    pub two_bit: Vec<String>,
    /// Nodes kept float (or int8), and why.
    pub kept_float: Reasons,
    /// Embedding tables stored in 4 bits (GatherBlockQuantized).
    pub int4_tables: Vec<String>,
    /// Embedding tables stored int8.
    pub int8_tables: Vec<String>,
}

/// Symmetric 4-bit block quantization of `values`, `groups` rows of `len` values each, in blocks
/// of `block_size` along a row (the last block zero-padded). Returns the codes (0..=15, zero at 8,
/// so -8..=7 around it) and one scale per block, rounded to float16 first.
///
/// Each block's scale is searched, not just `max |w| / 7` (round to nearest): among `max |w| / d`
/// for d from 6 to 9 in steps of 1/8, the one whose rounded and clamped codes reproduce the block
/// with the least squared error. A larger d gives the many small weights finer steps at the cost
/// of clipping the few largest; d = 7 is among the candidates, so the error is never worse than
/// round-to-nearest's. Ties keep the smaller d, and candidates are tried in a fixed order, so the
/// result is the same on every CPU.
pub fn quantize_blocks(values: &[f32], groups: usize, len: usize, block_size: usize) -> (Vec<u8>, Vec<f32>) {
    let blocks = len.div_ceil(block_size);
    let mut codes = vec![8u8; groups * blocks * block_size];
    let mut scales = vec![0f32; groups * blocks];
    for g in 0..groups {
        for b in 0..blocks {
            let (start, end) = (b * block_size, ((b + 1) * block_size).min(len));
            let row = &values[g * len + start..g * len + end];
            let grid = blockwise::grid(row, 4);
            scales[g * blocks + b] = grid.scale;
            for (i, &v) in row.iter().enumerate() {
                codes[(g * blocks + b) * block_size + i] = grid.code(v);
            }
        }
    }
    (codes, scales)
}

/// Two codes per byte, the first in the low nibble (both operators' layout).
fn pack_nibbles(codes: &[u8]) -> Vec<u8> {
    codes.chunks(2).map(|pair| pair[0] | (pair.get(1).copied().unwrap_or(8) << 4)).collect()
}

/// The MatMulNBits node for `weights`, reading `x` into `output`.
fn mat_mul_nbits(
    rw: &mut Rewrite<'_>,
    name: &str,
    x: &str,
    w: &str,
    output: &str,
    weights: &BlockWeights,
) -> tract_onnx::pb::NodeProto {
    let (k, n, blocks, bits) = (weights.k, weights.n, weights.blocks(), weights.bits);
    let suffix = format!("int{bits}");
    let blob = weights.block_size * bits as usize / 8;
    let b = rw.add_initializer(
        &format!("{w}.{suffix}"),
        raw_tensor("", &[n as i64, blocks as i64, blob as i64], DataType::Uint8, weights.packed_codes()),
    );
    let s = rw.add_initializer(&format!("{w}.{suffix}_scale"), float_tensor(&[(n * blocks) as i64], &weights.scales));
    let mut inputs = vec![x.to_string(), b, s];
    if weights.needs_zero_points() {
        let zeros = weights.packed_zeros();
        inputs.push(rw.add_initializer(
            &format!("{w}.{suffix}_zero_point"),
            raw_tensor("", &[zeros.len() as i64], DataType::Uint8, zeros),
        ));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attributes: Vec<AttributeProto> = vec![
        int_attribute("K", k as i64),
        int_attribute("N", n as i64),
        int_attribute("bits", bits as i64),
        int_attribute("block_size", weights.block_size as i64),
    ];
    microsoft(node("MatMulNBits", name, &inputs, &[output], attributes))
}

fn float_tensor(dims: &[i64], values: &[f32]) -> TensorProto {
    raw_tensor("", dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn microsoft(mut n: tract_onnx::pb::NodeProto) -> tract_onnx::pb::NodeProto {
    n.domain = MS_DOMAIN.into();
    n
}

/// Quantizes `graph` in place; `exclude` and `int8_qa_head` as in int8 (the QA head stays float
/// unless asked, and then gets int8 weights, not 4 bits). `plan` says how products are stored
/// ([`crate::budget::planner`] on the same graph: every product has an entry).
pub fn quantize(
    graph: &mut GraphProto,
    selection: &Selection,
    options: Int4Options,
    plan: &Plan,
) -> Result<Int4Summary, QuantizeError> {
    let block_size = options.block_size;
    if !(16..=256).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(QuantizeError::Graph(format!(
            "--block-size {block_size}: int4 blocks hold 16, 32, 64, 128 or 256 weights"
        )));
    }
    let mut summary = Int4Summary { kept_float: activation_matmuls(graph), ..Default::default() };
    let int8_weights = WeightOptions { per_tensor: false, storage: WeightStorage::Int8 };
    let mut rw = Rewrite::new(graph);
    for (i, decision) in selection.decisions().iter().cloned() {
        let (x, w, name, output) = {
            let n = rw.node(i);
            (n.input[0].clone(), n.input[1].clone(), n.name.clone(), n.output[0].clone())
        };
        let int8_reason = match decision {
            Decision::Float(reason) => {
                summary.kept_float.insert(name, reason);
                continue;
            }
            // The embedding path's product reads table rows directly (MobileBERT's trigram
            // transformation), and the QA head decides every answer: 8 bits for both.
            Decision::WeightOnly(_) => Some(KeptFloat::EmbeddingPathInt4),
            Decision::Quantize if selection.is_qa_head(i) => Some(KeptFloat::QaHeadInt8Weights),
            Decision::Quantize => None,
        };
        match int8_reason {
            Some(reason) => {
                let (dq, dq_out) = int8::dequantized_weight(&mut rw, &w, 1, int8_weights)?;
                rw.insert_before(i, dq);
                rw.graph.node[i].input[1] = dq_out;
                summary.kept_float.insert(name, reason);
            }
            None => match plan.stored.get(&output) {
                Some(Stored::Float) => {
                    summary.kept_float.insert(name, KeptFloat::BudgetFloat);
                }
                Some(Stored::Int8) => {
                    let (dq, dq_out) = int8::dequantized_weight(&mut rw, &w, 1, int8_weights)?;
                    rw.insert_before(i, dq);
                    rw.graph.node[i].input[1] = dq_out;
                    summary.kept_float.insert(name, KeptFloat::BudgetInt8);
                }
                Some(Stored::Blocks(weights)) => {
                    let replacement = mat_mul_nbits(&mut rw, &name, &x, &w, &output, weights);
                    rw.replace(i, [replacement]);
                    if weights.bits == 2 {
                        summary.two_bit.push(name);
                    } else {
                        summary.quantized.push(name);
                    }
                }
                // The planner lists every product it finds; one missing here means the graph
                // changed between planning and quantizing.
                None => return Err(QuantizeError::Graph(format!("`{name}`: no storage was planned for this product"))),
            },
        }
    }
    // Embedding tables: those gathered by the token ids in 4-bit blocks along each row where the
    // row holds a whole block of at least 16, else (or with --embeddings int8, or read by a Slice)
    // int8 per row.
    for (table, readers) in int8::embedding_tables(rw.graph) {
        // tract's GatherBlockQuantized takes int64 indices only, and tract reads indices computed
        // in the graph (RoBERTa's positions) as its dimension type: a table gathered by anything
        // but an int64 graph input (the token ids) is stored int8.
        let gathered = readers.iter().all(|&r| {
            let n = rw.node(r);
            n.op_type == "Gather"
                && qaforge_onnx::edit::int_attr(n, "axis").unwrap_or(0) == 0
                && rw.input_elem_type(&n.input[1]) == Some(DataType::Int64 as i32)
        });
        let init = rw.initializer(&table).ok_or_else(|| QuantizeError::Graph(format!("no initializer `{table}`")))?;
        let (rows, cols) = (init.dims[0] as usize, init.dims[1] as usize);
        let table_block = (4..=block_size.trailing_zeros()).rev().map(|b| 1usize << b).find(|b| cols % b == 0);
        match (options.tables, gathered, table_block) {
            (TableBits::Int4, true, Some(table_block)) => {
                let (codes, scales) = quantize_blocks(&f32_values(init)?, rows, cols, table_block);
                let data = rw.add_initializer(
                    &format!("{table}.int4"),
                    raw_tensor("", &[rows as i64, (cols / 2) as i64], DataType::Uint8, pack_nibbles(&codes)),
                );
                let s = rw.add_initializer(
                    &format!("{table}.int4_scale"),
                    float_tensor(&[rows as i64, (cols / table_block) as i64], &scales),
                );
                for r in readers {
                    let n = rw.node(r).clone();
                    let attributes = vec![
                        int_attribute("bits", 4),
                        int_attribute("block_size", table_block as i64),
                        int_attribute("gather_axis", 0),
                        int_attribute("quantize_axis", 1),
                    ];
                    rw.replace(
                        r,
                        [microsoft(node(
                            "GatherBlockQuantized",
                            &n.name,
                            &[&data, &n.input[1], &s],
                            &[&n.output[0]],
                            attributes,
                        ))],
                    );
                }
                summary.int4_tables.push(table);
            }
            _ => {
                int8::store_table_int8(&mut rw, &table, &readers)?;
                summary.int8_tables.push(table);
            }
        }
    }
    rw.finish(Prune::Initializers);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_search_the_scale_with_the_least_error() {
        // One group of 20 values in blocks of 16: the second block is zero-padded.
        let mut values: Vec<f32> = (0..20).map(|i| (i as f32 - 8.0) / 8.0).collect();
        values[3] = -2.0;
        let (codes, scales) = quantize_blocks(&values, 1, 20, 16);
        assert_eq!(codes.len(), 32);
        assert_eq!(codes[8], 8, "zero is exact");
        assert!(codes[20..].iter().all(|&c| c == 8), "padding dequantizes to zero");
        let error = |codes: &[u8], scales: &[f32]| -> f32 {
            values.iter().enumerate().map(|(i, v)| ((codes[i] as f32 - 8.0) * scales[i / 16] - v).powi(2)).sum()
        };
        // Round to nearest (max |w| / 7, codes -7..=7) is one of the candidates: never better.
        let nearest: Vec<f32> =
            [2.0f32 / 7.0, 11.0 / 8.0 / 7.0].iter().map(|s| half::f16::from_f32(*s).to_f32()).collect();
        let nearest_codes: Vec<u8> = values
            .iter()
            .enumerate()
            .map(|(i, v)| ((v / nearest[i / 16]).round().clamp(-8.0, 7.0) as i8 + 8) as u8)
            .collect();
        assert!(
            error(&codes, &scales) <= error(&nearest_codes, &nearest),
            "{} > {}",
            error(&codes, &scales),
            error(&nearest_codes, &nearest)
        );
        assert!(scales.iter().all(|&s| half::f16::from_f32(s).to_f32() == s), "float16-exact scales");
        for (i, v) in values.iter().enumerate() {
            let s = scales[i / 16];
            assert!(((codes[i] as f32 - 8.0) * s - v).abs() <= 2.0 * s, "value {i} near its code");
        }
        assert_eq!(pack_nibbles(&[1, 2, 15]), vec![0x21, 0x8f]);
        // An all-zero block: scale 1, codes at the zero point.
        assert_eq!(quantize_blocks(&[0.0; 16], 1, 16, 16), (vec![8; 16], vec![1.0]));
    }
}
