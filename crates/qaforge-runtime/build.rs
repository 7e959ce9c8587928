//! Records the tract-onnx version this build resolved (from the workspace's Cargo.lock).

#[path = "../../build-support/lock_version.rs"]
mod lock_version;

fn main() {
    println!(
        "cargo:rustc-env=QAFORGE_TRACT_VERSION={}",
        lock_version::lock_version(env!("CARGO_MANIFEST_DIR"), "tract-onnx")
    );
}
