//! MobileBERT's NoNorm (`x * gamma + beta`, an elementwise scale and shift) folded into the
//! linear layer before it, where nothing else reads that layer's output:
//! `(x W + b) * gamma + beta = x (W diag(gamma)) + (b * gamma + beta)`, exact in real arithmetic.
//! ONNX Runtime has no NoNorm kernel and fuses neither op, so each fold removes two passes over
//! the activation. In MobileBERT it applies to the bottleneck projections (the layer input and
//! the shared key/query input); the other NoNorms follow a residual addition, which
//! [`fold_residual_scale_shift`](crate::fold_residual_scale_shift) takes.

use qaforge_onnx::edit::Rewrite;

use crate::no_norm::{LinearLayer, ScaleShift};
use crate::{FuseError, Pass};

/// The fold (see the module documentation).
pub struct FoldScaleShift;

impl Pass for FoldScaleShift {
    fn name(&self) -> &'static str {
        "fold_scale_shift"
    }

    fn describe(&self) -> &'static str {
        "elementwise scale and shift (NoNorm) after a linear layer folded into its weights and bias"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        rw.each_live(&["Mul"], |rw, mul| {
            let Some(norm) = ScaleShift::at(rw, mul) else { return Ok(false) };
            let Some(layer) = LinearLayer::producing(rw, &norm.input, mul, norm.width()) else { return Ok(false) };
            let Some(bias) = layer.absorb_scale(rw, &norm) else { return Ok(false) };
            let output = rw.node(norm.shift).output[0].clone();
            match layer.set_bias(rw, &format!("{}.shifted", norm.input), &bias) {
                Some(add) => {
                    // The bias Add now gives the NoNorm's output.
                    rw.graph.node[add].output = vec![output];
                    rw.remove([norm.mul, norm.shift]);
                }
                None => {
                    // No bias to take the shift: the shift stays, reading the product.
                    let product = layer.product(rw);
                    rw.graph.node[norm.shift].input = vec![product, norm.beta_name.clone()];
                    rw.remove([norm.mul]);
                }
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use qaforge_onnx::builder::{Dim, GraphBuilder};
    use tract_onnx::prelude::*;

    use crate::{fold, op_counts, FuseSummary};

    /// x [2, 3] → MatMul(W [3, 4]) [→ Add(b)] → Mul(gamma) → Add(beta) → y.
    fn linear_then_no_norm(with_bias: bool) -> tract_onnx::pb::ModelProto {
        let mut g = GraphBuilder::new();
        let x = g.input("x", tract_onnx::pb::tensor_proto::DataType::Float, &[Dim::Fixed(2), Dim::Fixed(3)]);
        let w = g.f32_initializer("w", &[3, 4], &[0.5, -1.0, 2.0, 0.25, 1.5, 0.75, -0.5, 1.0, -2.0, 0.125, 1.0, 3.0]);
        let gamma = g.f32_initializer("gamma", &[4], &[2.0, -0.5, 1.5, 0.0]);
        let beta = g.f32_initializer("beta", &[4], &[0.1, 0.2, -0.3, 0.4]);
        let mut t = g.node("MatMul", "linear", &[&x, &w], vec![]);
        if with_bias {
            let b = g.f32_initializer("b", &[4], &[1.0, -1.0, 0.5, 2.0]);
            t = g.node("Add", "linear.bias", &[&t, &b], vec![]);
        }
        let scaled = g.node("Mul", "norm.scale", &[&t, &gamma], vec![]);
        let y = g.node("Add", "norm.shift", &[&scaled, &beta], vec![]);
        let y = g.node("Identity", "y", &[&y], vec![]);
        g.output(&y, tract_onnx::pb::tensor_proto::DataType::Float, &[Dim::Fixed(2), Dim::Fixed(4)]);
        g.finish("fold", 17, vec![])
    }

    fn run(model: &tract_onnx::pb::ModelProto) -> Vec<f32> {
        let plan =
            tract_onnx::onnx().model_for_proto_model(model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
        let x = tract_ndarray::Array2::from_shape_vec((2, 3), vec![1.0f32, -2.0, 0.5, 3.0, 0.25, -1.0]).unwrap();
        let out = plan.run(tvec!(x.into_tensor().into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn no_norm_folds_into_the_linear_layer_with_the_same_outputs() {
        for with_bias in [true, false] {
            let model = linear_then_no_norm(with_bias);
            let before = run(&model);
            let mut folded = model.clone();
            let mut summary = FuseSummary::default();
            fold(&mut folded, &mut summary).unwrap();
            assert_eq!(summary.passes, vec![("fold_scale_shift", 1), ("fold_residual_scale_shift", 0)]);
            let ops = op_counts(&folded);
            assert_eq!(ops.get("Mul"), None, "the scale is gone: {ops:?}");
            assert_eq!(ops.get("Add"), Some(&1), "one addition (bias and shift, or the shift alone): {ops:?}");
            let after = run(&folded);
            for (a, b) in before.iter().zip(&after) {
                assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{before:?} vs {after:?}");
            }
        }
    }

    #[test]
    fn a_linear_output_read_elsewhere_is_not_folded() {
        let mut model = linear_then_no_norm(true);
        // The biased output is also a graph output: folding would change it.
        let graph = model.graph.as_mut().unwrap();
        let mut extra = graph.output[0].clone();
        extra.name = "linear.bias".into();
        graph.output.push(extra);
        let mut summary = FuseSummary::default();
        fold(&mut model, &mut summary).unwrap();
        assert_eq!(summary.passes, vec![("fold_scale_shift", 0), ("fold_residual_scale_shift", 0)]);
    }
}
