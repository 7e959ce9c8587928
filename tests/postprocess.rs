//! Post-processing the golden PyTorch logits reproduces the golden reference predictions of
//! run_qa.py exactly, for every fixture.

use crate::common::{fixture_features, fixtures, golden};
use qaforge_squad::{predict, FeatureLogits, PostprocessOptions, SquadFile};
use qaforge_verify::{GoldenFeatures, GoldenLogits};

#[test]
fn golden_logits_give_the_golden_predictions() {
    let squad = SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    for fixture in fixtures() {
        let features: GoldenFeatures = fixture_features(fixture);
        let m = features.max_length;
        let offsets: Vec<Option<(usize, usize)>> =
            features.offsets.chunks_exact(2).map(|o| (o[0] >= 0).then(|| (o[0] as usize, o[1] as usize))).collect();
        let logits = GoldenLogits::load(&golden().join(fixture), &features).unwrap();
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden().join(fixture).join("golden/predictions.json")).unwrap())
                .unwrap();
        let mut answered = 0;
        for (e, example) in squad.examples.iter().enumerate() {
            let views: Vec<FeatureLogits> = (0..features.count)
                .filter(|&i| features.example_index[i] == e)
                .map(|i| FeatureLogits {
                    start: &logits.start[i * m..(i + 1) * m],
                    end: &logits.end[i * m..(i + 1) * m],
                    offsets: &offsets[i * m..(i + 1) * m],
                })
                .collect();
            let prediction = predict(&example.context, &views, &PostprocessOptions::default());
            assert_eq!(prediction.text, want["predictions"][&example.id].as_str().unwrap(), "{fixture} {}", example.id);
            let odds = want["null_odds"][&example.id].as_f64().unwrap();
            // The texts must be identical; the odds are float32 values printed by Python and
            // re-read by serde_json, whose default parser may be one f64 ulp off.
            assert!(
                (prediction.null_odds as f64 - odds).abs() <= 1e-6,
                "{fixture} {}: null odds {} vs {odds}",
                example.id,
                prediction.null_odds
            );
            answered += usize::from(!prediction.text.is_empty());
        }
        assert!(answered > 0);
    }
}
