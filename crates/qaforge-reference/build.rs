//! Records the candle-core version this build resolved (from the workspace's Cargo.lock).

#[path = "../../build-support/lock_version.rs"]
mod lock_version;

fn main() {
    println!(
        "cargo:rustc-env=QAFORGE_CANDLE_VERSION={}",
        lock_version::lock_version(env!("CARGO_MANIFEST_DIR"), "candle-core")
    );
}
