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
fn one_tokenizer_asked_for_many_window_settings_cuts_each_as_a_fresh_one() {
    // QaTokenizer keeps the tokenizers it set up for the last few settings (a server's requests
    // choose max_seq_len and doc_stride): more settings than it keeps, each asked for twice in
    // turn, must each cut its windows as a tokenizer that never saw another setting.
    let squad = SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    let dir = golden().join("mobilebert-tiny");
    let shared = QaTokenizer::from_model_dir(&dir).unwrap();
    let settings = [(384, 128), (64, 16), (128, 32), (96, 48), (256, 64), (64, 32)];
    for round in 0..2 {
        for &(max_length, doc_stride) in &settings {
            let options = FeatureOptions { max_length, doc_stride, lstrip_question: true };
            let got = shared.features(&squad.examples[..4], &options).unwrap();
            let want = QaTokenizer::from_model_dir(&dir).unwrap().features(&squad.examples[..4], &options).unwrap();
            assert_eq!(got, want, "round {round}: max_length {max_length}, doc_stride {doc_stride}");
            assert_eq!(got.input_ids.len(), got.count * max_length);
        }
    }
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
