//! config.json of every architecture: parsing and range checks, then the parameter list the config implies.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qaforge_checkpoint::ModelConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = ModelConfig::from_json_bytes(data, Path::new("config.json")) {
        let _ = qaforge_checkpoint::parameter_count(&loaded.config);
    }
});
