//! SQuAD v2 JSON: parsing and validation, then scoring an empty and a constant prediction set
//! with no-answer thresholds.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qaforge_squad::{evaluate_with_thresholds, SquadFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(squad) = SquadFile::parse(data, Path::new("dev.json")) {
        let _ = squad.summary();
        let predictions: BTreeMap<String, String> = squad.examples.iter().map(|e| (e.id.clone(), e.context.chars().take(5).collect())).collect();
        let _ = evaluate_with_thresholds(&squad, &predictions, None, 1.0);
    }
});
