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
