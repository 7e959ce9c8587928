//! Golden fixtures: features (safetensors + JSON) and the reference logits computed for them
//! (PyTorch's, written by golden/generate.py, or candle's, written by `qaforge golden`).

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::VerifyError;

/// run_qa.py validation features of the golden evaluation slice (see [`qaforge_squad::Features::load`]).
pub type GoldenFeatures = qaforge_squad::Features;

/// The reference's start/end logits for every golden feature of one fixture.
#[derive(Debug, Clone)]
pub struct GoldenLogits {
    /// `[count, max_length]`.
    pub start: Vec<f32>,
    /// `[count, max_length]`.
    pub end: Vec<f32>,
}

fn golden_error(path: &Path, message: impl Into<String>) -> VerifyError {
    VerifyError::Golden { path: path.to_owned(), message: message.into() }
}

fn read(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_owned(), source })
}

fn f32_tensor(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>, VerifyError> {
    let view = st.tensor(name).map_err(|e| golden_error(path, format!("{name}: {e}")))?;
    if view.shape() != shape || view.dtype() != Dtype::F32 {
        return Err(golden_error(
            path,
            format!("{name} is {:?} {:?}, expected F32 {shape:?}", view.dtype(), view.shape()),
        ));
    }
    Ok(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

impl GoldenLogits {
    /// Reads `<fixture>/golden/logits.safetensors` for `features`.
    pub fn load(fixture_dir: &Path, features: &GoldenFeatures) -> Result<Self, VerifyError> {
        Self::load_file(&fixture_dir.join("golden").join("logits.safetensors"), features)
    }

    /// Reads `start_logits` and `end_logits`, each F32 `[features.count, features.max_length]`.
    pub fn load_file(path: &Path, features: &GoldenFeatures) -> Result<Self, VerifyError> {
        let path = path.to_owned();
        let bytes = read(&path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| golden_error(&path, e.to_string()))?;
        let shape = [features.count, features.max_length];
        Ok(GoldenLogits {
            start: f32_tensor(&st, &path, "start_logits", &shape)?,
            end: f32_tensor(&st, &path, "end_logits", &shape)?,
        })
    }
}

impl GoldenLogits {
    /// Writes `start_logits` and `end_logits` as F32 `[count, max_length]` safetensors.
    pub fn write(&self, path: &Path, count: usize, max_length: usize) -> Result<(), VerifyError> {
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (start, end) = (bytes(&self.start), bytes(&self.end));
        let view = |data| {
            safetensors::tensor::TensorView::new(Dtype::F32, vec![count, max_length], data)
                .map_err(|e| golden_error(path, e.to_string()))
        };
        let tensors = vec![("start_logits".to_string(), view(&start)?), ("end_logits".to_string(), view(&end)?)];
        let out = safetensors::serialize(tensors, None).map_err(|e| golden_error(path, e.to_string()))?;
        std::fs::write(path, out).map_err(|source| VerifyError::Io { path: path.to_owned(), source })
    }
}
