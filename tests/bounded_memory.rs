//! Memory is bounded by the real size of the input, not by what a header claims: qaforge runs
//! under `ulimit -v` (address space well below every claim) and must refuse each file with its
//! own error (exit 2). An allocation sized by a claim would abort the process instead (Rust
//! aborts when an allocation fails), which this test would see as a signal, not exit 2.

use std::path::Path;

use crate::common::{golden, text};

/// Address-space limit for the process: 2 GiB, below every claim below (4 GiB to 4 TB) but room
/// for the debug binary's own mappings.
const LIMIT_KIB: u64 = 2 << 20;

/// `qaforge convert MODEL -o OUT` under `ulimit -v LIMIT_KIB`.
fn convert_limited(model: &Path, out: &Path) -> std::process::Output {
    let script = format!("ulimit -v {LIMIT_KIB} && exec \"$0\" convert \"$1\" -o \"$2\"");
    std::process::Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_qaforge"), model.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap()
}

fn convert_under_limit(weights: &str, target_name: &str, config: Option<&str>, needle: &str) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    match config {
        Some(file) => std::fs::copy(corpus.join(file), model.join("config.json")).unwrap(),
        None => std::fs::copy(golden().join("mobilebert-tiny/config.json"), model.join("config.json")).unwrap(),
    };
    std::fs::copy(
        if weights.is_empty() { golden().join("mobilebert-tiny/model.safetensors") } else { corpus.join(weights) },
        model.join(target_name),
    )
    .unwrap();
    let out = dir.path().join("out.onnx");
    let output = convert_limited(&model, &out);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(2), "under ulimit -v {LIMIT_KIB}: {message}");
    assert!(message.contains(needle), "expected `{needle}` in:\n{message}");
    assert!(!out.exists());
}

#[test]
fn a_sane_model_converts_under_the_limit() {
    // The control: the limit leaves room for real work, so the refusals below are not just the
    // limit failing everything.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let output = convert_limited(&golden().join("mobilebert-tiny"), &out);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn safetensors_claiming_a_trillion_elements() {
    convert_under_limit(
        "safetensors/trillion-elements.safetensors",
        "model.safetensors",
        None,
        "invalid safetensors file",
    );
}

#[test]
fn safetensors_header_claiming_a_terabyte() {
    convert_under_limit(
        "safetensors/header-length-beyond-file.safetensors",
        "model.safetensors",
        None,
        "invalid safetensors file",
    );
}

#[test]
fn pickle_string_claiming_4_gib() {
    convert_under_limit("torch/pickle-string-claims-4gib.bin", "pytorch_model.bin", None, "claims 4294967295 bytes");
}

#[test]
fn zip_bomb() {
    convert_under_limit("torch/zip-bomb.bin", "pytorch_model.bin", None, "Compression method not supported");
}

#[test]
fn config_claiming_a_trillion_layers() {
    convert_under_limit("", "model.safetensors", Some("config/huge-layers.json"), "num_hidden_layers");
}
