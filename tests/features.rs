//! Tokenization and features built in Rust equal run_qa.py's with BertTokenizerFast (the golden
//! features), for each way a model directory ships its tokenizer.

use crate::common::{fixture_features, golden, golden_fixtures};
use qaforge_squad::{FeatureOptions, QaTokenizer, SquadFile};

#[test]
fn features_equal_the_golden_features_for_every_fixture_tokenizer() {
    let squad = SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    // tiny: tokenizer.json + vocab.txt; flipped: vocab.txt + tokenizer_config.json only;
    // nobottleneck: tokenizer.json only; minilm-l6-squad2: tokenizer.json + vocab.txt;
    // roberta-tiny: byte-level BPE tokenizer.json (+ vocab.json, merges.txt), features of its own.
    for fixture in golden_fixtures() {
        let want = fixture_features(fixture);
        let tokenizer = QaTokenizer::from_model_dir(&golden().join(fixture)).unwrap();
        let got = tokenizer.features(&squad.examples, &FeatureOptions::default()).unwrap();
        assert_eq!(got.count, want.count, "{fixture}");
        let m = want.max_length;
        for i in 0..want.count {
            let row = |v: &[i64]| v[i * m..(i + 1) * m].to_vec();
            assert_eq!(row(&got.input_ids), row(&want.input_ids), "{fixture}: input ids of feature {i}");
            assert_eq!(row(&got.token_type_ids), row(&want.token_type_ids), "{fixture}: token types of feature {i}");
            assert_eq!(got.context_offsets(i), want.context_offsets(i), "{fixture}: offsets of feature {i}");
        }
        assert_eq!(got, want, "{fixture}");
    }
}

#[test]
fn a_short_window_still_overflows_with_the_stride() {
    let squad = SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    let tokenizer = QaTokenizer::from_model_dir(&golden().join("mobilebert-tiny")).unwrap();
    let options = FeatureOptions { max_length: 64, doc_stride: 16, lstrip_question: true };
    let f = tokenizer.features(&squad.examples[..3], &options).unwrap();
    assert!(f.count > 3 && f.input_ids.len() == f.count * 64);
    // Consecutive windows of one example overlap by exactly the stride.
    let first = f.context_offsets(0).into_iter().flatten().collect::<Vec<_>>();
    let second = f.context_offsets(1).into_iter().flatten().collect::<Vec<_>>();
    assert_eq!(f.example_index[..2], [0, 0]);
    assert_eq!(first[first.len() - 16..], second[..16]);
    let bad = FeatureOptions { max_length: 64, doc_stride: 64, lstrip_question: true };
    assert!(tokenizer.features(&squad.examples[..1], &bad).unwrap_err().to_string().contains("doc stride 64"));
}

#[test]
fn a_model_dir_without_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = QaTokenizer::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no tokenizer.json or vocab.txt"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"version\": 3").unwrap();
    let err = QaTokenizer::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json: not a usable tokenizer"), "{err}");
}
