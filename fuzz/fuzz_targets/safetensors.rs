//! safetensors header and data: reading the file and then every tensor it declares as f32.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::read_every_tensor("model.safetensors", data, qaforge_checkpoint::WeightsFormat::Safetensors));
