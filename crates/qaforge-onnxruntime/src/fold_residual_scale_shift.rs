//! MobileBERT's NoNorm after a residual addition, folded into the linear layer that feeds the
//! addition: `((x W + b) + r) * gamma + beta = x (W diag(gamma)) + (b * gamma + beta) + r * gamma`,
//! exact in real arithmetic.
//!
//! [`fold_scale_shift`](crate::fold_scale_shift) cannot take these NoNorms: the scale applies to a
//! sum, not to the linear layer's output alone. Here the residual branch keeps one scale
//! (`Mul(r, gamma)`) and the shift joins the layer's bias, so three passes over the activation
//! (residual Add, Mul, Add) become two (Mul, Add), and the bias stays where the int8 fusions take
//! it into the product's kernel. MobileBERT has six of these per layer (attention output, four
//! FFN outputs, output bottleneck).
//!
//! Quantization is untouched in kind: the tensors int8 modes quantize (the products' inputs, the
//! NoNorm outputs) keep their values; only the weights change by a per-output-column factor,
//! which per-channel weight scales absorb.

use qaforge_onnx::edit::{node, Rewrite};

use crate::no_norm::{LinearLayer, ScaleShift};
use crate::{FuseError, Pass};

/// The fold (see the module documentation).
pub struct FoldResidualScaleShift;

impl Pass for FoldResidualScaleShift {
    fn name(&self) -> &'static str {
        "fold_residual_scale_shift"
    }

    fn describe(&self) -> &'static str {
        "elementwise scale and shift (NoNorm) after a residual addition folded into the linear layer that feeds it"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        rw.each_live(&["Mul"], |rw, mul| {
            let Some(norm) = ScaleShift::at(rw, mul) else { return Ok(false) };
            // The residual addition: Add(linear layer output, r), r computed (not a constant).
            let Some(residual) = rw.producer_op(&norm.input, "Add") else { return Ok(false) };
            let Some((linear_out, r, layer)) = rw.node(residual).input.iter().find_map(|a| {
                let r = rw.other_input(residual, a)?;
                if rw.constant(&r).is_some() || r == *a {
                    return None;
                }
                Some((a.clone(), r, LinearLayer::producing(rw, a, residual, norm.width())?))
            }) else {
                return Ok(false);
            };
            let Some(bias) = layer.absorb_scale(rw, &norm) else { return Ok(false) };
            let mut tail = Vec::new();
            let linear_out = match layer.set_bias(rw, &format!("{linear_out}.shifted"), &bias) {
                Some(_) => linear_out,
                None => {
                    // No bias to take the shift: the shift (all the bias there is) follows the product.
                    let product = layer.product(rw);
                    let biased = rw.names.fresh(&format!("{product}.shifted"));
                    let add_name = rw.names.fresh(&format!("{}.bias", rw.node(layer.matmul).name));
                    tail.push(node("Add", &add_name, &[&product, &norm.beta_name], &[&biased], vec![]));
                    biased
                }
            };
            // Where the residual addition was: r * gamma. Where the shift was: the layer's output
            // (with its new bias) plus that; the shift's output name stays, so readers are unchanged.
            let residual_name = rw.node(residual).name.clone();
            let r_scaled = rw.names.fresh(&format!("{r}.scaled"));
            let scale_node = rw.names.fresh(&format!("{residual_name}.scale"));
            rw.replace(residual, [node("Mul", &scale_node, &[&r, &norm.gamma_name], &[&r_scaled], vec![])]);
            let output = rw.node(norm.shift).output[0].clone();
            let shift_name = rw.node(norm.shift).name.clone();
            tail.push(node("Add", &shift_name, &[&linear_out, &r_scaled], &[&output], vec![]));
            rw.replace(norm.shift, tail);
            rw.remove([norm.mul]);
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use qaforge_onnx::builder::{Dim, GraphBuilder};
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::prelude::*;

    use crate::{fold, op_counts, FuseSummary};

    /// x [2, 3], r [2, 4] → MatMul(x, W [3, 4]) [→ Add(b)] → Add(·, r) → Mul(gamma) → Add(beta) → y.
    fn residual_no_norm(with_bias: bool) -> tract_onnx::pb::ModelProto {
        let mut g = GraphBuilder::new();
        let x = g.input("x", DataType::Float, &[Dim::Fixed(2), Dim::Fixed(3)]);
        let r = g.input("r", DataType::Float, &[Dim::Fixed(2), Dim::Fixed(4)]);
        let w = g.f32_initializer("w", &[3, 4], &[0.5, -1.0, 2.0, 0.25, 1.5, 0.75, -0.5, 1.0, -2.0, 0.125, 1.0, 3.0]);
        let gamma = g.f32_initializer("gamma", &[4], &[2.0, -0.5, 1.5, 0.0]);
        let beta = g.f32_initializer("beta", &[4], &[0.1, 0.2, -0.3, 0.4]);
        let mut t = g.node("MatMul", "linear", &[&x, &w], vec![]);
        if with_bias {
            let b = g.f32_initializer("b", &[4], &[1.0, -1.0, 0.5, 2.0]);
            t = g.node("Add", "linear.bias", &[&t, &b], vec![]);
        }
        let sum = g.node("Add", "residual", &[&t, &r], vec![]);
        let scaled = g.node("Mul", "norm.scale", &[&sum, &gamma], vec![]);
        let y = g.node("Add", "norm.shift", &[&scaled, &beta], vec![]);
        let y = g.node("Identity", "y", &[&y], vec![]);
        g.output(&y, DataType::Float, &[Dim::Fixed(2), Dim::Fixed(4)]);
        g.finish("fold", 17, vec![])
    }

    fn run(model: &tract_onnx::pb::ModelProto) -> Vec<f32> {
        let plan =
            tract_onnx::onnx().model_for_proto_model(model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
        let x = tract_ndarray::Array2::from_shape_vec((2, 3), vec![1.0f32, -2.0, 0.5, 3.0, 0.25, -1.0]).unwrap();
        let r =
            tract_ndarray::Array2::from_shape_vec((2, 4), vec![0.3f32, -1.5, 2.5, 0.7, -0.2, 1.1, -3.0, 4.0]).unwrap();
        let out = plan.run(tvec!(x.into_tensor().into(), r.into_tensor().into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    fn folds(model: &mut tract_onnx::pb::ModelProto) -> usize {
        let mut summary = FuseSummary::default();
        fold(model, &mut summary).unwrap();
        summary.passes.iter().find(|p| p.0 == "fold_residual_scale_shift").map(|p| p.1).unwrap()
    }

    #[test]
    fn residual_no_norm_folds_into_the_linear_layer_with_the_same_outputs() {
        for with_bias in [true, false] {
            let model = residual_no_norm(with_bias);
            let before = run(&model);
            let mut folded = model.clone();
            assert_eq!(folds(&mut folded), 1);
            qaforge_onnx::check_types(&folded).unwrap();
            let ops = op_counts(&folded);
            assert_eq!(ops.get("Mul"), Some(&1), "only the residual branch's scale is left: {ops:?}");
            assert_eq!(ops.get("Add"), Some(&2), "the bias (taking the shift) and the residual: {ops:?}");
            let after = run(&folded);
            assert_eq!(before.len(), 8);
            for (a, b) in before.iter().zip(&after) {
                assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{before:?} vs {after:?}");
            }
        }
    }

    #[test]
    fn a_sum_or_linear_output_read_elsewhere_is_not_folded() {
        for extra_output in ["linear.bias", "residual"] {
            let mut model = residual_no_norm(true);
            // Also a graph output: folding would change it.
            let graph = model.graph.as_mut().unwrap();
            let mut extra = graph.output[0].clone();
            extra.name = extra_output.into();
            graph.output.push(extra);
            assert_eq!(folds(&mut model), 0, "{extra_output}");
        }
    }
}
