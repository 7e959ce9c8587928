//! A residual addition followed by LayerNormalization over the last axis, fused into
//! `com.microsoft.SkipLayerNormalization` (one pass over the activation instead of three), with
//! the constant bias of the linear layer before it folded in as the kernel's `bias` input where
//! nothing else reads the biased tensor. When the sum itself is read elsewhere, the kernel's
//! fourth output (input + skip + bias) gives it.
//!
//! The embedding sums are left alone: one of their operands is a table lookup whose shape
//! (`[sequence, hidden]` positions) SkipLayerNormalization may not accept as `input`.

use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, NodeProto};

use qaforge_onnx::edit::{float_attr, int_attr, node, Rewrite};
use crate::{FuseError, Pass, MS_DOMAIN};

/// The fusion (see the module documentation).
pub struct SkipLayerNormFusion;

impl Pass for SkipLayerNormFusion {
    fn name(&self) -> &'static str {
        "skip_layer_norm"
    }

    fn describe(&self) -> &'static str {
        "residual Add (+ the previous layer's bias) → LayerNormalization fused into com.microsoft SkipLayerNormalization"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        rw.each_live(&["LayerNormalization"], |rw, ln| {
            let n = rw.node(ln);
            if n.input.len() != 3 || n.output.len() != 1 {
                return Ok(false);
            }
            if int_attr(n, "axis").is_some_and(|axis| axis != -1) {
                return Ok(false);
            }
            let epsilon = float_attr(n, "epsilon").unwrap_or(1e-5);
            let (sum, gamma, beta) = (n.input[0].clone(), n.input[1].clone(), n.input[2].clone());
            let Some(width) = rw.f32_vector(&gamma, None).map(|g| g.len()) else { return Ok(false) };
            if rw.f32_vector(&beta, Some(width)).is_none() {
                return Ok(false);
            }
            let Some(add) = rw.producer_op(&sum, "Add") else { return Ok(false) };
            let [a, b] = rw.node(add).input.as_slice() else { return Ok(false) };
            let (a, b) = (a.clone(), b.clone());
            let table_lookup = |t: &str| rw.producer(t).is_some_and(|p| matches!(rw.node(p).op_type.as_str(), "Gather" | "Slice"));
            if rw.constant(&a).is_some() || rw.constant(&b).is_some() || table_lookup(&a) || table_lookup(&b) {
                return Ok(false);
            }
            // The bias of the linear layer producing one operand, folded in where only the sum reads it.
            let folded = [&a, &b].into_iter().find_map(|operand| {
                let p = rw.producer_op(operand, "Add")?;
                if !rw.only_read_by(operand, add) {
                    return None;
                }
                let [x, y] = rw.node(p).input.as_slice() else { return None };
                let (input, bias) = match (rw.constant(x), rw.constant(y)) {
                    (None, Some(_)) => (x.clone(), y.clone()),
                    (Some(_), None) => (y.clone(), x.clone()),
                    _ => return None,
                };
                rw.f32_vector(&bias, Some(width))?;
                rw.producer_op(&input, "MatMul").or_else(|| rw.producer(&input).filter(|&q| rw.node(q).domain == MS_DOMAIN))?;
                Some((operand.clone(), input, bias))
            });
            let (input, skip, bias) = match folded {
                Some((operand, input, bias)) => (input, if operand == a { b.clone() } else { a.clone() }, Some(bias)),
                None => (a.clone(), b.clone(), None),
            };
            let output = rw.node(ln).output[0].clone();
            // The sum is still read elsewhere (the next residual): the kernel's 4th output gives it.
            let sum_read_elsewhere = rw.consumers(&sum).iter().any(|&c| c != ln) || rw.is_graph_output(&sum);
            let outputs: Vec<&str> = if sum_read_elsewhere { vec![&output, "", "", &sum] } else { vec![&output] };
            let mut inputs: Vec<&str> = vec![&input, &skip, &gamma, &beta];
            if let Some(bias) = &bias {
                inputs.push(bias);
            }
            let name = rw.names.fresh(&format!("{}.fused", rw.node(ln).name));
            let eps = AttributeProto { name: "epsilon".into(), r#type: AttributeType::Float as i32, f: epsilon, ..Default::default() };
            let fused_node = NodeProto { domain: MS_DOMAIN.into(), ..node("SkipLayerNormalization", &name, &inputs, &outputs, vec![eps]) };
            // At the sum's place: its other readers may come before the LayerNormalization.
            rw.insert_before(add, fused_node);
            // The sum's own Add goes; its readers now read the fused op's 4th output.
            rw.remove([ln, add]);
            Ok(true)
        })
    }
}
