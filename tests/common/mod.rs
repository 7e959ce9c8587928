//! Helpers shared by the end-to-end tests of the qaforge binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The random-weight fixtures of golden/, as golden/fixtures.txt lists them (the one list the
/// Makefile and golden/generate.py read too): the real MobileBERT architecture at small sizes
/// (three sets of config switches), then one of each BERT-family architecture `convert` takes.
pub fn fixtures() -> Vec<&'static str> {
    include_str!("../../golden/fixtures.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The trained fixture: MiniLM-L6 fine-tuned on SQuAD v2, in MobileBERT's format (its
/// quantization bounds run in tests/trained_fixture.sh).
pub const TRAINED_FIXTURE: &str = "minilm-l6-squad2";

/// Every fixture with goldens: the random ones and the trained one.
pub fn golden_fixtures() -> Vec<&'static str> {
    let mut all = fixtures();
    all.push(TRAINED_FIXTURE);
    all
}

/// The golden features of `fixture`: its own (a tokenizer of its own, as RoBERTa's byte-level
/// BPE) or the shared ones of golden/squad.
pub fn fixture_features(fixture: &str) -> qaforge_squad::Features {
    qaforge_verify::Bundle::open(&golden().join(fixture)).unwrap().features
}

/// The project's golden/ directory.
pub fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Runs the qaforge binary with `args`. Without $ORT_DYLIB_PATH: `--engine auto` (verify's and
/// answer's default) would otherwise run ONNX Runtime on a developer's machine that sets it and
/// tract in CI; the ONNX Runtime runs are make test-onnx's, with the library named.
pub fn qaforge(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qaforge"))
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("qaforge runs")
}

/// stdout + stderr as text, for assertion messages.
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Converts a fixture into `dir/<fixture>.onnx` and returns the path; panics with the CLI output on failure.
pub fn convert(fixture: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{fixture}.onnx"));
    let output = qaforge(&["convert", golden().join(fixture).to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(output.status.success(), "convert {fixture} failed:\n{}", text(&output));
    out
}

/// Converts the model directory `model_dir` into `dir/<its name>.onnx`.
pub fn convert_dir(model_dir: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}.onnx", model_dir.file_name().unwrap().to_string_lossy()));
    let output = qaforge(&["convert", model_dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(output.status.success(), "convert {} failed:\n{}", model_dir.display(), text(&output));
    out
}

/// Writes a full-size MobileBERT checkpoint (google/mobilebert-uncased topology, 24,582,914
/// random parameters from `seed`) into `root/mobilebert-uncased` and returns that directory.
pub fn full_size_checkpoint(root: &Path, seed: u64) -> PathBuf {
    let dir = root.join("mobilebert-uncased");
    std::fs::create_dir(&dir).unwrap();
    qaforge_checkpoint::synthetic::write_random_checkpoint(
        &dir,
        qaforge_checkpoint::synthetic::GOOGLE_MOBILEBERT_UNCASED_CONFIG,
        seed,
    )
    .unwrap();
    dir
}
