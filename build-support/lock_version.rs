//! Shared by the crates' build scripts (included with `#[path]`): the version of a dependency as
//! the workspace's Cargo.lock resolved it, so that reports name the engines that produced their
//! figures without a version typed into the code.

/// The version Cargo.lock (two folders above the crate's manifest) pins for package `name`, or
/// "unknown"; asks cargo to rerun the build script when the lock file changes.
pub fn lock_version(manifest_dir: &str, name: &str) -> String {
    let lock = std::path::Path::new(manifest_dir).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let wanted = format!("name = \"{name}\"");
    text.split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == wanted))
        .and_then(|p| {
            p.lines().find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"').map(String::from))
        })
        .unwrap_or_else(|| "unknown".into())
}
