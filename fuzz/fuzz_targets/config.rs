//! config.json: parsing and range checks, then the parameter list the config implies.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qaforge_checkpoint::MobileBertConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = MobileBertConfig::from_json_bytes(data, Path::new("config.json")) {
        let _ = qaforge_checkpoint::parameter_count(&loaded.config);
    }
});
