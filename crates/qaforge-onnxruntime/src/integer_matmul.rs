//! The int8 products in ONNX Runtime's one-kernel forms, with the linear layer's bias folded in:
//!
//! - dynamic: `DynamicQuantizeLinear(x) → MatMulInteger(·, W) → Cast → Mul(·, x_scale × w_scale)
//!   [→ Add(bias)]` becomes `com.microsoft.DynamicQuantizeMatMul(x, W, w_scale, w_zero_point, bias)`;
//! - static (QDQ): `DequantizeLinear(QuantizeLinear(x)) → MatMul(·, DequantizeLinear(W)) [→ Add(bias)]`
//!   becomes `QuantizeLinear(x) → com.microsoft.MatMulIntegerToFloat(xq, W, x_scale, w_scale,
//!   x_zero_point, w_zero_point, bias)`.
//!
//! Both compute the same integer products as the standard form, with the same scales; ONNX
//! Runtime's own level-2 fusions reach MatMulIntegerToFloat too, but leave every bias as a
//! separate Add and (dynamic) the quantization of x as a separate node. QLinearMatMul is not used:
//! it needs the output's range, and every product here feeds float bias and residual additions.

use qaforge_onnx::edit::{node, raw_tensor};
use tract_onnx::pb::{tensor_proto::DataType, NodeProto, TensorProto};

use qaforge_onnx::edit::Rewrite;
use qaforge_onnx::edit::MS_DOMAIN;

use crate::{FuseError, Pass};

/// The fusion (see the module documentation).
pub struct IntegerMatMulFusion;

/// Elements of a tensor, `None` for invalid dims.
fn element_count(t: &TensorProto) -> Option<usize> {
    qaforge_onnx::edit::element_count(t).ok()
}

/// The constant bias added to `tensor`, when only that addition reads it: (Add node, bias name).
fn bias_after(rw: &Rewrite<'_>, tensor: &str, width: usize) -> Option<(usize, String)> {
    let &add = rw.consumers(tensor).first()?;
    if !rw.only_read_by(tensor, add) || rw.node(add).op_type != "Add" {
        return None;
    }
    let bias = rw.other_input(add, tensor)?;
    rw.f32_vector(&bias, Some(width)).map(|_| (add, bias))
}

impl Pass for IntegerMatMulFusion {
    fn name(&self) -> &'static str {
        "integer_matmul"
    }

    fn describe(&self) -> &'static str {
        "int8 products as com.microsoft DynamicQuantizeMatMul (dynamic) or MatMulIntegerToFloat (static), bias folded"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        rw.each_live(&["MatMulInteger", "MatMul"], |rw, i| {
            let found = match rw.node(i).op_type.as_str() {
                "MatMulInteger" => self.dynamic(rw, i),
                _ => self.static_qdq(rw, i),
            };
            let Some((last, fused_node)) = found else { return Ok(false) };
            rw.replace(last, [fused_node]);
            Ok(true)
        })
    }
}

impl IntegerMatMulFusion {
    /// The dynamic chain from MatMulInteger `mi`: (the chain's last node, the fused node).
    fn dynamic(&self, rw: &mut Rewrite<'_>, mi: usize) -> Option<(usize, NodeProto)> {
        let n = rw.node(mi);
        let (xq, w, xz) = (n.input.first()?.clone(), n.input.get(1)?.clone(), n.input.get(2)?.clone());
        let wz = n.input.get(3).filter(|z| !z.is_empty()).cloned();
        let dql = rw.producer_op(&xq, "DynamicQuantizeLinear")?;
        let d = rw.node(dql);
        if d.output.first() != Some(&xq) || d.output.get(2) != Some(&xz) {
            return None;
        }
        let (x, xs) = (d.input[0].clone(), d.output.get(1)?.clone());
        let weight = rw.initializer(&w)?;
        if weight.dims.len() != 2 {
            return None;
        }
        let cols = usize::try_from(weight.dims[1]).ok()?;
        let product = rw.node(mi).output[0].clone();
        let &cast = rw.consumers(&product).first()?;
        let is_float_cast = rw.node(cast).op_type == "Cast"
            && qaforge_onnx::edit::int_attr(rw.node(cast), "to") == Some(DataType::Float as i64);
        if !rw.only_read_by(&product, cast) || !is_float_cast {
            return None;
        }
        let cast_out = rw.node(cast).output[0].clone();
        let &mul = rw.consumers(&cast_out).first()?;
        if !rw.only_read_by(&cast_out, mul) || rw.node(mul).op_type != "Mul" {
            return None;
        }
        // Mul(cast, Mul(x_scale, w_scale)).
        let combined = rw.other_input(mul, &cast_out)?;
        let scale_mul = rw
            .producer_op(&combined, "Mul")
            .filter(|&s| rw.only_read_by(&combined, mul) && rw.node(s).input.contains(&xs))?;
        let ws = rw.other_input(scale_mul, &xs)?;
        let scale = rw.initializer(&ws)?;
        let scale_count = element_count(scale)?;
        if scale.data_type != DataType::Float as i32 || !(scale_count == 1 || scale_count == cols) {
            return None;
        }
        let per_column = scale.dims.len() == 1 && scale_count == cols;
        // A scalar weight zero point beside per-column scales is spread to one per column: the
        // kernel takes both per tensor or both per column.
        let wz = match wz {
            Some(z) => {
                let zt = rw.initializer(&z)?.clone();
                let count = element_count(&zt)?;
                if per_column && count == 1 && zt.raw_data.len() == 1 {
                    let base = format!("{z}.per_column");
                    Some(rw.add_initializer(
                        &base,
                        raw_tensor(
                            "",
                            &[cols as i64],
                            DataType::try_from(zt.data_type).ok()?,
                            vec![zt.raw_data[0]; cols],
                        ),
                    ))
                } else if count == scale_count {
                    Some(z)
                } else {
                    return None;
                }
            }
            None => None,
        };
        let out = rw.node(mul).output[0].clone();
        let (last, output, bias) = match bias_after(rw, &out, cols) {
            Some((add, bias)) => (add, rw.node(add).output[0].clone(), Some(bias)),
            None => (mul, out, None),
        };
        let mut inputs: Vec<&str> = vec![&x, &w, &ws, wz.as_deref().unwrap_or("")];
        if let Some(b) = &bias {
            inputs.push(b);
        }
        while inputs.last() == Some(&"") {
            inputs.pop();
        }
        let name = rw.names.fresh(&format!("{}.fused", rw.node(mi).name));
        Some((
            last,
            NodeProto { domain: MS_DOMAIN.into(), ..node("DynamicQuantizeMatMul", &name, &inputs, &[&output], vec![]) },
        ))
    }

    /// The QDQ chain around MatMul `mm`: (the chain's last node, the fused node).
    fn static_qdq(&self, rw: &mut Rewrite<'_>, mm: usize) -> Option<(usize, NodeProto)> {
        let n = rw.node(mm);
        let (a, b) = (n.input.first()?.clone(), n.input.get(1)?.clone());
        // The activation: DequantizeLinear(QuantizeLinear(x)) with per-tensor constants.
        let dqa = rw.producer_op(&a, "DequantizeLinear")?;
        let [xq, xs, xz] = rw.node(dqa).input.as_slice() else { return None };
        let (xq, xs, xz) = (xq.clone(), xs.clone(), xz.clone());
        rw.producer_op(&xq, "QuantizeLinear")?;
        if rw.initializer(&xs).and_then(element_count) != Some(1)
            || rw.initializer(&xz).and_then(element_count) != Some(1)
        {
            return None;
        }
        // The weight: DequantizeLinear(W int8/uint8 [K, N], per-column or per-tensor).
        let dqw = rw.producer_op(&b, "DequantizeLinear")?;
        let [w, ws, wz] = rw.node(dqw).input.as_slice() else { return None };
        let (w, ws, wz) = (w.clone(), ws.clone(), wz.clone());
        let weight = rw.initializer(&w)?;
        if weight.dims.len() != 2
            || !(weight.data_type == DataType::Int8 as i32 || weight.data_type == DataType::Uint8 as i32)
        {
            return None;
        }
        let cols = usize::try_from(weight.dims[1]).ok()?;
        let scale_count = rw.initializer(&ws).and_then(element_count)?;
        let axis = qaforge_onnx::edit::int_attr(rw.node(dqw), "axis").unwrap_or(1);
        let per_column = scale_count == cols && (axis == 1 || axis == -1);
        if !(scale_count == 1 || per_column) || rw.initializer(&wz).and_then(element_count) != Some(scale_count) {
            return None;
        }
        let out = rw.node(mm).output[0].clone();
        let (last, output, bias) = match bias_after(rw, &out, cols) {
            Some((add, bias)) => (add, rw.node(add).output[0].clone(), Some(bias)),
            None => (mm, out, None),
        };
        let mut inputs: Vec<&str> = vec![&xq, &w, &xs, &ws, &xz, &wz];
        if let Some(b) = &bias {
            inputs.push(b);
        }
        let name = rw.names.fresh(&format!("{}.fused", rw.node(mm).name));
        Some((
            last,
            NodeProto { domain: MS_DOMAIN.into(), ..node("MatMulIntegerToFloat", &name, &inputs, &[&output], vec![]) },
        ))
    }
}
