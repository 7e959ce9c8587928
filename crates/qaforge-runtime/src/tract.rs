//! The default engine: tract, pure Rust, the engine qaforge verifies and calibrates with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::{Engine, Feed, InputLayout, RuntimeError, TensorOutputs};

/// An optimised tract plan for one artifact (symbolic batch and sequence).
pub struct TractSession {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    layout: InputLayout,
}

impl TractSession {
    /// Loads and optimises an ONNX file, its inputs mapped as [`crate::check_inputs`] does.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let model = tract_onnx::onnx().proto_model_for_path(path).map_err(|e| RuntimeError { path: path.to_owned(), message: format!("{e:#}") })?;
        let layout = crate::check_inputs(&model, path, None)?;
        Self::optimized(tract_onnx::onnx().model_for_proto_model(&model), path.to_owned(), layout)
    }

    /// Loads and optimises an in-memory model, its inputs mapped as [`crate::check_inputs`] does
    /// without names; `label` (a file name or a description) names it in errors.
    pub fn from_proto(model: &ModelProto, label: &str) -> Result<Self, RuntimeError> {
        let layout = crate::check_inputs(model, Path::new(label), None)?;
        Self::with_layout(model, label, layout)
    }

    /// Loads and optimises an in-memory model whose inputs are fed as `layout` says.
    pub fn with_layout(model: &ModelProto, label: &str, layout: InputLayout) -> Result<Self, RuntimeError> {
        // ONNX Runtime's contrib ops (the `--for onnxruntime` flavour): tract has no kernels for
        // them, and says so in its own words only after typing the graph.
        let mut contrib: Vec<&str> = model.graph.iter().flat_map(|g| &g.node).filter(|n| n.domain == "com.microsoft").map(|n| n.op_type.as_str()).collect();
        contrib.sort_unstable();
        contrib.dedup();
        if !contrib.is_empty() {
            return Err(RuntimeError {
                path: PathBuf::from(label),
                message: format!("this artifact is for ONNX Runtime (com.microsoft {}), which tract does not run: use --engine ort", contrib.join(", ")),
            });
        }
        Self::optimized(tract_onnx::onnx().model_for_proto_model(model), PathBuf::from(label), layout)
    }

    fn optimized(model: TractResult<InferenceModel>, path: PathBuf, layout: InputLayout) -> Result<Self, RuntimeError> {
        let plan = match model.and_then(|m| m.into_typed()).and_then(cumsum_over_integers).and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()) {
            Ok(plan) => plan,
            Err(e) => return Err(RuntimeError { path, message: format!("{e:#}") }),
        };
        let inputs = plan.model().inputs.len();
        if inputs != layout.inputs().len() {
            return Err(RuntimeError { path, message: format!("tract sees {inputs} input(s), the graph declares {}", layout.inputs().len()) });
        }
        Ok(TractSession { path, plan, layout })
    }
}

/// tract's ONNX front-end reads every cast to int64 as a cast to its symbolic dimension type
/// (TDim), and its CumSum evaluates plain numbers only ("TDim is not a number"). torch's dynamo
/// exporter writes RoBERTa's position ids as `Cast(int64) -> CumSum`, so such a CumSum gets an
/// int64 input and its output is cast back to TDim for the ops downstream, which expect it.
fn cumsum_over_integers(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::array::CumSum;
    use tract_onnx::tract_core::ops::cast::cast;
    let cumsums: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|node| node.op_is::<CumSum>())
        .filter(|node| model.outlet_fact(node.inputs[0]).is_ok_and(|fact| fact.datum_type == TDim::datum_type()))
        .map(|node| node.id)
        .collect();
    for id in cumsums {
        let node = model.node(id).clone();
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(&model, node.inputs[0])?;
        let as_i64 = patch.wire_node(format!("{}.as_i64", node.name), cast(i64::datum_type()), &[input])?;
        let summed = patch.wire_node(&node.name, node.op.clone(), &as_i64)?;
        let as_tdim = patch.wire_node(format!("{}.as_tdim", node.name), cast(TDim::datum_type()), &summed)?;
        patch.shunt_outside(&model, OutletId::new(id, 0), as_tdim[0])?;
        patch.apply(&mut model)?;
    }
    Ok(model)
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
        let tensor = |feed: Feed| match feed {
            Feed::I64(v) => Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue()),
            Feed::I32(v) => Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue()),
        };
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
