//! The ONNX Runtime flavour of qaforge's artifacts (`--for onnxruntime`), and the `.ort` package
//! ONNX Runtime Mobile loads.
//!
//! ONNX Runtime's own optimizer fuses BERT graphs only when they match the subgraphs its fusions
//! expect, and MobileBERT matches none (no NoNorm kernel, the bottleneck attention reads two
//! inputs). The passes here find the same roles by structure in any graph (ours, torch's,
//! optimum's) and emit what ONNX Runtime's CPU kernels run fastest:
//!
//! - [`FOLDS`], on the float graph before any quantization: exact algebraic folds
//!   ([`fold_scale_shift`], [`fold_residual_scale_shift`]);
//! - [`FUSIONS`], on the float or int8 graph: com.microsoft fused ops ([`integer_matmul`],
//!   [`attention`], which emits ONNX's own opset-23 `Attention` where it is faster and the graph
//!   may be raised to opset 23) and int8 table lookups that read int8 rows ([`gather_quantized`]).
//!
//! Residual `Add` → `LayerNormalization` is left as it is, not fused into com.microsoft
//! `SkipLayerNormalization`: on native ONNX Runtime 1.30.0–1.32.0 (qaforge pins 1.32.0) that CPU
//! kernel takes 570–600 µs per norm over `[1, 210, 384]` on one thread, against 77–96 µs for
//! Add + LayerNormalization (`bench/ort_norm_kernels.py`), so fusing made BERT-style artifacts
//! slower; in onnxruntime-web 1.30.0 the two forms are within 5%. (1.27–1.29 were the other way
//! round.) ONNX Runtime's own fusion of the pair needs static sequence lengths, so it leaves these
//! artifacts' pairs alone.
//!
//! Each pass is one file behind the [`Pass`] trait and registered in one table, as tract's
//! optimizer passes are. A fused artifact runs in ONNX Runtime only (tract has no com.microsoft
//! kernels, and verify refuses every flavour in tract by its metadata); the portable standard-ONNX
//! artifact stays the default.

pub mod attention;
pub mod fold_residual_scale_shift;
pub mod fold_scale_shift;
pub mod gather_quantized;
pub mod integer_matmul;
mod no_norm;
pub mod ort_format;
#[cfg(feature = "ort")]
pub mod package;

use std::collections::BTreeMap;

use qaforge_onnx::edit::{import_opset, Prune, Rewrite, MS_DOMAIN};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

use qaforge_provenance::keys::{FLAVOUR as FLAVOUR_KEY, ONNXRUNTIME_PASSES as PASSES_KEY};

/// Errors of the ONNX Runtime flavour.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// The graph cannot be given the ONNX Runtime flavour.
    #[error("ONNX Runtime flavour: {0}")]
    Graph(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be decoded or written.
    #[error(transparent)]
    File(#[from] qaforge_onnx::EmitError),
    /// ONNX Runtime refused the artifact or failed to package it.
    #[error(transparent)]
    Runtime(#[from] qaforge_runtime::RuntimeError),
}

/// One rewrite of a graph.
pub trait Pass: Sync {
    /// Short name, used in provenance and summaries.
    fn name(&self) -> &'static str;
    /// What it rewrites, in words.
    fn describe(&self) -> &'static str;
    /// Rewrites through `rw`'s plan; returns the number of rewrites.
    fn run(&self, rw: &mut Rewrite<'_>) -> Result<usize, FuseError>;
}

/// Exact algebraic folds, run on the float graph (before quantization, so that int8 weights are
/// quantized from the folded values). The NoNorms after a linear layer alone first, then those
/// after a residual addition.
pub const FOLDS: &[&dyn Pass] =
    &[&fold_scale_shift::FoldScaleShift, &fold_residual_scale_shift::FoldResidualScaleShift];

/// Fusions into com.microsoft ops and rewrites of the int8 graph, in order: the int8 products
/// first (they take the linear layers' biases), int8 table lookups, then attention (on whatever
/// projections remain). Residual norms stay standard ops (see the crate documentation).
pub const FUSIONS: &[&dyn Pass] =
    &[&integer_matmul::IntegerMatMulFusion, &gather_quantized::GatherQuantizedRows, &attention::AttentionFusion];

/// What the passes did: rewrites per pass, in the order they ran.
#[derive(Debug, Default, Clone)]
pub struct FuseSummary {
    /// (pass name, rewrites).
    pub passes: Vec<(&'static str, usize)>,
}

impl FuseSummary {
    /// `name count, name count...`, for provenance and summaries.
    pub fn describe(&self) -> String {
        self.passes.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
    }
}

fn run_passes(model: &mut ModelProto, passes: &[&dyn Pass], summary: &mut FuseSummary) -> Result<(), FuseError> {
    // Softmax's axis, Unsqueeze's axes input and LayerNormalization are the opset-13+ forms.
    if qaforge_onnx::default_opset(model).is_none_or(|v| v < 13) {
        return Err(FuseError::Graph(format!(
            "opset {} is older than 13, which the ONNX Runtime flavour reads",
            qaforge_onnx::default_opset(model).unwrap_or(0)
        )));
    }
    let graph = model.graph.as_mut().ok_or_else(|| FuseError::Graph("the model has no graph".into()))?;
    for pass in passes {
        let mut rw = Rewrite::new(graph);
        let count = pass.run(&mut rw)?;
        rw.finish(Prune::DeadNodes);
        summary.passes.push((pass.name(), count));
    }
    Ok(())
}

/// Refuses a model that already has the ONNX Runtime flavour (passes expect the standard form).
pub fn check_portable(model: &ModelProto) -> Result<(), FuseError> {
    if model.metadata_props.iter().any(|p| p.key == FLAVOUR_KEY) {
        return Err(FuseError::Graph(
            "the input already has the ONNX Runtime flavour; start from the portable artifact".into(),
        ));
    }
    Ok(())
}

/// Runs [`FOLDS`] on a float model in place.
pub fn fold(model: &mut ModelProto, summary: &mut FuseSummary) -> Result<(), FuseError> {
    check_portable(model)?;
    run_passes(model, FOLDS, summary)
}

/// Runs [`FUSIONS`] on a (folded, possibly quantized) model in place, declares the com.microsoft
/// opset, and records the flavour and what every pass did in the metadata.
pub fn fuse(model: &mut ModelProto, summary: &mut FuseSummary) -> Result<(), FuseError> {
    run_passes(model, FUSIONS, summary)?;
    // ONNX Attention is an opset-23 op; the attention pass emits it only where the graph's other
    // standard ops mean the same at 23 (attention::OPSET_23_SAME_MEANING).
    let uses_standard_attention = model
        .graph
        .as_ref()
        .is_some_and(|g| g.node.iter().any(|n| qaforge_onnx::edit::is_default_domain(n) && n.op_type == "Attention"));
    if uses_standard_attention {
        for o in model.opset_import.iter_mut().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
            o.version = o.version.max(attention::STANDARD_ATTENTION_OPSET);
        }
    }
    let uses_contrib_ops = model.graph.as_ref().is_some_and(|g| g.node.iter().any(|n| n.domain == MS_DOMAIN));
    if uses_contrib_ops {
        import_opset(model, MS_DOMAIN, 1);
    }
    model.metadata_props.retain(|p| p.key != FLAVOUR_KEY && p.key != PASSES_KEY);
    model.metadata_props.push(StringStringEntryProto { key: FLAVOUR_KEY.into(), value: "onnxruntime".into() });
    model.metadata_props.push(StringStringEntryProto { key: PASSES_KEY.into(), value: summary.describe() });
    Ok(())
}

/// Op counts of a model's graph by (domain, op type), for summaries and tests.
pub fn op_counts(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in model.graph.iter().flat_map(|g| &g.node) {
        let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
            n.op_type.clone()
        } else {
            format!("{}.{}", n.domain, n.op_type)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> ModelProto {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../golden").join(name);
        let checkpoint = qaforge_checkpoint::Checkpoint::open(&dir).unwrap();
        qaforge_onnx::convert(&checkpoint, qaforge_onnx::EmitOptions::default()).unwrap().model
    }

    fn flavour(mut model: ModelProto) -> (ModelProto, FuseSummary) {
        let mut summary = FuseSummary::default();
        fold(&mut model, &mut summary).unwrap();
        fuse(&mut model, &mut summary).unwrap();
        qaforge_onnx::check_types(&model).unwrap();
        (model, summary)
    }

    #[test]
    fn mobilebert_gets_onnx_attention_and_its_bottleneck_norms_folded() {
        // 4 layers, shared key/query bottleneck: value reads the layer input, so no packed QKV;
        // every op of the graph means the same at opset 23, so ONNX Attention, one mask bias.
        let (model, summary) = flavour(fixture("mobilebert-tiny"));
        let ops = op_counts(&model);
        assert_eq!(ops.get("Attention"), Some(&4), "{ops:?}");
        assert_eq!(ops.get("com.microsoft.MultiHeadAttention"), None, "{ops:?}");
        assert_eq!(ops.get("Expand"), Some(&1), "the mask bias is expanded once for all layers: {ops:?}");
        assert_eq!(ops.get("Softmax"), None);
        assert_eq!(model.opset_import.iter().find(|o| o.domain.is_empty()).map(|o| o.version), Some(23));
        assert_eq!(summary.passes.iter().find(|p| p.0 == "fold_scale_shift"), Some(&("fold_scale_shift", 8)));
        // Six NoNorms after a residual addition per layer.
        assert_eq!(
            summary.passes.iter().find(|p| p.0 == "fold_residual_scale_shift"),
            Some(&("fold_residual_scale_shift", 24))
        );
        // Only standard ops are left in fp32, so no com.microsoft opset is declared.
        assert!(!model.opset_import.iter().any(|o| o.domain == MS_DOMAIN), "{:?}", model.opset_import);
        assert!(model.metadata_props.iter().any(|p| p.key == FLAVOUR_KEY && p.value == "onnxruntime"));
        // Every node's inputs are produced before it (the rewrite keeps topological order).
        let graph = model.graph.as_ref().unwrap();
        let mut known: std::collections::HashSet<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .chain(graph.initializer.iter().map(|t| t.name.as_str()))
            .collect();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                assert!(known.contains(i.as_str()), "{} reads {i} before it is produced", n.name);
            }
            known.extend(n.output.iter().map(String::as_str));
        }
    }

    #[test]
    fn bert_gets_packed_attention_and_keeps_its_layer_norms_standard() {
        let (model, _) = flavour(fixture("bert-tiny"));
        let ops = op_counts(&model);
        assert_eq!(ops.get("com.microsoft.Attention"), Some(&2), "{ops:?}");
        // Two residual norms per layer and the embeddings' norm, none fused (slower in ONNX Runtime ≥ 1.30).
        assert_eq!(ops.get("com.microsoft.SkipLayerNormalization"), None, "{ops:?}");
        assert_eq!(ops.get("LayerNormalization"), Some(&5), "{ops:?}");
    }

    #[test]
    fn int8_dynamic_products_become_dynamic_quantize_matmuls_with_their_biases() {
        let model = fixture("bert-tiny");
        let mut folded = model.clone();
        let mut summary = FuseSummary::default();
        fold(&mut folded, &mut summary).unwrap();
        let options = qaforge_quantize::QuantizeOptions {
            precision: qaforge_quantize::Precision::Int8Dynamic,
            exclude: vec![],
            float_activations: vec![],
            int8_qa_head: false,
            target: qaforge_quantize::Target::Arm64,
            weights: qaforge_quantize::WeightOptions::default(),
            method: qaforge_quantize::CalibrationMethod::MinMax,
            activation_scales: qaforge_quantize::ActivationScales::Tensor,
            batch_size: 1,
            threads: 1,
            input_names: None,
            calibration_engine: qaforge_quantize::EngineChoice::Tract,
            calibration_fallback: None,
            int4: Default::default(),
        };
        let (mut quantized, q) = qaforge_quantize::apply(&folded, &options, None, None, "test").unwrap();
        fuse(&mut quantized, &mut summary).unwrap();
        let ops = op_counts(&quantized);
        assert_eq!(ops.get("com.microsoft.DynamicQuantizeMatMul"), Some(&q.converted.len()), "{ops:?}");
        assert_eq!(ops.get("MatMulInteger"), None);
        assert_eq!(ops.get("DynamicQuantizeLinear"), None);
        let graph = quantized.graph.as_ref().unwrap();
        assert!(
            graph.node.iter().filter(|n| n.op_type == "DynamicQuantizeMatMul").all(|n| n.input.len() == 5),
            "every product took its bias"
        );
        // Attention over the int8 projections: ONNX Attention.
        assert_eq!(ops.get("Attention"), Some(&2), "{ops:?}");
    }

    #[test]
    fn a_graph_with_an_op_whose_meaning_changed_by_opset_23_keeps_multi_head_attention() {
        // A ReduceMean (its `axes` an attribute before opset 18, an input since) beside the
        // mobilebert-tiny graph: raising the opset would change what it means.
        let mut model = fixture("mobilebert-tiny");
        let graph = model.graph.as_mut().unwrap();
        let input = graph.node[0].output[0].clone();
        graph.node.insert(
            1,
            qaforge_onnx::edit::node(
                "ReduceMean",
                "reduce",
                &[&input],
                &["reduced"],
                vec![qaforge_onnx::edit::int_attribute("keepdims", 1)],
            ),
        );
        let mut extra = graph.output[0].clone();
        extra.name = "reduced".into();
        extra.r#type = None;
        graph.output.push(extra);
        let mut summary = FuseSummary::default();
        fold(&mut model, &mut summary).unwrap();
        fuse(&mut model, &mut summary).unwrap();
        let ops = op_counts(&model);
        assert_eq!(ops.get("com.microsoft.MultiHeadAttention"), Some(&4), "{ops:?}");
        assert_eq!(ops.get("Attention"), None, "{ops:?}");
        assert_eq!(model.opset_import.iter().find(|o| o.domain.is_empty()).map(|o| o.version), Some(17));
    }

    #[test]
    fn a_flavoured_graph_is_refused_as_input() {
        let (model, _) = flavour(fixture("bert-tiny"));
        let mut again = model.clone();
        assert!(fold(&mut again, &mut FuseSummary::default())
            .unwrap_err()
            .to_string()
            .contains("already has the ONNX Runtime flavour"));
    }
}
