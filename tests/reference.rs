//! The candle reference (qaforge-reference) against PyTorch: on every shipped fixture its logits
//! equal golden/<fixture>/golden/logits.safetensors, which transformers computed.

mod common;

use common::{fixture_features, golden, GOLDEN_FIXTURES};
use qaforge_checkpoint::Checkpoint;
use qaforge_reference::ReferenceModel;
use qaforge_verify::{Engine, GoldenLogits};

#[test]
fn reference_logits_equal_pytorchs_on_every_fixture() {
    for fixture in GOLDEN_FIXTURES {
        let dir = golden().join(fixture);
        let checkpoint = Checkpoint::open(&dir).unwrap();
        let model = ReferenceModel::load(&checkpoint).unwrap();
        let features = fixture_features(fixture);
        let logits = model.run_features(&features, 8, 1, &|_| {}).unwrap();
        let reference = GoldenLogits::load(&dir, &features).unwrap();
        let m = features.max_length;
        let mut worst = 0f32;
        for i in 0..features.count {
            for t in 0..features.length(i) {
                let k = i * m + t;
                worst = worst.max((logits.start[k] - reference.start[k]).abs()).max((logits.end[k] - reference.end[k]).abs());
            }
        }
        eprintln!("{fixture}: max |Δ| {worst:.2e} over {} features", features.count);
        assert!(worst <= 1e-4, "{fixture}: max |Δ| {worst} against PyTorch");
    }
}
