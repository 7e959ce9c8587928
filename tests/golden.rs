//! The shipped fixtures and goldens load and agree with each other (shapes, ids, counts).

use std::collections::BTreeSet;

use crate::common::{fixture_features, golden, golden_fixtures};
use qaforge_verify::{GoldenFeatures, GoldenLogits};

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Question ids of a SQuAD file, in file order.
fn question_ids(squad: &serde_json::Value) -> Vec<String> {
    squad["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["paragraphs"].as_array().unwrap().iter())
        .flat_map(|p| p["qas"].as_array().unwrap().iter())
        .map(|q| q["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn features_agree_with_the_evaluation_slice() {
    let squad = golden().join("squad");
    let features = GoldenFeatures::load(&squad).unwrap();
    let ids = question_ids(&json(&squad.join("eval.json")));
    assert!(ids.len() >= 200, "evaluation slice has {} questions", ids.len());
    // Every question has at least one feature, features come in question order, and some
    // questions overflow into several features (doc stride is exercised).
    let mut seen = Vec::new();
    for (i, &e) in features.example_index.iter().enumerate() {
        assert_eq!(features.example_ids[i], ids[e]);
        if seen.last() != Some(&e) {
            seen.push(e);
        }
    }
    assert_eq!(seen, (0..ids.len()).collect::<Vec<_>>());
    assert!(features.count > ids.len(), "no question overflows into a second feature");
    let m = features.max_length;
    for i in 0..features.count {
        let row = |v: &[i64]| v[i * m..(i + 1) * m].to_vec();
        let (tokens, mask, types) =
            (row(&features.input_ids), row(&features.attention_mask), row(&features.token_type_ids));
        let len = features.length(i);
        assert_eq!(tokens[0], 101, "feature {i} does not start with [CLS]");
        assert_eq!(tokens[len - 1], 102, "feature {i} does not end with [SEP]");
        assert!(mask[..len].iter().all(|&v| v == 1) && mask[len..].iter().all(|&v| v == 0));
        assert!(tokens[len..].iter().all(|&t| t == 0), "padding is not [PAD]");
        assert!(tokens.iter().all(|&t| (0..30522).contains(&t)));
        // Offsets exist exactly on context tokens (token type 1, before the final [SEP]).
        for (t, &token_type) in types.iter().enumerate().take(m) {
            let has_offset = features.offsets[(i * m + t) * 2] >= 0;
            assert_eq!(has_offset, token_type == 1 && t < len - 1, "feature {i} token {t}");
        }
    }
}

#[test]
fn every_fixture_has_consistent_goldens() {
    let squad = golden().join("squad");
    let ids: BTreeSet<String> = question_ids(&json(&squad.join("eval.json"))).into_iter().collect();
    for fixture in golden_fixtures() {
        let dir = golden().join(fixture);
        let features = fixture_features(fixture);
        let checkpoint = qaforge_checkpoint::Checkpoint::open(&dir).unwrap();
        assert!(checkpoint.unknown_config_keys.is_empty(), "{fixture}: {:?}", checkpoint.unknown_config_keys);
        let logits = GoldenLogits::load(&dir, &features).unwrap();
        assert!(logits.start.iter().chain(&logits.end).all(|v| v.is_finite()), "{fixture}: non-finite golden logits");
        let spread = |v: &[f32]| v.iter().fold(f32::MIN, |a, &b| a.max(b)) - v.iter().fold(f32::MAX, |a, &b| a.min(b));
        assert!(spread(&logits.start) > 1.0, "{fixture}: near-constant logits test nothing");
        let predictions = json(&dir.join("golden/predictions.json"));
        let keys: BTreeSet<String> = predictions["predictions"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ids, "{fixture}: predictions do not cover the evaluation slice");
        assert_eq!(predictions["null_odds"].as_object().unwrap().len(), ids.len());
        let metrics = json(&dir.join("golden/metrics.json"));
        assert_eq!(metrics["total"].as_u64(), Some(ids.len() as u64));
        assert_eq!(
            metrics["HasAns_total"].as_u64().unwrap() + metrics["NoAns_total"].as_u64().unwrap(),
            ids.len() as u64
        );
        assert!(dir.join("vocab.txt").exists() || dir.join("tokenizer.json").exists(), "{fixture}: no tokenizer");
        // Every feature of the fixture's own features belongs to a question of the slice.
        assert!(features.example_ids.iter().all(|id| ids.contains(id)), "{fixture}: features of unknown questions");
    }
}

#[test]
fn prediction_slices_cover_the_evaluation_slice() {
    let squad = golden().join("squad");
    let ids: BTreeSet<String> = question_ids(&json(&squad.join("eval.json"))).into_iter().collect();
    let metrics = json(&squad.join("predictions/metrics.json"));
    for system in ["bert-large-single", "nlnet-single", "bidaf-sa-elmo"] {
        let predictions = json(&squad.join(format!("predictions/{system}.json")));
        let keys: BTreeSet<String> = predictions.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ids, "{system}");
        assert_eq!(metrics[system]["total"].as_u64(), Some(ids.len() as u64));
    }
    // Calibration and evaluation slices are disjoint.
    let calibration: BTreeSet<String> = question_ids(&json(&squad.join("calibration.json"))).into_iter().collect();
    assert!(calibration.len() >= 128);
    assert!(calibration.is_disjoint(&ids));
}
