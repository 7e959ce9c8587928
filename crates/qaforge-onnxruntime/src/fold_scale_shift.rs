//! MobileBERT's NoNorm (`x * gamma + beta`, an elementwise scale and shift) folded into the
//! linear layer before it, where nothing else reads that layer's output:
//! `(x W + b) * gamma + beta = x (W diag(gamma)) + (b * gamma + beta)`, exact in real arithmetic.
//! ONNX Runtime has no NoNorm kernel and fuses neither op, so each fold removes two passes over
//! the activation. In MobileBERT it applies to the bottleneck projections (the layer input and
//! the shared key/query input); the other NoNorms follow a residual addition, which no fold
//! removes.

use qaforge_quantize::graph::raw_tensor;
use tract_onnx::pb::tensor_proto::DataType;

use crate::rewrite::Rewrite;
use crate::{FuseError, Pass};

/// The fold (see the module documentation).
pub struct FoldScaleShift;

fn f32_tensor(dims: &[i64], values: &[f32]) -> tract_onnx::pb::TensorProto {
    raw_tensor("", dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

impl Pass for FoldScaleShift {
    fn name(&self) -> &'static str {
        "fold_scale_shift"
    }

    fn describe(&self) -> &'static str {
        "elementwise scale and shift (NoNorm) after a linear layer folded into its weights and bias"
    }

    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError> {
        let mut folds = 0;
        for mul in 0..rw.graph.node.len() {
            if rw.is_removed(mul) || rw.node(mul).op_type != "Mul" || rw.node(mul).input.len() != 2 {
                continue;
            }
            // Mul(t, gamma) with t a linear layer's output read only here.
            let Some((t, gamma)) = rw.node(mul).input.iter().find_map(|t| {
                let other = rw.other_input(mul, t)?;
                (rw.constant(t).is_none()).then_some(())?;
                Some((t.clone(), rw.f32_vector(&other, None)?))
            }) else {
                continue;
            };
            let width = gamma.len();
            let scaled = rw.node(mul).output[0].clone();
            let Some(&shift) = rw.consumers(&scaled).first() else { continue };
            if !rw.only_read_by(&scaled, shift) || rw.node(shift).op_type != "Add" || !rw.only_read_by(&t, mul) {
                continue;
            }
            let Some(beta) = rw.other_input(shift, &scaled).and_then(|b| rw.f32_vector(&b, Some(width))) else { continue };
            // The linear layer: MatMul(x, W) optionally followed by Add(·, b).
            let (matmul, bias_add) = match rw.producer_op(&t, "Add") {
                Some(add) => {
                    let Some(product) = rw.node(add).input.iter().find(|i| rw.producer_op(i, "MatMul").is_some()).cloned() else { continue };
                    if !rw.only_read_by(&product, add) {
                        continue;
                    }
                    let Some(b) = rw.other_input(add, &product).and_then(|b| rw.f32_vector(&b, Some(width))) else { continue };
                    (rw.producer_op(&product, "MatMul").unwrap_or(usize::MAX), Some((add, b)))
                }
                None => match rw.producer_op(&t, "MatMul") {
                    Some(m) => (m, None),
                    None => continue,
                },
            };
            let Some((weights, rows, cols)) = rw.f32_matrix(&rw.node(matmul).input[1].clone()) else { continue };
            if cols != width {
                continue;
            }
            let folded: Vec<f32> = weights.iter().enumerate().map(|(i, w)| w * gamma[i % cols]).collect();
            let w_name = format!("{}.scaled", rw.node(matmul).input[1]);
            let w_name = rw.add_initializer(&w_name, f32_tensor(&[rows as i64, cols as i64], &folded));
            rw.graph.node[matmul].input[1] = w_name;
            let output = rw.node(shift).output[0].clone();
            match bias_add {
                Some((add, b)) => {
                    let bias: Vec<f32> = b.iter().zip(&gamma).zip(&beta).map(|((b, g), s)| b * g + s).collect();
                    let base = format!("{}.shifted", t);
                    let b_name = rw.add_initializer(&base, f32_tensor(&[width as i64], &bias));
                    let product = rw.graph.node[add].input.iter().find(|i| rw.producer_op(i, "MatMul") == Some(matmul)).cloned().unwrap_or_default();
                    rw.graph.node[add].input = vec![product, b_name];
                    rw.graph.node[add].output = vec![output];
                    rw.remove([mul, shift]);
                }
                None => {
                    let product = rw.node(matmul).output[0].clone();
                    let beta_input = rw.other_input(shift, &scaled).unwrap_or_default();
                    rw.graph.node[shift].input = vec![product, beta_input];
                    rw.remove([mul]);
                }
            }
            folds += 1;
        }
        Ok(folds)
    }
}
