//! End-to-end: `qaforge convert` on every fixture, checked against the PyTorch golden logits.

use crate::common::{convert, fixture_features, fixtures, full_size_checkpoint, golden, qaforge, text};
use qaforge_runtime::Engine;

#[test]
fn every_fixture_matches_the_pytorch_logits() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in fixtures() {
        let artifact = convert(fixture, dir.path());
        let report = dir.path().join(format!("{fixture}.json"));
        let output = qaforge(&[
            "verify",
            artifact.to_str().unwrap(),
            "--golden",
            golden().join(fixture).to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{fixture}: {}", text(&output));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let max = report["logits"]["max_abs_diff"].as_f64().unwrap();
        assert!(max <= 1e-4, "{fixture}: max |Δ| {max}");
        assert_eq!(report["features"].as_u64(), Some(fixture_features(fixture).count as u64));
    }
}

#[test]
fn conversion_is_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for fixture in fixtures() {
        let first = std::fs::read(convert(fixture, a.path())).unwrap();
        let second = std::fs::read(convert(fixture, b.path())).unwrap();
        assert!(first == second, "{fixture}: two conversions differ");
    }
}

#[test]
fn graph_has_dynamic_inputs_named_nodes_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let model = qaforge_onnx::read_model(&convert("mobilebert-tiny", dir.path())).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask", "token_type_ids"]);
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["start_logits", "end_logits"]);
    assert_eq!(model.opset_import[0].version, 17);
    for name in ["layer.3.ffn.2.intermediate", "layer.0.attention.softmax", "embeddings.trigram", "qa_outputs"] {
        assert!(graph.node.iter().any(|n| n.name == name), "no node named {name}");
    }
    let meta: std::collections::BTreeMap<_, _> =
        model.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    assert_eq!(meta.get("qaforge.precision"), Some(&"fp32"));
    assert_eq!(meta.get("qaforge.source_sha256").map(|s| s.len()), Some(64));
}

#[test]
fn verify_fails_on_a_perturbed_and_on_a_wrong_model() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = convert("mobilebert-tiny", dir.path());
    let golden_tiny = golden().join("mobilebert-tiny");

    // One weight changed by 0.5.
    let mut model = qaforge_onnx::read_model(&artifact).unwrap();
    let init = model.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "qa_outputs.weight.T").unwrap();
    let v = f32::from_le_bytes(init.raw_data[0..4].try_into().unwrap()) + 0.5;
    init.raw_data[0..4].copy_from_slice(&v.to_le_bytes());
    let perturbed = dir.path().join("perturbed.onnx");
    std::fs::write(&perturbed, qaforge_onnx::encode(&model)).unwrap();
    let output = qaforge(&["verify", perturbed.to_str().unwrap(), "--golden", golden_tiny.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("FAIL"), "{}", text(&output));

    // Another fixture's model against tiny's goldens: refused by provenance, and failed on the
    // numbers when compared anyway.
    let wrong = convert("mobilebert-nobottleneck", dir.path());
    let output = qaforge(&["verify", wrong.to_str().unwrap(), "--golden", golden_tiny.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("converted from checkpoint"), "{}", text(&output));
    let output = qaforge(&[
        "verify",
        wrong.to_str().unwrap(),
        "--golden",
        golden_tiny.to_str().unwrap(),
        "--allow-other-checkpoint",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
}

#[test]
fn unsupported_opset_is_a_usage_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let output = qaforge(&[
        "convert",
        golden().join("mobilebert-tiny").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "13",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("opset 13 is not supported"), "{}", text(&output));
    assert!(!out.exists());
}

#[test]
fn opset_21_artifacts_also_match() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let output = qaforge(&[
        "convert",
        golden().join("mobilebert-flipped").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "21",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let output =
        qaforge(&["verify", out.to_str().unwrap(), "--golden", golden().join("mobilebert-flipped").to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn full_size_mobilebert_converts_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = full_size_checkpoint(dir.path(), 7);
    let out = dir.path().join("full.onnx");
    let output = qaforge(&["convert", model_dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("parameters    24582914"), "{}", text(&output));
    let session = qaforge_runtime::TractSession::load(&out).unwrap();
    let ids = vec![101, 2054, 2003, 1037, 3231, 1029, 102, 2023, 2003, 1037, 3231, 1012, 102];
    let n = ids.len();
    let types = (0..n as i64).map(|i| i64::from(i >= 7)).collect();
    let (start, end) = session.run_batch(1, n, ids, vec![1; n], types).unwrap();
    assert!(start.iter().chain(&end).all(|v| v.is_finite()));
    assert!(start.iter().any(|&v| v != start[0]), "constant logits");
}

/// `--engine ort` is a usage error (exit 2, a message saying what to do) when the build lacks the
/// `ort` feature or libonnxruntime cannot be found. The passing runs with ONNX Runtime are in
/// `make test-onnx`, which has the onnxruntime wheel's library.
#[test]
fn verify_with_onnx_runtime_explains_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = convert("mobilebert-tiny", dir.path());
    let golden_tiny = golden().join("mobilebert-tiny");
    let missing = dir.path().join("libonnxruntime.so.missing");
    let args = [
        "verify",
        artifact.to_str().unwrap(),
        "--golden",
        golden_tiny.to_str().unwrap(),
        "--engine",
        "ort",
        "--ort-library",
        missing.to_str().unwrap(),
    ];
    let output = qaforge(&args);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    if cfg!(feature = "ort") {
        assert!(text(&output).contains("libonnxruntime.so.missing: no such file"), "{}", text(&output));
    } else {
        assert!(text(&output).contains("built without ONNX Runtime support"), "{}", text(&output));
    }
    // --engine auto (the default) with a library named that is not there is the same error in a
    // build with ONNX Runtime (never a silent fall back to tract); without the library, or in a
    // build without ONNX Runtime, it is tract.
    let auto = [
        "verify",
        artifact.to_str().unwrap(),
        "--golden",
        golden_tiny.to_str().unwrap(),
        "--engine",
        "auto",
        "--ort-library",
        missing.to_str().unwrap(),
    ];
    let output = qaforge(&auto);
    if cfg!(feature = "ort") {
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains("libonnxruntime.so.missing: no such file"), "{}", text(&output));
    } else {
        assert!(output.status.success() && text(&output).contains("(tract "), "{}", text(&output));
    }
    let output = qaforge(&auto[..auto.len() - 4]);
    assert!(output.status.success() && text(&output).contains("(tract "), "{}", text(&output));
}

/// An exported graph whose inputs come in another order would be fed the wrong tensors by
/// position: verify refuses it naming the order, and an artifact whose inputs have other names
/// (in the same order) verifies by position.
#[test]
fn verify_maps_inputs_by_name_whatever_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = convert("mobilebert-tiny", dir.path());
    let golden_tiny = golden().join("mobilebert-tiny");
    let mut model = qaforge_onnx::read_model(&artifact).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.input.swap(1, 2);
    let swapped = dir.path().join("swapped.onnx");
    std::fs::write(&swapped, qaforge_onnx::encode(&model)).unwrap();
    let run = qaforge(&["verify", swapped.to_str().unwrap(), "--golden", golden_tiny.to_str().unwrap()]);
    assert!(run.status.success(), "inputs are fed by their names: {}", text(&run));

    let mut model = qaforge_onnx::read_model(&artifact).unwrap();
    let graph = model.graph.as_mut().unwrap();
    // Names that do not say the role are taken by position.
    for (from, to) in [("input_ids", "ids"), ("attention_mask", "mask"), ("token_type_ids", "segments")] {
        for n in graph.node.iter_mut() {
            for i in n.input.iter_mut().filter(|i| *i == from) {
                *i = to.to_string();
            }
        }
        graph.input.iter_mut().filter(|i| i.name == from).for_each(|i| i.name = to.to_string());
    }
    let renamed = dir.path().join("renamed.onnx");
    std::fs::write(&renamed, qaforge_onnx::encode(&model)).unwrap();
    let run = qaforge(&["verify", renamed.to_str().unwrap(), "--golden", golden_tiny.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
}
