//! The default engine: tract, pure Rust, the engine qaforge verifies and calibrates with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::{Engine, InputLayout, RuntimeError, TensorOutputs};

/// An optimised tract plan for one artifact (symbolic batch and sequence).
pub struct TractSession {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    layout: InputLayout,
}

impl TractSession {
    /// Loads and optimises an ONNX file.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        Self::optimized(tract_onnx::onnx().model_for_path(path), path.to_owned())
    }

    /// Loads and optimises an in-memory model; `label` (a file name or a description) names it in errors.
    pub fn from_proto(model: &ModelProto, label: &str) -> Result<Self, RuntimeError> {
        crate::check_inputs(model, Path::new(label))?;
        Self::optimized(tract_onnx::onnx().model_for_proto_model(model), PathBuf::from(label))
    }

    fn optimized(model: TractResult<InferenceModel>, path: PathBuf) -> Result<Self, RuntimeError> {
        let plan = match model.and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()) {
            Ok(plan) => plan,
            Err(e) => return Err(RuntimeError { path, message: format!("{e:#}") }),
        };
        let inputs = plan.model().inputs.len();
        let Some(layout) = InputLayout::of_count(inputs) else {
            return Err(RuntimeError { path, message: format!("the graph has {inputs} input(s); qaforge feeds input_ids, attention_mask and token_type_ids (or the first two)") });
        };
        Ok(TractSession { path, plan, layout })
    }
}

impl Engine for TractSession {
    fn label(&self) -> &Path {
        &self.path
    }

    fn description(&self) -> String {
        format!("tract {}", env!("QAFORGE_TRACT_VERSION"))
    }

    fn run_outputs(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<TensorOutputs, RuntimeError> {
        let runtime = |e: TractError| RuntimeError { path: self.path.clone(), message: format!("{e:#}") };
        let tensor = |v: Vec<i64>| Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue());
        let inputs = self.layout.feeds(ids, mask, types).into_iter().map(|v| tensor(v).map_err(runtime)).collect::<Result<TVec<_>, _>>()?;
        // tract panics on some inputs a graph does not expect (Gather indices past a table: see
        // check_token_ids, which callers run first); a panic is turned into this artifact's error.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.plan.run(inputs)))
            .map_err(|panic| {
                let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                RuntimeError { path: self.path.clone(), message: format!("tract failed on these inputs: {what}") }
            })?
            .map_err(runtime)?;
        outputs
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(runtime)?;
                Ok((t.shape().to_vec(), t.to_plain_array_view::<f32>().map_err(runtime)?.iter().copied().collect()))
            })
            .collect()
    }
}
