//! Prediction and no-answer probability JSON, scored against a fixed SQuAD file.
#![no_main]
#[path = "common.rs"]
mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qaforge_squad::{evaluate_with_thresholds, load_predictions, NoAnswerProbabilities, SquadFile};

const SQUAD: &[u8] = br#"{"data": [{"title": "t", "paragraphs": [{"context": "red fox", "qas": [
    {"id": "q1", "question": "?", "answers": [{"text": "red", "answer_start": 0}], "is_impossible": false},
    {"id": "q2", "question": "?", "answers": [], "is_impossible": true}]}]}]}"#;

fuzz_target!(|data: &[u8]| {
    let squad = SquadFile::parse(SQUAD, Path::new("dev.json")).expect("fixed SQuAD file");
    let path = common::scratch_file("predictions.json", data);
    let predictions = load_predictions(&path);
    let na_probs = NoAnswerProbabilities::parse(data, Path::new("na_prob.json"));
    if let Ok(predictions) = predictions {
        let _ = evaluate_with_thresholds(&squad, &predictions, None, 1.0);
        let uniform = NoAnswerProbabilities::parse(br#"{"q1": 0.5, "q2": 0.5}"#, Path::new("na.json")).expect("fixed");
        let _ = evaluate_with_thresholds(&squad, &predictions, Some(&uniform), 0.0);
    }
    if let Ok(na_probs) = na_probs {
        let predictions = [("q1".to_string(), "red".to_string()), ("q2".to_string(), String::new())].into_iter().collect();
        let _ = evaluate_with_thresholds(&squad, &predictions, Some(&na_probs), 0.5);
    }
});
