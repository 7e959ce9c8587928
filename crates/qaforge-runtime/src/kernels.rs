//! Which of tract's kernels this process computes with.
//!
//! tract picks its matrix-product, activation and reduction kernels by what the CPU offers
//! (AVX-512, AVX2 + FMA, AVX, NEON dot product, …). Each rounds differently: fused multiply-add
//! against a multiply then an add, 16-lane against 8-lane partial sums. Logits move by an ulp or
//! so, which verify's tolerances absorb; but int8-static turns float activations into ranges, and
//! one ulp in a maximum changes a scale and so the artifact's bytes. The same command then wrote
//! three different files on AVX-512, AVX2 and SSE4 machines.
//!
//! [`use_portable_kernels`] makes tract use its generic kernels only: plain Rust that sums in one
//! fixed order and never contracts a multiply and an add (Rust fuses them only where asked with
//! `mul_add`, which IEEE 754 defines exactly, so a hardware FMA and a software one agree). tract's
//! own exp, ln, erf, tanh and softmax are among them; it calls the C library only for `Pow` with
//! an exponent other than 2 or 0.5 (qaforge's graphs have none: tract matches gelu_new's cube into
//! its GELU first). The same binary therefore computes the same bits on every x86-64 CPU, which
//! `tests/cross_cpu.sh` checks as AVX-512, Haswell (AVX2) and Nehalem (SSE4) under qemu. The edit
//! removes the architecture itself as well as its features, because tract's aarch64 baseline
//! kernels (NEON, with fused multiply-add) need no feature: without the architecture every kernel
//! registered for it is out, so an aarch64 build runs the same generic code (not tested here:
//! this workplace has no aarch64 Rust toolchain). They are slower than the CPU's own kernels; the
//! cost on the full-size model is measured in the README.
//!
//! The choice is process-wide: tract probes the CPU once, when a kernel is first chosen, and
//! keeps the answer. So it must be made before any tract model is optimised in this process;
//! [`use_portable_kernels`] checks that it took effect and says so when it is too late.

use std::path::PathBuf;

use tract_onnx::tract_core::tract_linalg::isa::{self, Isa};
use tract_onnx::tract_core::tract_linalg::knobs::TRACT_CPU_ISA;

use crate::RuntimeError;

/// tract's `TRACT_CPU_ISA` edit that removes every instruction-set feature of this architecture
/// (e.g. `-avx,-avx2,-fma,…` on x86-64) and then the architecture itself, leaving only the generic
/// kernels. Tokens of other architectures are left out: tract refuses them. The architecture comes
/// last because tract checks each feature token against the set's architecture.
fn without_every_feature() -> String {
    let arch = Isa::ALL.into_iter().find(|i| i.is_arch() && i.arch().is_native());
    Isa::ALL
        .into_iter()
        .filter(|i| !i.is_arch() && Some(Isa::of_arch(i.arch())) == arch)
        .chain(arch)
        .map(|i| format!("-{}", i.name()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The instruction sets tract's kernels use in this process, in tract's names (the architecture
/// first, then its features; empty when only the generic kernels are in use).
pub fn kernel_features() -> Vec<&'static str> {
    isa::native().iter().map(|i| i.name()).collect()
}

/// Makes tract use its generic kernels in this process, so that float results do not depend on
/// the CPU (see the module's documentation). Idempotent. Fails when tract has already chosen
/// this CPU's kernels (a model was optimised in this process before the call); nothing is changed
/// then, and the caller must not claim CPU-independent results.
pub fn use_portable_kernels() -> Result<(), RuntimeError> {
    TRACT_CPU_ISA.set(Some(without_every_feature()));
    let features = kernel_features();
    if features.is_empty() {
        return Ok(());
    }
    Err(RuntimeError {
        path: PathBuf::from("tract"),
        message: format!(
            "tract already chose this CPU's kernels ({}) before portable kernels were asked for; \
             CPU-independent calibration must run in a process that has not used tract before",
            features.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edit_names_only_this_architectures_features() {
        let edit = without_every_feature();
        #[cfg(target_arch = "x86_64")]
        {
            for token in ["-avx", "-avx2", "-fma", "-avx512f", "-avx512vnni"] {
                assert!(edit.split(',').any(|t| t == token), "{token} missing from {edit}");
            }
            assert!(!edit.contains("dotprod") && !edit.contains("sve2"), "{edit}");
            // The architecture goes last: tract checks each feature against the set's architecture.
            assert!(edit.ends_with(",-x86_64"), "{edit}");
        }
    }

    // This test binary optimises no tract model before this test, and the others in this crate
    // do not touch tract's kernels, so the choice is still open here.
    #[test]
    fn portable_kernels_take_effect_and_leave_no_feature() {
        use_portable_kernels().unwrap();
        assert!(kernel_features().is_empty());
        // Idempotent.
        use_portable_kernels().unwrap();
    }
}
