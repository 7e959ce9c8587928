//! Tokenizer files: the first byte picks the layout (tokenizer.json, or vocab.txt with a
//! tokenizer_config.json), the rest is the file; a valid tokenizer then builds features for a
//! fixed question.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use qaforge_squad::{Example, FeatureOptions, QaTokenizer};

fuzz_target!(|data: &[u8]| {
    let Some((&layout, file)) = data.split_first() else { return };
    let dir = common::scratch_dir().join("tokenizer");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tokenizer directory");
    if layout % 2 == 0 {
        std::fs::write(dir.join("tokenizer.json"), file).expect("write");
    } else {
        std::fs::write(dir.join("vocab.txt"), file).expect("write");
        std::fs::write(dir.join("tokenizer_config.json"), br#"{"do_lower_case": true}"#).expect("write");
    }
    if let Ok(tokenizer) = QaTokenizer::from_model_dir(&dir) {
        let example = Example {
            id: "q".into(),
            title: String::new(),
            question: "Which river flows through the city?".into(),
            context: "The Seine flows through Paris, the capital of France.".into(),
            answers: vec![],
        };
        let options = FeatureOptions { max_length: 32, doc_stride: 8, ..FeatureOptions::default() };
        let _ = tokenizer.features(std::slice::from_ref(&example), &options);
    }
});
