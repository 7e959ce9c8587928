//! torch zip archives: the zip reader, the pickle (scanned, then candle's VM behind qaforge's
//! allow-list) and the storages, then every tensor as f32.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::read_every_tensor("pytorch_model.bin", data, qaforge_checkpoint::WeightsFormat::TorchZip));
