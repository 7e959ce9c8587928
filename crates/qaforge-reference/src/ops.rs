//! The layers both architectures are built from, as transformers' `nn` modules compute them, on
//! candle-core tensors (candle-nn is not a dependency: these functions are all that is used), their
//! element-wise steps written in place by [`crate::in_place`].

use candle_core::{DType, Device, Tensor, D};
use qaforge_checkpoint::Weights;

use crate::in_place::{RowEpilogue, RowsBy, ScaleScores};
use crate::ReferenceError;

/// Reads `name` with shape `shape` from the checkpoint as an f32 tensor.
pub(crate) fn parameter(weights: &Weights, name: &str, shape: &[usize]) -> Result<Tensor, ReferenceError> {
    let values = weights.f32(name, shape)?;
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Reads `name` with shape `[width]` as plain values, for the in-place epilogues.
fn parameter_values(weights: &Weights, name: &str, width: usize) -> Result<Vec<f32>, ReferenceError> {
    Ok(weights.f32(name, &[width])?)
}

/// The longest sum one gemm call may compute in one piece: products with a longer inner dimension
/// are cut into equal blocks of at most this many terms, multiplied block by block and added in
/// order.
///
/// gemm cuts a product's inner dimension itself, into blocks sized from the L1 data cache the OS
/// reports (`gemm_common::cache::kernel_params`: at least 512 terms, more on larger or more
/// associative caches) and rounds each block's sum into the result, so a product whose inner
/// dimension exceeds 512 summed in another order on another machine: MiniLM's output layers
/// (1,536 terms) took blocks of 768 on a 48 KiB 12-way L1 and of 512 on a 32 KiB 8-way one
/// (Haswell, Zen), and the trained fixture's logits differed. gemm never cuts 512 terms or fewer,
/// on any cache. MobileBERT's products all have 512 or fewer.
const SUM_BLOCK: usize = 512;

/// `a @ b` over the last two dimensions, the same bytes on every machine (see [`SUM_BLOCK`]).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, ReferenceError> {
    let terms = a.dim(D::Minus1)?;
    if terms <= SUM_BLOCK {
        return Ok(a.matmul(b)?);
    }
    let block = terms.div_ceil(terms.div_ceil(SUM_BLOCK));
    let part = |start: usize| -> candle_core::Result<Tensor> {
        let len = block.min(terms - start);
        a.narrow(D::Minus1, start, len)?.contiguous()?.matmul(&b.narrow(D::Minus2, start, len)?.contiguous()?)
    };
    let mut sum = part(0)?;
    for start in (block..terms).step_by(block) {
        sum = (sum + part(start)?)?;
    }
    Ok(sum)
}

/// `nn.Linear(inputs, outputs)`: `x @ weight.T + bias`. The weight is transposed once at load.
pub(crate) struct Linear {
    weight_t: Tensor,
    bias: Vec<f32>,
}

impl Linear {
    /// Reads `<name>.weight` (`[outputs, inputs]`) and `<name>.bias`.
    pub(crate) fn load(weights: &Weights, name: &str, inputs: usize, outputs: usize) -> Result<Self, ReferenceError> {
        let weight = parameter(weights, &format!("{name}.weight"), &[outputs, inputs])?;
        Ok(Linear {
            weight_t: weight.t()?.contiguous()?,
            bias: parameter_values(weights, &format!("{name}.bias"), outputs)?,
        })
    }

    /// `x`: `[batch, sequence, inputs]` → `[batch, sequence, outputs]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ReferenceError> {
        self.forward_then(x, None, None)
    }

    /// `activation(x @ weight.T + bias)`: ReLU in the product's epilogue, the others after it.
    pub(crate) fn forward_activated(&self, x: &Tensor, act: &str) -> Result<Tensor, ReferenceError> {
        match act {
            "relu" => self.product_then(x, None, None, true),
            _ => activation(&self.forward(x)?, act),
        }
    }

    /// `norm(x @ weight.T + bias + residual)`, the residual and the norm each when given, as
    /// transformers computes it: the product, then each element-wise step in turn.
    pub(crate) fn forward_then(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        norm: Option<&Norm>,
    ) -> Result<Tensor, ReferenceError> {
        self.product_then(x, residual, norm, false)
    }

    /// The product, then bias, residual, NoNorm and ReLU (those given) in place in one pass over
    /// it, since the product is this function's own; a LayerNorm's statistics make their own
    /// tensor after that pass.
    fn product_then(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        norm: Option<&Norm>,
        relu: bool,
    ) -> Result<Tensor, ReferenceError> {
        let (b, t, i) = x.dims3()?;
        let width = self.bias.len();
        let y = matmul(&x.reshape((b * t, i))?, &self.weight_t)?;
        let no_norm = norm.filter(|n| n.eps.is_none());
        RowEpilogue { bias: Some(&self.bias), scale_shift: no_norm.map(|n| (&n.weight[..], &n.bias[..])), relu, width }
            .run(&y, residual)?;
        let y = match norm {
            Some(norm) if no_norm.is_none() => norm.normalize_own(y)?,
            _ => y,
        };
        Ok(y.reshape((b, t, width))?)
    }
}

/// `nn.LayerNorm(width, eps)` (biased variance, as torch), or MobileBERT's `NoNorm`
/// (`x * weight + bias`, no statistics).
pub(crate) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// `None` for NoNorm.
    eps: Option<f64>,
}

impl Norm {
    /// Reads `<name>.weight` and `<name>.bias` of width `width`; `eps: None` makes a NoNorm.
    pub(crate) fn load(weights: &Weights, name: &str, width: usize, eps: Option<f64>) -> Result<Self, ReferenceError> {
        Ok(Norm {
            weight: parameter_values(weights, &format!("{name}.weight"), width)?,
            bias: parameter_values(weights, &format!("{name}.bias"), width)?,
            eps,
        })
    }

    /// The norm of `x`, a new tensor (`x` is left as it was).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ReferenceError> {
        match self.eps {
            None => self.normalize_own(x.copy()?),
            Some(_) => self.normalize_own(x.clone()),
        }
    }

    /// The norm of `x`, a tensor the caller has just produced and nothing else holds: NoNorm
    /// writes into it.
    fn normalize_own(&self, x: Tensor) -> Result<Tensor, ReferenceError> {
        let x = match self.eps {
            None => x,
            Some(eps) => {
                let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
                centred.broadcast_div(&(variance + eps)?.sqrt()?)?
            }
        };
        let x = x.contiguous()?;
        RowEpilogue {
            bias: None,
            scale_shift: Some((&self.weight, &self.bias)),
            relu: false,
            width: self.weight.len(),
        }
        .run(&x, None)?;
        Ok(x)
    }
}

/// transformers' `ACT2FN[hidden_act]` for the activations the checkpoint reader admits.
pub(crate) fn activation(x: &Tensor, name: &str) -> Result<Tensor, ReferenceError> {
    Ok(match name {
        "relu" => x.relu()?,
        // nn.GELU(): x Φ(x) with the exact erf.
        "gelu" => x.gelu_erf()?,
        // NewGELUActivation, PytorchGELUTanh and FastGELUActivation are one function:
        // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), candle's `gelu`.
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => x.gelu()?,
        "silu" | "swish" => x.silu()?,
        "tanh" => x.tanh()?,
        other => return Err(ReferenceError::Unsupported(format!("hidden_act `{other}`"))),
    })
}

/// transformers' extended attention mask, one additive bias per key of each batch item
/// (`[batch, sequence]`): 0 where attended, the most negative f32 where not; `None` where every
/// position is attended (adding zeros changes no score).
pub(crate) fn mask_bias(mask: &[i64]) -> Option<Vec<f32>> {
    if mask.iter().all(|&m| m != 0) {
        return None;
    }
    Some(mask.iter().map(|&m| if m != 0 { 0.0 } else { f32::MIN }).collect())
}

/// Scaled dot-product attention over `heads` heads: `q`, `k`, `v` are `[batch, sequence, width]`;
/// returns the context `[batch, sequence, width]`. Scores are `q kᵀ / √d + bias` (`bias` from
/// [`mask_bias`]), softmax over keys (max-subtracted, as torch's softmax).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&[f32]>,
) -> Result<Tensor, ReferenceError> {
    let (b, t, width) = q.dims3()?;
    let d = width / heads;
    let split =
        |x: &Tensor| -> candle_core::Result<Tensor> { x.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous() };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    // The softmax's element-wise steps, the mask's bias among them, write into the scores (this
    // function's own tensor); the row maxima and sums stay candle's reductions.
    let scores = matmul(&q, &k.t()?.contiguous()?)?;
    scores.inplace_op1(&ScaleScores {
        factor: (1.0 / (d as f64).sqrt()) as f32,
        key_bias: bias,
        keys: t,
        rows_per_item: heads * t,
    })?;
    scores.inplace_op2(&scores.max_keepdim(D::Minus1)?, &RowsBy::ExpMinus)?;
    scores.inplace_op2(&scores.sum_keepdim(D::Minus1)?, &RowsBy::Divide)?;
    let context = matmul(&scores, &v)?.transpose(1, 2)?.contiguous()?;
    Ok(context.reshape((b, t, width))?)
}

/// Rows of an embedding table for `ids` (`[batch, sequence]`) → `[batch, sequence, width]`.
/// Ids past the table are refused here, not left to the index kernel.
pub(crate) fn embed(
    table: &Tensor,
    ids: &[i64],
    batch: usize,
    len: usize,
    what: &str,
) -> Result<Tensor, ReferenceError> {
    let (rows, width) = table.dims2()?;
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= rows) {
        return Err(ReferenceError::Input(format!("{what} {bad} is outside the embedding table's {rows} rows")));
    }
    let index = Tensor::from_vec(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), batch * len, &Device::Cpu)?;
    Ok(table.index_select(&index, 0)?.reshape((batch, len, width))?)
}

/// The QA head: `[batch, sequence, hidden]` → start and end logits, each `[batch, sequence]`
/// row-major.
pub(crate) fn qa_logits(head: &Linear, hidden: &Tensor) -> Result<(Vec<f32>, Vec<f32>), ReferenceError> {
    let logits = head.forward(hidden)?.to_dtype(DType::F32)?;
    let start = logits.narrow(D::Minus1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
    let end = logits.narrow(D::Minus1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        let norm = Norm { weight: vec![1.0, 2.0, 1.0, 1.0], bias: vec![0.0, 0.0, 0.0, 1.0], eps: Some(0.0) };
        let y = norm
            .forward(&t(&[1.0, 2.0, 3.0, 4.0], (1, 1, 4)))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // mean 2.5, biased variance 1.25.
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, 2.0 * -0.5 / s, 0.5 / s, 1.5 / s + 1.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
        let no_norm = Norm { eps: None, ..norm };
        let y = no_norm
            .forward(&t(&[1.0, 2.0, 3.0, 4.0], (1, 1, 4)))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, [1.0, 4.0, 3.0, 5.0]);
    }

    #[test]
    fn masked_keys_get_no_attention() {
        // One head, two tokens; the second is padding, so both queries read only the first value.
        let q = t(&[1.0, 0.0, 0.0, 1.0], (1, 2, 2));
        let v = t(&[3.0, 4.0, 100.0, 200.0], (1, 2, 2));
        let bias = mask_bias(&[1, 0]);
        let out = attention(&q, &q, &v, 1, bias.as_deref()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out, [3.0, 4.0, 3.0, 4.0]);
        // Nothing masked: no bias at all.
        assert!(mask_bias(&[1, 1]).is_none());
    }

    /// Past 512 terms the product is the sum of its blocks' products, in order: on 1,536 terms,
    /// three blocks of 512.
    #[test]
    fn long_sums_are_cut_into_fixed_blocks() {
        let (m, k, n) = (3, 1536, 2);
        let a = Tensor::from_vec(
            (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect::<Vec<_>>(),
            (m, k),
            &Device::Cpu,
        )
        .unwrap();
        let b = Tensor::from_vec(
            (0..k * n).map(|i| ((i * 104729) % 997) as f32 * 1e-2 - 5.0).collect::<Vec<_>>(),
            (k, n),
            &Device::Cpu,
        )
        .unwrap();
        let block = |s: usize| {
            a.narrow(1, s, 512).unwrap().contiguous().unwrap().matmul(&b.narrow(0, s, 512).unwrap()).unwrap()
        };
        let want = ((block(0) + block(512)).unwrap() + block(1024)).unwrap();
        let got = matmul(&a, &b).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // 512 terms or fewer: one gemm call, as before.
        let short = a.narrow(1, 0, 512).unwrap().contiguous().unwrap();
        let b_short = b.narrow(0, 0, 512).unwrap().contiguous().unwrap();
        assert_eq!(
            matmul(&short, &b_short).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            short.matmul(&b_short).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn ids_past_the_table_are_refused() {
        let table = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
        let err = embed(&table, &[1, 5], 1, 2, "token id").unwrap_err().to_string();
        assert!(err.contains("token id 5 is outside the embedding table's 5 rows"), "{err}");
        assert!(embed(&table, &[-1, 0], 1, 2, "token id").is_err());
    }

    #[test]
    fn unknown_activations_are_refused() {
        let x = t(&[1.0], (1, 1, 1));
        assert!(activation(&x, "mish").is_err());
        assert_eq!(
            activation(&t(&[-1.0], (1, 1, 1)), "relu").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0]
        );
    }
}
