//! End-to-end: `qaforge answer` gives, for golden questions, the answer that PyTorch's logits give.

use crate::common::{convert, fixture_features, golden, qaforge, text};
use qaforge_squad::{predict_all, PostprocessOptions, SquadFile};
use qaforge_verify::GoldenLogits;

/// MobileBERT; RoBERTa (byte-level BPE, no token types); DistilBERT (WordPiece, no token types).
#[test]
fn answers_match_the_pytorch_reference() {
    let dir = tempfile::tempdir().unwrap();
    let squad = SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    for fixture in ["mobilebert-tiny", "roberta-tiny", "distilbert-tiny"] {
        let artifact = convert(fixture, dir.path());
        let features = fixture_features(fixture);
        let logits = GoldenLogits::load(&golden().join(fixture), &features).unwrap();
        let want = predict_all(&squad, &features, &logits.start, &logits.end, &PostprocessOptions::default(), true);
        let mut checked = (0, 0);
        for example in squad.examples.iter().step_by(25) {
            let output = qaforge(&[
                "answer",
                artifact.to_str().unwrap(),
                "--tokenizer",
                golden().join(fixture).to_str().unwrap(),
                "--question",
                &example.question,
                "--context",
                &example.context,
            ]);
            assert!(output.status.success(), "{fixture}: {}", text(&output));
            let first_line = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_string();
            let expected = &want[&example.id].text;
            if expected.is_empty() {
                assert!(first_line.starts_with("no answer"), "{fixture} {}: {first_line}", example.id);
                checked.1 += 1;
            } else {
                assert_eq!(&first_line, expected, "{fixture} {}", example.id);
                checked.0 += 1;
            }
        }
        assert!(checked.0 > 0, "{fixture}: no answered question was checked");
    }
}

#[test]
fn an_empty_context_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = convert("mobilebert-tiny", dir.path());
    let output = qaforge(&[
        "answer",
        artifact.to_str().unwrap(),
        "--tokenizer",
        golden().join("mobilebert-tiny").to_str().unwrap(),
        "--question",
        "Why?",
        "--context",
        " ",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("context is empty"), "{}", text(&output));
}

#[test]
fn json_output_carries_the_answer_and_its_margin() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = convert("mobilebert-tiny", dir.path());
    let tokenizer = golden().join("mobilebert-tiny");
    let args = |json: bool| {
        let mut args = vec![
            "answer",
            artifact.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--question",
            "Where did Bob go?",
            "--context",
            "Bob went home after the game.",
        ];
        if json {
            args.push("--json");
        }
        qaforge(&args)
    };
    let (plain, json) = (args(false), args(true));
    assert!(plain.status.success() && json.status.success(), "{}{}", text(&plain), text(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let first_line = String::from_utf8_lossy(&plain.stdout).lines().next().unwrap_or_default().to_string();
    let answer = value["text"].as_str().unwrap();
    if answer.is_empty() {
        assert!(first_line.starts_with("no answer"), "{first_line}");
    } else {
        assert_eq!(answer, first_line);
    }
    assert!(value["null_odds"].as_f64().unwrap().is_finite() && value["margin"].as_f64().unwrap() >= 0.0, "{value}");
    assert_eq!(value["windows"], 1);
}
