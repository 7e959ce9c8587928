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

/// Why only ONNX Runtime runs `model`, if it does: the com.microsoft operators in it that tract does
/// not run as ONNX Runtime does (`com.microsoft A, B`: the fused attention and int8 products of the
/// `--for onnxruntime` flavour; the int4 artifact's block-quantized weights, MatMulNBits and
/// GatherBlockQuantized, tract reads and dequantizes exactly, so those do not count), or else
/// qaforge's ONNX Runtime flavour in its metadata (a flavour may hold only standard operators, ONNX
/// `Attention` among them, laid out for ONNX Runtime's kernels; verify and calibration treat every
/// flavour alike).
pub fn onnxruntime_only(model: &ModelProto) -> Option<String> {
    const READ_BY_TRACT: &[&str] = &["MatMulNBits", "GatherBlockQuantized"];
    let mut contrib: Vec<&str> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|n| n.domain == qaforge_onnx::edit::MS_DOMAIN && !READ_BY_TRACT.contains(&n.op_type.as_str()))
        .map(|n| n.op_type.as_str())
        .collect();
    contrib.sort_unstable();
    contrib.dedup();
    if !contrib.is_empty() {
        return Some(format!("com.microsoft {}", contrib.join(", ")));
    }
    qaforge_onnx::is_onnxruntime_flavour(model).then(|| "qaforge's ONNX Runtime flavour".to_string())
}

impl TractSession {
    /// Loads and optimises an ONNX file, its inputs mapped as [`crate::check_inputs`] does.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let model = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| RuntimeError { path: path.to_owned(), message: format!("{e:#}") })?;
        let layout = crate::check_inputs(&model, path, None)?;
        Self::optimized(tract_onnx::onnx().model_for_proto_model(&flatten_as_reshape(&model)), path.to_owned(), layout)
    }

    /// Loads and optimises an in-memory model whose inputs are fed as `layout` says.
    pub fn with_layout(model: &ModelProto, label: &str, layout: InputLayout) -> Result<Self, RuntimeError> {
        // tract says so in its own words only after typing the graph.
        if let Some(reason) = onnxruntime_only(model) {
            return Err(RuntimeError {
                path: PathBuf::from(label),
                message: format!(
                    "this artifact is for ONNX Runtime ({reason}), which tract does not run: use --engine ort"
                ),
            });
        }
        Self::optimized(
            tract_onnx::onnx().model_for_proto_model(&flatten_as_reshape(model)),
            PathBuf::from(label),
            layout,
        )
    }

    fn optimized(model: TractResult<InferenceModel>, path: PathBuf, layout: InputLayout) -> Result<Self, RuntimeError> {
        let plan = match model
            .and_then(|m| m.into_typed())
            .and_then(cumsum_over_integers)
            .and_then(integer_products_of_symbols)
            .and_then(broadcast_boolean_ands)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
        {
            Ok(plan) => plan,
            Err(e) => return Err(RuntimeError { path, message: format!("{e:#}") }),
        };
        let inputs = plan.model().inputs.len();
        if inputs != layout.inputs().len() {
            return Err(RuntimeError {
                path,
                message: format!("tract sees {inputs} input(s), the graph declares {}", layout.inputs().len()),
            });
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

/// tract keeps a dimension read from a shape (`Gather(Shape(x), 1)`: the sequence length) as a
/// symbolic constant, and its declutter of a binary op with a constant operand evaluates that
/// constant as a number ("Undetermined symbol in expression: sequence"). transformers 5's mask code
/// computes flat indices `batch_index * sequence + position` this way (TorchScript exports). Such an
/// op gets both operands cast to int64, which tract evaluates when the symbols are known (at run
/// time), and its result cast back to the dimension type the ops downstream expect.
fn integer_products_of_symbols(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    use tract_onnx::tract_core::ops::cast::cast;
    let symbolic = |model: &TypedModel, outlet: OutletId| -> bool {
        model.outlet_fact(outlet).is_ok_and(|f| {
            f.datum_type == TDim::datum_type() && f.uniform.as_ref().is_some_and(|u| u.cast_to_scalar::<i64>().is_err())
        })
    };
    let nodes: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|node| node.op_is::<TypedBinOp>() && node.inputs.len() == 2)
        .filter(|node| node.inputs.iter().any(|&i| symbolic(&model, i)))
        .map(|node| node.id)
        .collect();
    for id in nodes {
        let node = model.node(id).clone();
        let mut patch = TypedModelPatch::default();
        let mut wires = tvec![];
        for (ix, &input) in node.inputs.iter().enumerate() {
            let tap = patch.tap_model(&model, input)?;
            wires.push(patch.wire_node(format!("{}.as_i64.{ix}", node.name), cast(i64::datum_type()), &[tap])?[0]);
        }
        let out = patch.wire_node(&node.name, node.op.clone(), &wires)?;
        let as_tdim = patch.wire_node(format!("{}.as_tdim", node.name), cast(TDim::datum_type()), &out)?;
        patch.shunt_outside(&model, OutletId::new(id, 0), as_tdim[0])?;
        patch.apply(&mut model)?;
    }
    Ok(model)
}

/// tract folds `And(mask, c)` where it proves `c` all true (transformers 5's bidirectional mask:
/// `position >= 0`, shape [1, 1, sequence, 1]) into `mask` alone, dropping the broadcast to the
/// declared output shape ([batch, 1, sequence, sequence]), and the Where reading it then fails
/// its shape check at run time (torch dynamo exports). Broadcasting each operand of a boolean And to
/// the output shape first keeps the shape whatever is folded; the values are the same.
fn broadcast_boolean_ands(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::array::MultiBroadcastTo;
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    use tract_onnx::tract_core::ops::logic::And;
    let nodes: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|node| node.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<And>()))
        .filter(|node| {
            node.inputs.iter().any(|&i| model.outlet_fact(i).is_ok_and(|f| f.shape != node.outputs[0].fact.shape))
        })
        .map(|node| node.id)
        .collect();
    for id in nodes {
        let node = model.node(id).clone();
        let shape = node.outputs[0].fact.shape.clone();
        let mut patch = TypedModelPatch::default();
        let mut wires = tvec![];
        for (ix, &input) in node.inputs.iter().enumerate() {
            let tap = patch.tap_model(&model, input)?;
            wires.push(if model.outlet_fact(input)?.shape == shape {
                tap
            } else {
                patch.wire_node(
                    format!("{}.broadcast.{ix}", node.name),
                    MultiBroadcastTo { shape: shape.clone() },
                    &[tap],
                )?[0]
            });
        }
        let out = patch.wire_node(&node.name, node.op.clone(), &wires)?;
        patch.shunt_outside(&model, OutletId::new(id, 0), out[0])?;
        patch.apply(&mut model)?;
    }
    Ok(model)
}

/// tract's Flatten cannot type an input with more than one symbolic dimension ("Can not compute a
/// shape with square of symbols"), and transformers 5's mask code flattens the [batch, sequence]
/// attention mask (`Flatten(axis=2)`, TorchScript exports). A Flatten whose input rank is known
/// becomes the equivalent Reshape, to [1, -1] or [-1, 1] at the ends, else with the known side's
/// size; one whose sizes are not known enough stays (tract then says why it cannot type it).
fn flatten_as_reshape(model: &ModelProto) -> std::borrow::Cow<'_, ModelProto> {
    use qaforge_onnx::edit::{self, Rewrite};
    let Some(graph) = model.graph.as_ref() else { return std::borrow::Cow::Borrowed(model) };
    if edit::nodes_of(graph, "Flatten").next().is_none() {
        return std::borrow::Cow::Borrowed(model);
    }
    let mut model = model.clone();
    let Some(graph) = model.graph.as_mut() else { return std::borrow::Cow::Owned(model) };
    let mut rw = Rewrite::new(graph);
    let _ = rw.each_live(&["Flatten"], |rw, i| {
        let node = rw.node(i).clone();
        let Some(dims) = known_dims(rw, &node.input[0]) else { return Ok::<_, ()>(false) };
        let rank = dims.len() as i64;
        let axis = edit::int_attr(&node, "axis").unwrap_or(1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..=rank).contains(&axis) {
            return Ok(false);
        }
        let (head, tail) = dims.split_at(axis as usize);
        let product = |side: &[Option<i64>]| side.iter().try_fold(1i64, |p, d| d.filter(|&d| d >= 0).map(|d| p * d));
        let shape = match (product(head), product(tail)) {
            (_, Some(tail)) => [-1, tail],
            (Some(head), None) => [head, -1],
            (None, None) => return Ok(false),
        };
        let bytes = shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        let shape = rw.add_initializer(
            &format!("{}.shape", node.name),
            edit::raw_tensor("", &[2], tract_onnx::pb::tensor_proto::DataType::Int64, bytes),
        );
        rw.replace(i, [edit::node("Reshape", &node.name, &[&node.input[0], &shape], &[&node.output[0]], vec![])]);
        Ok(true)
    });
    rw.apply();
    std::borrow::Cow::Owned(model)
}

/// The dimensions (None where symbolic) of `tensor` as the graph declares them (its inputs and
/// value_info), looking through the element-wise ops before it, which keep the shape.
fn known_dims(rw: &qaforge_onnx::edit::Rewrite<'_>, tensor: &str) -> Option<Vec<Option<i64>>> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let graph = &*rw.graph;
    let declared = graph.input.iter().chain(&graph.value_info).find(|v| v.name == tensor).and_then(|v| {
        match v.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => Some(
                t.shape
                    .as_ref()?
                    .dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect(),
            ),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    });
    if declared.is_some() {
        return declared;
    }
    let producer = rw.producer(tensor)?;
    let node = rw.node(producer);
    matches!(
        node.op_type.as_str(),
        "Cast" | "Identity" | "Not" | "Neg" | "Abs" | "Relu" | "Sigmoid" | "Tanh" | "Erf" | "Sqrt" | "Exp"
    )
    .then(|| known_dims(rw, &node.input[0]))
    .flatten()
}

impl Engine for TractSession {
    fn label(&self) -> &Path {
        &self.path
    }

    fn description(&self) -> String {
        format!("tract {}", env!("QAFORGE_TRACT_VERSION"))
    }

    fn run_outputs(
        &self,
        batch: usize,
        len: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<TensorOutputs, RuntimeError> {
        let runtime = |e: TractError| RuntimeError { path: self.path.clone(), message: format!("{e:#}") };
        let tensor = |feed: Feed| match feed {
            Feed::I64(v) => Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue()),
            Feed::I32(v) => Tensor::from_shape(&[batch, len], &v).map(|t| t.into_tvalue()),
        };
        let inputs = self
            .layout
            .feeds(ids, mask, types)
            .into_iter()
            .map(|v| tensor(v).map_err(runtime))
            .collect::<Result<TVec<_>, _>>()?;
        // tract panics on some inputs a graph does not expect (Gather indices past a table: see
        // check_token_ids, which callers run first); a panic is turned into this artifact's error.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.plan.run(inputs)))
            .map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use qaforge_onnx::edit;
    use tract_onnx::pb::{
        tensor_proto::DataType, tensor_shape_proto, type_proto, GraphProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    /// `mask` ([batch, sequence] int64, or of unknown rank) → Cast(float) → Flatten(axis) → `flat`.
    fn flatten_graph(axis: i64, declared: bool) -> ModelProto {
        let dim = |name: &str| tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(tensor_shape_proto::dimension::Value::DimParam(name.into())),
        };
        let shape = declared.then(|| TensorShapeProto { dim: vec![dim("batch"), dim("sequence")] });
        let info = |name: &str, ty: DataType, shape: Option<TensorShapeProto>| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: ty as i32, shape })),
            }),
            doc_string: String::new(),
        };
        let graph = GraphProto {
            node: vec![
                edit::node(
                    "Cast",
                    "cast",
                    &["mask"],
                    &["mask.f32"],
                    vec![edit::int_attribute("to", DataType::Float as i64)],
                ),
                edit::node("Flatten", "flatten", &["mask.f32"], &["flat"], vec![edit::int_attribute("axis", axis)]),
            ],
            input: vec![info("mask", DataType::Int64, shape)],
            output: vec![info("flat", DataType::Float, None)],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![tract_onnx::pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(model: &ModelProto) -> TractResult<Vec<usize>> {
        let plan = tract_onnx::onnx().model_for_proto_model(model)?.into_typed()?.into_optimized()?.into_runnable()?;
        let mask = Tensor::from_shape(&[2, 3], &[1i64, 1, 0, 1, 1, 1])?;
        Ok(plan.run(tvec![mask.into_tvalue()])?[0].shape().to_vec())
    }

    #[test]
    fn a_flatten_of_two_symbolic_dimensions_runs_as_a_reshape() {
        let model = flatten_graph(2, true);
        assert!(
            format!("{:#}", run(&model).unwrap_err()).contains("square of symbols"),
            "tract 0.23 cannot type it as it is"
        );
        let rewritten = flatten_as_reshape(&model);
        let graph = rewritten.graph.as_ref().unwrap();
        assert_eq!(graph.node.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>(), ["Cast", "Reshape"]);
        let shape = graph.initializer.iter().find(|t| t.name == graph.node[1].input[1]).unwrap();
        assert_eq!(shape.raw_data, [-1i64, 1].iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<u8>>());
        assert_eq!(run(&rewritten).unwrap(), [6, 1]);
        // axis 0 and a negative axis: [1, batch × sequence] and [batch, sequence]-shaped sides.
        assert_eq!(run(&flatten_as_reshape(&flatten_graph(0, true))).unwrap(), [1, 6]);
        assert_eq!(run(&flatten_as_reshape(&flatten_graph(-2, true))).unwrap(), [1, 6]);
    }

    #[test]
    fn a_flatten_of_unknown_rank_is_left_to_tract() {
        let model = flatten_graph(1, false);
        assert_eq!(flatten_as_reshape(&model).graph.as_ref().unwrap().node[1].op_type, "Flatten");
        let model = flatten_graph(1, true);
        // Neither side's size is known ([batch] and [sequence]): left as it is.
        assert_eq!(flatten_as_reshape(&model).graph.as_ref().unwrap().node[1].op_type, "Flatten");
    }
}
