//! The parameter shapes of the layers every architecture is built from, as transformers' modules
//! name and shape them (`nn.Linear` weights are `[out, in]`).

/// Appends `nn.Linear(inputs, outputs)` at `name`: weight `[outputs, inputs]`, bias `[outputs]`.
pub(crate) fn linear(out: &mut Vec<(String, Vec<usize>)>, name: String, inputs: usize, outputs: usize) {
    out.push((format!("{name}.weight"), vec![outputs, inputs]));
    out.push((format!("{name}.bias"), vec![outputs]));
}

/// Appends a LayerNorm (or NoNorm) of `width` at `name`: weight and bias `[width]`.
pub(crate) fn norm(out: &mut Vec<(String, Vec<usize>)>, name: String, width: usize) {
    out.push((format!("{name}.weight"), vec![width]));
    out.push((format!("{name}.bias"), vec![width]));
}
