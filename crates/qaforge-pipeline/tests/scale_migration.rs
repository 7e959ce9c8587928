//! Scale migration (`quantize --smooth`) keeps the float function: the migrated float graph's
//! logits match the original's, on both activation families (MobileBERT's ReLU and NoNorm, BERT's
//! GELU and LayerNorm), and every group's choice only keeps or lowers its simulated int8 error.
//!
//! A test process of its own: migration measures activations with tract's portable kernels, which
//! a process can only choose before tract has run anything with this CPU's
//! (`qaforge_runtime::kernels`), and the workspace's end-to-end tests run tract in-process.

use std::path::{Path, PathBuf};

use qaforge_pipeline::{ConvertRequest, Flavour};
use qaforge_quantize::{CalibrationMethod, Precision, QuantizeOptions, Target, WeightOptions};
use qaforge_runtime::Engine;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../golden")
}

fn options() -> QuantizeOptions {
    QuantizeOptions {
        precision: Precision::Int8Dynamic,
        exclude: vec![],
        float_activations: vec![],
        int8_qa_head: false,
        target: Target::Arm64,
        weights: WeightOptions::default(),
        method: CalibrationMethod::MinMax,
        activation_scales: qaforge_quantize::ActivationScales::Tensor,
        batch_size: 2,
        threads: 2,
        input_names: None,
        calibration_engine: qaforge_runtime::EngineChoice::Tract,
        calibration_fallback: None,
        int4: Default::default(),
    }
}

/// Start and end logits of the first `n` features, in tract.
fn logits(model: &qaforge_onnx::pb::ModelProto, features: &qaforge_squad::Features, n: usize) -> Vec<f32> {
    let layout = qaforge_runtime::check_inputs(model, Path::new("model"), None).unwrap();
    let session = qaforge_runtime::TractSession::with_layout(model, "model", layout).unwrap();
    let len = qaforge_runtime::padded_length(features, 0, n);
    let rows = |src: &[i64]| qaforge_runtime::gather_rows(features, src, 0, n, len);
    let (start, end) = session
        .run_batch(n, len, rows(&features.input_ids), rows(&features.attention_mask), rows(&features.token_type_ids))
        .unwrap();
    start.into_iter().chain(end).collect()
}

#[test]
fn migration_keeps_the_float_function_and_only_lowers_each_groups_error() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["mobilebert-tiny", "bert-tiny"] {
        let fp32 = dir.path().join(format!("{fixture}.onnx"));
        let convert = ConvertRequest {
            model_dir: golden().join(fixture),
            output: fp32.clone(),
            emit: qaforge_onnx::EmitOptions::default(),
            flavour: Flavour::Portable,
        };
        qaforge_pipeline::convert(&convert).unwrap();
        let model = qaforge_onnx::read_model(&fp32).unwrap();
        let features = qaforge_verify::Bundle::open(&golden().join(fixture)).unwrap().features.truncated(16);
        let (migrated, smoothing) = qaforge_quantize::smooth::migrate(&model, &options(), &features, &|_| {}).unwrap();
        assert!(!smoothing.groups.is_empty(), "{fixture}: no product groups found");
        assert!(smoothing.groups.iter().any(|g| g.alpha.is_some()), "{fixture}: nothing migrated");
        for g in &smoothing.groups {
            assert!(g.error_after <= g.error_before, "{fixture}: {g:?}");
            assert_eq!(g.error_after < g.error_before, g.alpha.is_some(), "{fixture}: {g:?}");
        }
        let graph = migrated.graph.as_ref().unwrap();
        let scales = graph.node.iter().filter(|n| n.op_type == "Mul" && n.name.contains(".smoothed")).count();
        assert_eq!(scales, smoothing.groups.iter().filter(|g| g.alpha.is_some()).count(), "{fixture}");
        let recorded = migrated.metadata_props.iter().find(|p| p.key == "qaforge.quantize.smooth");
        assert!(recorded.is_some_and(|p| p.value == smoothing.describe()), "{fixture}");
        // The same function: logits within float rounding of the original graph's (verify's fp32
        // tolerance against PyTorch is 1e-4).
        let (before, after) = (logits(&model, &features, 4), logits(&migrated, &features, 4));
        let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{fixture}: migrated logits differ by {worst}");
    }
}
