//! Element-wise steps written into a tensor the forward pass has just made, as candle in-place
//! ops.
//!
//! Hand-written because neither candle-core nor a well-kept crate offers them: candle's broadcast
//! operators allocate a tensor and make a pass per step. A sublayer's `+ bias`, `+ residual`,
//! `* weight`, `+ bias` (MobileBERT's NoNorm) took four passes and four allocations, the softmax
//! four more. perf put a quarter of the reference's time there.
//!
//! Each kernel computes what the candle operators computed, element by element, in the same order:
//! `(((y + bias) + residual) * weight) + shift`, with separate rounding for each step. The logits
//! are therefore the same bytes as before the fusion. Rust never contracts a product and a sum
//! into a fused multiply-add.
//!
//! Only tensors a function has itself just produced (a matrix product, a LayerNorm's quotient) are
//! written: candle tensors share storage between clones, and writing into a caller's tensor would
//! change it under them.

use candle_core::{bail, CpuStorage, InplaceOp1, InplaceOp2, Layout, Tensor};

use crate::ReferenceError;

/// The f32 elements a contiguous layout covers.
fn contiguous_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: the tensor written in place is not contiguous")
    };
    match storage {
        CpuStorage::F32(values) => Ok(&mut values[start..end]),
        _ => bail!("{op}: the reference computes in f32 only"),
    }
}

/// The f32 elements a contiguous layout covers, read-only.
fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: an operand is not contiguous") };
    match storage {
        CpuStorage::F32(values) => Ok(&values[start..end]),
        _ => bail!("{op}: the reference computes in f32 only"),
    }
}

/// A linear layer's epilogue over rows of `width` columns: `+ bias`, then `+ residual` (when the
/// op is applied with a second tensor), then `* scale + shift` (an affine norm's parameters), then
/// ReLU, each when given.
pub(crate) struct RowEpilogue<'a> {
    /// Added per column first; `None` skips it (a norm's affine step alone).
    pub(crate) bias: Option<&'a [f32]>,
    /// `(weight, bias)` of an affine norm, applied after the residual.
    pub(crate) scale_shift: Option<(&'a [f32], &'a [f32])>,
    /// `max(v, 0)` last, as candle's `relu` computes it.
    pub(crate) relu: bool,
    /// Columns per row.
    pub(crate) width: usize,
}

impl RowEpilogue<'_> {
    fn apply(&self, y: &mut [f32], residual: Option<&[f32]>) -> candle_core::Result<()> {
        let parameters_fit = self.bias.is_none_or(|b| b.len() == self.width)
            && self.scale_shift.is_none_or(|(w, b)| w.len() == self.width && b.len() == self.width);
        if self.width == 0
            || !parameters_fit
            || !y.len().is_multiple_of(self.width)
            || residual.is_some_and(|r| r.len() != y.len())
        {
            bail!(
                "row epilogue: {} values, residual {:?}, do not make rows of the parameters' {} columns",
                y.len(),
                residual.map(<[f32]>::len),
                self.width
            );
        }
        for (row, y) in y.chunks_exact_mut(self.width).enumerate() {
            if let Some(bias) = self.bias {
                y.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
            if let Some(residual) = residual {
                y.iter_mut().zip(&residual[row * self.width..(row + 1) * self.width]).for_each(|(v, r)| *v += r);
            }
            if let Some((scale, shift)) = self.scale_shift {
                y.iter_mut().zip(scale.iter().zip(shift)).for_each(|(v, (w, b))| *v = *v * w + b);
            }
            if self.relu {
                y.iter_mut().for_each(|v| *v = v.max(0f32));
            }
        }
        Ok(())
    }

    /// Applies the epilogue to `y`, which the caller has just produced, adding `residual` (same
    /// shape) after the bias when given.
    pub(crate) fn run(&self, y: &Tensor, residual: Option<&Tensor>) -> Result<(), ReferenceError> {
        match residual {
            None => y.inplace_op1(self)?,
            Some(residual) => y.inplace_op2(&residual.contiguous()?, self)?,
        }
        Ok(())
    }
}

impl InplaceOp1 for RowEpilogue<'_> {
    fn name(&self) -> &'static str {
        "row-epilogue"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        self.apply(contiguous_mut(storage, layout, "row-epilogue")?, None)
    }
}

impl InplaceOp2 for RowEpilogue<'_> {
    fn name(&self) -> &'static str {
        "row-epilogue"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let residual = contiguous(s2, l2, "row-epilogue")?;
        self.apply(contiguous_mut(s1, l1, "row-epilogue")?, Some(residual))
    }
}

/// Attention scores `[batch, heads, queries, keys]` scaled as candle's `tensor / divisor`
/// computes it (`affine(1 / divisor, 0)`: `v * factor + 0`), then the mask's additive bias of each
/// key added, as candle's `broadcast_add` of a `[batch, 1, 1, keys]` bias adds it.
pub(crate) struct ScaleScores<'a> {
    /// `1 / √head_width`, rounded to f32 as candle's affine rounds it.
    pub(crate) factor: f32,
    /// `[batch, keys]`: 0 for attended keys, the most negative f32 for masked ones.
    pub(crate) key_bias: Option<&'a [f32]>,
    /// Keys per row of scores.
    pub(crate) keys: usize,
    /// Rows of scores per batch item (heads × queries).
    pub(crate) rows_per_item: usize,
}

impl InplaceOp1 for ScaleScores<'_> {
    fn name(&self) -> &'static str {
        "scale-scores"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let scores = contiguous_mut(storage, layout, self.name())?;
        let item = self.keys * self.rows_per_item;
        if item == 0
            || scores.len() % item != 0
            || self.key_bias.is_some_and(|b| b.len() != scores.len() / item * self.keys)
        {
            bail!(
                "scale-scores: {} scores do not make items of {} rows of {} keys with the mask's {:?} values",
                scores.len(),
                self.rows_per_item,
                self.keys,
                self.key_bias.map(<[f32]>::len)
            );
        }
        for (i, item) in scores.chunks_exact_mut(item).enumerate() {
            item.iter_mut().for_each(|v| *v = *v * self.factor + 0.0);
            if let Some(bias) = self.key_bias {
                let bias = &bias[i * self.keys..(i + 1) * self.keys];
                item.chunks_exact_mut(self.keys).for_each(|row| row.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
            }
        }
        Ok(())
    }
}

/// A step of the softmax over rows, with one value per row from the second tensor (a
/// `max_keepdim` or `sum_keepdim` of the first).
pub(crate) enum RowsBy {
    /// `exp(v - max)`.
    ExpMinus,
    /// `v / sum`.
    Divide,
}

impl InplaceOp2 for RowsBy {
    fn name(&self) -> &'static str {
        match self {
            RowsBy::ExpMinus => "exp-minus-row",
            RowsBy::Divide => "divide-by-row",
        }
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let per_row = contiguous(s2, l2, self.name())?;
        let values = contiguous_mut(s1, l1, self.name())?;
        if per_row.is_empty() || values.len() % per_row.len() != 0 {
            bail!("{}: {} values do not make {} rows", self.name(), values.len(), per_row.len());
        }
        let width = values.len() / per_row.len();
        for (row, &by) in values.chunks_exact_mut(width).zip(per_row) {
            match self {
                RowsBy::ExpMinus => row.iter_mut().for_each(|v| *v = (*v - by).exp()),
                RowsBy::Divide => row.iter_mut().for_each(|v| *v /= by),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;

    fn tensor(values: &[f32], rows: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), (rows, values.len() / rows), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The fused steps give candle's operators' bytes, on values whose roundings differ by order.
    #[test]
    fn the_epilogue_is_candles_operators_in_their_order() {
        let y: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let residual: Vec<f32> = (0..12).map(|i| (i as f32 * 1.3).cos() * 1e-3).collect();
        let (bias, scale, shift) = ([0.1f32, -7.7, 3.3], [1.1f32, 0.3, -2.9], [1e-4f32, 5.0, -0.7]);
        let tensor_of = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        let want = tensor(&y, 4)
            .broadcast_add(&tensor_of(&bias))
            .and_then(|t| t + tensor(&residual, 4))
            .and_then(|t| t.broadcast_mul(&tensor_of(&scale)))
            .and_then(|t| t.broadcast_add(&tensor_of(&shift)))
            .unwrap();
        let got = tensor(&y, 4);
        RowEpilogue { bias: Some(&bias), scale_shift: Some((&scale, &shift)), relu: false, width: 3 }
            .run(&got, Some(&tensor(&residual, 4)))
            .unwrap();
        assert_eq!(values(&got), values(&want));
        // Bias alone.
        let got = tensor(&y, 4);
        RowEpilogue { bias: Some(&bias), scale_shift: None, relu: false, width: 3 }.run(&got, None).unwrap();
        assert_eq!(values(&got), values(&tensor(&y, 4).broadcast_add(&tensor_of(&bias)).unwrap()));
        // Bias then ReLU, as the intermediate layers run.
        let got = tensor(&y, 4);
        RowEpilogue { bias: Some(&bias), scale_shift: None, relu: true, width: 3 }.run(&got, None).unwrap();
        let want = values(&tensor(&y, 4).broadcast_add(&tensor_of(&bias)).unwrap().relu().unwrap());
        assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
        assert_eq!(values(&got), want);
    }

    #[test]
    fn the_softmax_steps_are_candles_operators() {
        // Two items, two heads, three queries, three keys; the second item's last key is masked.
        let scores: Vec<f32> = (0..36).map(|i| (i as f32 * 0.77).sin() * 9.0).collect();
        let key_bias = [0.0, 0.0, 0.0, 0.0, 0.0, f32::MIN];
        let shape = (2, 2, 3, 3);
        let divisor = 8f64.sqrt();
        let four = |v: &[f32], shape| Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap();
        let reference =
            (four(&scores, shape) / divisor).unwrap().broadcast_add(&four(&key_bias, (2, 1, 1, 3))).unwrap();
        let reference = reference.broadcast_sub(&reference.max_keepdim(D::Minus1).unwrap()).unwrap().exp().unwrap();
        let reference = reference.broadcast_div(&reference.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let got = four(&scores, shape);
        got.inplace_op1(&ScaleScores {
            factor: (1.0 / divisor) as f32,
            key_bias: Some(&key_bias),
            keys: 3,
            rows_per_item: 6,
        })
        .unwrap();
        got.inplace_op2(&got.max_keepdim(D::Minus1).unwrap(), &RowsBy::ExpMinus).unwrap();
        got.inplace_op2(&got.sum_keepdim(D::Minus1).unwrap(), &RowsBy::Divide).unwrap();
        let got = values(&got);
        assert_eq!(got, values(&reference));
        assert_eq!(got[35], 0.0, "the masked key gets no attention");
        // A mask of the wrong length is an error.
        let bad = ScaleScores { factor: 1.0, key_bias: Some(&key_bias[..5]), keys: 3, rows_per_item: 6 };
        assert!(four(&scores, shape).inplace_op1(&bad).is_err());
    }

    #[test]
    fn mismatched_shapes_are_errors_not_panics() {
        let got = tensor(&[1.0, 2.0, 3.0, 4.0], 2);
        assert!(RowEpilogue { bias: Some(&[1.0, 2.0, 3.0]), scale_shift: None, relu: false, width: 3 }
            .run(&got, None)
            .is_err());
        assert!(RowEpilogue { bias: Some(&[1.0, 2.0, 3.0]), scale_shift: None, relu: false, width: 2 }
            .run(&got, None)
            .is_err());
        assert!(RowEpilogue { bias: None, scale_shift: None, relu: false, width: 2 }
            .run(&got, Some(&tensor(&[1.0, 2.0], 1)))
            .is_err());
        // A transposed (strided) tensor is refused, not read in the wrong order.
        assert!(RowEpilogue { bias: None, scale_shift: None, relu: false, width: 2 }
            .run(&got.t().unwrap(), None)
            .is_err());
    }
}
