//! The candle reference (qaforge-reference) against PyTorch: on every shipped fixture its logits
//! equal golden/<fixture>/golden/logits.safetensors, which transformers computed.

use crate::common::{fixture_features, golden, golden_fixtures, TRAINED_FIXTURE};
use qaforge_checkpoint::Checkpoint;
use qaforge_reference::ReferenceModel;
use qaforge_runtime::Engine;
use qaforge_verify::{BundleOptions, GoldenLogits};

/// Every fixture at `qaforge golden`'s default batch size (each feature at its own length), and
/// the random ones also in padded batches of 8, where the attention mask must cancel the padding
/// (the trained fixture's 289 features are not run twice: its time is the test's).
#[test]
fn reference_logits_equal_pytorchs_on_every_fixture() {
    let default_batch = BundleOptions::default().batch_size;
    for fixture in golden_fixtures() {
        let dir = golden().join(fixture);
        let checkpoint = Checkpoint::open(&dir).unwrap();
        let model = ReferenceModel::load(&checkpoint).unwrap();
        let features = fixture_features(fixture);
        let reference = GoldenLogits::load(&dir, &features).unwrap();
        let batches: &[usize] = if fixture == TRAINED_FIXTURE { &[default_batch] } else { &[default_batch, 8] };
        for &batch in batches {
            let logits = model.run_features(&features, batch, model.preferred_threads(2), &|_| {}).unwrap();
            let m = features.max_length;
            let mut worst = 0f32;
            for i in 0..features.count {
                for t in 0..features.length(i) {
                    let k = i * m + t;
                    worst = worst
                        .max((logits.start[k] - reference.start[k]).abs())
                        .max((logits.end[k] - reference.end[k]).abs());
                }
            }
            eprintln!("{fixture}, batches of {batch}: max |Δ| {worst:.2e} over {} features", features.count);
            assert!(worst <= 1e-4, "{fixture}, batches of {batch}: max |Δ| {worst} against PyTorch");
        }
    }
}

/// On a full-size MobileBERT (google/mobilebert-uncased's topology: 24 layers, bottlenecks, shared
/// key/query, 4 FFNs, trigram input; random weights) the reference agrees with the fp32 ONNX
/// artifact run by tract. With NoNorm, random weights shrink the 24 layers' activations until the
/// logits vary by less than float32's resolution (spread 6.7e-7, measured), which no comparison can
/// judge; LayerNorm keeps them alive, so this checkpoint uses it (NoNorm is checked against PyTorch
/// on the fixtures above).
#[test]
fn reference_logits_equal_the_fp32_artifacts_on_a_full_size_mobilebert() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("mobilebert-uncased-layer-norm");
    std::fs::create_dir(&model_dir).unwrap();
    let config =
        qaforge_checkpoint::synthetic::GOOGLE_MOBILEBERT_UNCASED_CONFIG.replace("\"no_norm\"", "\"layer_norm\"");
    qaforge_checkpoint::synthetic::write_random_checkpoint(&model_dir, &config, 3).unwrap();
    let artifact = crate::common::convert_dir(&model_dir, dir.path());
    let features = fixture_features("mobilebert-tiny").truncated(6);
    let reference = ReferenceModel::load(&Checkpoint::open(&model_dir).unwrap())
        .unwrap()
        .run_features(&features, 3, 1, &|_| {})
        .unwrap();
    let tract = qaforge_runtime::TractSession::load(&artifact).unwrap().run_features(&features, 3, 1, &|_| {}).unwrap();
    let m = features.max_length;
    let (mut worst, mut spread) = (0f32, 0f32);
    for i in 0..features.count {
        for k in i * m..i * m + features.length(i) {
            worst = worst.max((reference.start[k] - tract.start[k]).abs()).max((reference.end[k] - tract.end[k]).abs());
            spread = spread.max((reference.start[k] - reference.start[i * m]).abs());
        }
    }
    eprintln!(
        "full-size MobileBERT: max |Δ| {worst:.2e} between the reference and tract; start logits spread {spread:.2e}"
    );
    assert!(worst <= 1e-4, "max |Δ| {worst}");
    // The agreement must be far finer than what the logits vary by, or it says nothing.
    assert!(spread > 1e3 * worst.max(1e-7), "logits spread {spread} against max |Δ| {worst}");
}
