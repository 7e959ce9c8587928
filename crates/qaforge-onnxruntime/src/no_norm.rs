//! The structure both NoNorm folds ([`fold_scale_shift`](crate::fold_scale_shift),
//! [`fold_residual_scale_shift`](crate::fold_residual_scale_shift)) match and rewrite: the
//! elementwise scale and shift itself, the linear layer whose weights take the scale, and the
//! weight and bias arithmetic. The passes differ only in what sits between the two.

use qaforge_onnx::builder::f32_tensor;
use qaforge_onnx::edit::Rewrite;

/// An elementwise scale and shift `Add(Mul(input, gamma), beta)`: `input` is computed (not a
/// constant) and read only by the Mul, the Mul's output only by the Add, and `gamma` and `beta`
/// are constant f32 vectors of one width.
pub(crate) struct ScaleShift {
    /// The Mul node.
    pub mul: usize,
    /// The Add node; its output is the NoNorm's output.
    pub shift: usize,
    /// The tensor scaled.
    pub input: String,
    /// The name of the scale's tensor (a residual branch reuses it).
    pub gamma_name: String,
    /// The scale.
    pub gamma: Vec<f32>,
    /// The name of the shift's tensor (a layer without a bias takes it as it is).
    pub beta_name: String,
    /// The shift.
    pub beta: Vec<f32>,
}

impl ScaleShift {
    /// The scale and shift whose Mul is `mul`, if it is one.
    pub fn at(rw: &Rewrite<'_>, mul: usize) -> Option<Self> {
        if rw.node(mul).input.len() != 2 {
            return None;
        }
        let (input, gamma_name, gamma) = rw.node(mul).input.iter().find_map(|t| {
            let other = rw.other_input(mul, t)?;
            rw.constant(t).is_none().then_some(())?;
            let gamma = rw.f32_vector(&other, None)?;
            Some((t.clone(), other, gamma))
        })?;
        let scaled = &rw.node(mul).output[0];
        let &shift = rw.consumers(scaled).first()?;
        if !rw.only_read_by(scaled, shift) || rw.node(shift).op_type != "Add" || !rw.only_read_by(&input, mul) {
            return None;
        }
        let beta_name = rw.other_input(shift, scaled)?;
        let beta = rw.f32_vector(&beta_name, Some(gamma.len()))?;
        Some(Self { mul, shift, input, gamma_name, gamma, beta_name, beta })
    }

    /// The number of channels scaled.
    pub fn width(&self) -> usize {
        self.gamma.len()
    }
}

/// A linear layer `MatMul(x, W)` optionally followed by `Add(·, b)`, with `W` a constant f32
/// matrix and `b` a constant f32 vector.
pub(crate) struct LinearLayer {
    /// The MatMul node.
    pub matmul: usize,
    /// The bias Add node and the bias, if the layer has one.
    pub bias: Option<(usize, Vec<f32>)>,
}

impl LinearLayer {
    /// The linear layer of `width` output columns whose output is `tensor`, if `tensor` is one and
    /// is read only by `reader` (and the product, where a bias follows it, only by the bias Add).
    pub fn producing(rw: &Rewrite<'_>, tensor: &str, reader: usize, width: usize) -> Option<Self> {
        if !rw.only_read_by(tensor, reader) {
            return None;
        }
        let is_product =
            |m: usize| rw.node(m).input.get(1).and_then(|w| rw.f32_matrix(w)).is_some_and(|(_, _, cols)| cols == width);
        if let Some(matmul) = rw.producer_op(tensor, "MatMul") {
            return is_product(matmul).then_some(Self { matmul, bias: None });
        }
        let add = rw.producer_op(tensor, "Add")?;
        let product = rw.node(add).input.iter().find(|i| rw.producer_op(i, "MatMul").is_some_and(is_product))?.clone();
        if !rw.only_read_by(&product, add) {
            return None;
        }
        let bias = rw.other_input(add, &product).and_then(|b| rw.f32_vector(&b, Some(width)))?;
        Some(Self { matmul: rw.producer_op(&product, "MatMul")?, bias: Some((add, bias)) })
    }

    /// The product's output tensor (before any bias).
    pub fn product(&self, rw: &Rewrite<'_>) -> String {
        rw.node(self.matmul).output[0].clone()
    }

    /// Takes `norm`'s scale into the weights (`W diag(gamma)`, a new initializer) and returns the
    /// bias the layer needs to take its shift as well: `b * gamma + beta`, or `beta` alone where
    /// the layer has no bias (then [`ScaleShift::beta_name`] already holds it). `None`, with
    /// nothing changed, where `W` is not an f32 matrix of `norm`'s width.
    pub fn absorb_scale(&self, rw: &mut Rewrite<'_>, norm: &ScaleShift) -> Option<Vec<f32>> {
        let weights_name = rw.node(self.matmul).input.get(1)?.clone();
        let (weights, rows, cols) = rw.f32_matrix(&weights_name)?;
        if cols != norm.width() {
            return None;
        }
        let folded: Vec<f32> = weights.iter().enumerate().map(|(i, w)| w * norm.gamma[i % cols]).collect();
        let folded_name = rw.add_initializer(&format!("{weights_name}.scaled"), f32_tensor("", &[rows, cols], &folded));
        rw.graph.node[self.matmul].input[1] = folded_name;
        Some(match &self.bias {
            Some((_, b)) => b.iter().zip(&norm.gamma).zip(&norm.beta).map(|((b, g), s)| b * g + s).collect(),
            None => norm.beta.clone(),
        })
    }

    /// Gives the layer's bias Add the bias `values` (a new initializer named after `base`), so that
    /// it reads the product and the new bias; returns the Add node. `None` where the layer has no
    /// bias Add (the caller places the bias).
    pub fn set_bias(&self, rw: &mut Rewrite<'_>, base: &str, values: &[f32]) -> Option<usize> {
        let (add, _) = self.bias.as_ref()?;
        let bias_name = rw.add_initializer(base, f32_tensor("", &[values.len()], values));
        let product = self.product(rw);
        rw.graph.node[*add].input = vec![product, bias_name];
        Some(*add)
    }
}
