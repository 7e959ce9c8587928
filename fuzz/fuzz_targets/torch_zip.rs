//! torch zip archives: the zip reader, the pickle (candle's VM behind qaforge's allow-list) and
//! the storages, then every tensor as f32.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use qaforge_checkpoint::{Checkpoint, WeightsFormat};

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("pytorch_model.bin", data);
    if let Ok(weights) = Checkpoint::read_weights(&path, WeightsFormat::TorchZip) {
        let entries: Vec<(String, Vec<usize>)> = weights.names().map(|n| (n.to_string(), weights.entry(n).map(|e| e.shape.clone()).unwrap_or_default())).collect();
        for (name, shape) in entries {
            let _ = weights.f32(&name, &shape);
        }
    }
});
