//! Golden fixtures written by golden/generate.py: features (safetensors + JSON) and PyTorch logits.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::VerifyError;

/// run_qa.py validation features of the golden evaluation slice, padded to `max_length`.
#[derive(Debug, Clone)]
pub struct GoldenFeatures {
    /// Number of features.
    pub count: usize,
    /// Padded length of every feature.
    pub max_length: usize,
    /// `[count, max_length]` token ids.
    pub input_ids: Vec<i64>,
    /// `[count, max_length]` 1 for tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// `[count, max_length]` 0 for the question, 1 for the context.
    pub token_type_ids: Vec<i64>,
    /// `[count, max_length, 2]` character offsets into the context, -1 where the token is not context.
    pub offsets: Vec<i32>,
    /// Example (question) index of each feature.
    pub example_index: Vec<usize>,
    /// Question id of each feature.
    pub example_ids: Vec<String>,
}

/// PyTorch start/end logits for every golden feature of one fixture.
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

/// A tensor of `st` as i64, checked for dtype and shape.
fn int_tensor(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<i64>, VerifyError> {
    let view = st.tensor(name).map_err(|e| golden_error(path, format!("{name}: {e}")))?;
    if view.shape() != shape {
        return Err(golden_error(path, format!("{name} has shape {:?}, expected {shape:?}", view.shape())));
    }
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
        Dtype::I32 => data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
        Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        other => return Err(golden_error(path, format!("{name} has dtype {other:?}, expected an integer dtype"))),
    })
}

fn f32_tensor(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>, VerifyError> {
    let view = st.tensor(name).map_err(|e| golden_error(path, format!("{name}: {e}")))?;
    if view.shape() != shape || view.dtype() != Dtype::F32 {
        return Err(golden_error(path, format!("{name} is {:?} {:?}, expected F32 {shape:?}", view.dtype(), view.shape())));
    }
    Ok(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

impl GoldenFeatures {
    /// Reads `features.safetensors` and `features.json` from a golden SQuAD directory.
    pub fn load(squad_dir: &Path) -> Result<Self, VerifyError> {
        let json_path = squad_dir.join("features.json");
        let meta: serde_json::Value =
            serde_json::from_slice(&read(&json_path)?).map_err(|e| golden_error(&json_path, e.to_string()))?;
        let count = meta["features"].as_u64().ok_or_else(|| golden_error(&json_path, "no `features` count"))? as usize;
        let max_length = meta["max_length"].as_u64().ok_or_else(|| golden_error(&json_path, "no `max_length`"))? as usize;
        let example_ids: Vec<String> = meta["example_ids"]
            .as_array()
            .ok_or_else(|| golden_error(&json_path, "no `example_ids`"))?
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or_else(|| golden_error(&json_path, "example id is not a string")))
            .collect::<Result<_, _>>()?;
        if example_ids.len() != count {
            return Err(golden_error(&json_path, format!("{} example ids for {count} features", example_ids.len())));
        }
        let path: PathBuf = squad_dir.join("features.safetensors");
        let bytes = read(&path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| golden_error(&path, e.to_string()))?;
        let shape = [count, max_length];
        let offsets = int_tensor(&st, &path, "offsets", &[count, max_length, 2])?;
        let example_index = int_tensor(&st, &path, "example_index", &[count])?;
        Ok(GoldenFeatures {
            count,
            max_length,
            input_ids: int_tensor(&st, &path, "input_ids", &shape)?,
            attention_mask: int_tensor(&st, &path, "attention_mask", &shape)?,
            token_type_ids: int_tensor(&st, &path, "token_type_ids", &shape)?,
            offsets: offsets.into_iter().map(|v| v as i32).collect(),
            example_index: example_index.into_iter().map(|v| v as usize).collect(),
            example_ids,
        })
    }

    /// Number of real (unpadded) tokens of feature `i`.
    pub fn length(&self, i: usize) -> usize {
        self.attention_mask[i * self.max_length..(i + 1) * self.max_length].iter().filter(|&&m| m != 0).count()
    }
}

impl GoldenLogits {
    /// Reads `<fixture>/golden/logits.safetensors` for `features`.
    pub fn load(fixture_dir: &Path, features: &GoldenFeatures) -> Result<Self, VerifyError> {
        let path = fixture_dir.join("golden").join("logits.safetensors");
        let bytes = read(&path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| golden_error(&path, e.to_string()))?;
        let shape = [features.count, features.max_length];
        Ok(GoldenLogits {
            start: f32_tensor(&st, &path, "start_logits", &shape)?,
            end: f32_tensor(&st, &path, "end_logits", &shape)?,
        })
    }
}
