//! Records the tract-onnx version this build resolved (from the workspace's Cargo.lock), so that
//! reports name the engine that produced their figures without a version typed into the code.

fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = text
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"tract-onnx\""))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"').map(String::from)))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=QAFORGE_TRACT_VERSION={version}");
}
