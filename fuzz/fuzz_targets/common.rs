//! Shared by the fuzz targets: the loaders read files (memory maps, directories of tokenizer
//! files), so each input is written to a scratch directory of this process first.

use std::path::PathBuf;

/// This process's scratch directory (created once).
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qaforge-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `data` to `name` in the scratch directory and returns its path.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// Reads `data` as a weights file of `format` and, when it loads, decodes every tensor it
/// declares as f32 (the path convert takes).
pub fn read_every_tensor(name: &str, data: &[u8], format: qaforge_checkpoint::WeightsFormat) {
    let path = scratch_file(name, data);
    if let Ok(weights) = qaforge_checkpoint::Checkpoint::read_weights(&path, format) {
        let entries: Vec<(String, Vec<usize>)> =
            weights.names().map(|n| (n.to_string(), weights.entry(n).map(|e| e.shape.clone()).unwrap_or_default())).collect();
        for (name, shape) in entries {
            let _ = weights.f32(&name, &shape);
        }
    }
}
