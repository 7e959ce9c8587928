//! End-to-end: `qaforge answer` gives, for golden questions, the answer that PyTorch's logits give.

mod common;

use common::{convert, fixture_features, golden, qaforge, text};
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
                "answer", artifact.to_str().unwrap(), "--tokenizer", golden().join(fixture).to_str().unwrap(),
                "--question", &example.question, "--context", &example.context,
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
    let output = qaforge(&["answer", artifact.to_str().unwrap(), "--tokenizer", golden().join("mobilebert-tiny").to_str().unwrap(), "--question", "Why?", "--context", " "]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("context is empty"), "{}", text(&output));
}
