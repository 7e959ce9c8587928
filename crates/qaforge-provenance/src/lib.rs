//! What a qaforge artifact records about itself in its ONNX `metadata_props`: the owner of
//! every metadata key and of the [`Precision`] type, so that the crates writing provenance
//! (convert, quantize, the ONNX Runtime flavour, package) and the one reading it (verify) share
//! one spelling of each key and one list of precisions.
//!
//! This crate depends on nothing of qaforge's: every stage, the runtime included, can use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every metadata key qaforge writes, by the stage that writes it.
pub mod keys {
    /// The stage that wrote the artifact last: `convert` or `quantize`.
    pub const STAGE: &str = "qaforge.stage";
    /// The artifact's [`Precision`](crate::Precision), as [`Precision::as_str`](crate::Precision::as_str) spells it.
    pub const PRECISION: &str = "qaforge.precision";
    /// sha256 of the checkpoint the artifact was converted from (verify compares it with a bundle's).
    pub const SOURCE_SHA256: &str = "qaforge.source_sha256";
    /// The checkpoint's weight format (safetensors, PyTorch zip...).
    pub const SOURCE_FORMAT: &str = "qaforge.source_format";
    /// sha256 of the tokenizer files beside the checkpoint (verify compares it with a bundle's).
    pub const TOKENIZER_SHA256: &str = "qaforge.tokenizer_sha256";

    /// The qaforge version that quantized the artifact.
    pub const QUANTIZE_TOOL: &str = "qaforge.quantize.tool";
    /// sha256 of the float artifact that was quantized.
    pub const QUANTIZE_INPUT_SHA256: &str = "qaforge.quantize.input_sha256";
    /// The `--exclude` patterns, comma-separated.
    pub const QUANTIZE_EXCLUDE: &str = "qaforge.quantize.exclude";
    /// `int8` when the QA head was quantized too (absent: it stayed float).
    pub const QUANTIZE_QA_HEAD: &str = "qaforge.quantize.qa_head";
    /// The CPUs an int8 artifact is for (`arm64`, `x86-vnni`, `x86-avx2`).
    pub const QUANTIZE_TARGET: &str = "qaforge.quantize.target";
    /// How int8 weights are quantized and stored, in words.
    pub const QUANTIZE_WEIGHTS: &str = "qaforge.quantize.weights";
    /// int4: weights per block and how embedding tables are stored.
    pub const QUANTIZE_INT4: &str = "qaforge.quantize.int4";
    /// The calibration method of int8-static.
    pub const QUANTIZE_METHOD: &str = "qaforge.quantize.method";
    /// Calibration features of int8-static, or those int4's input statistics (GPTQ, size budget)
    /// were collected on.
    pub const QUANTIZE_SAMPLES: &str = "qaforge.quantize.samples";
    /// The engine that ran the float graph for int8-static calibration or int4's input statistics
    /// (`tract` or `onnxruntime`).
    pub const QUANTIZE_CALIBRATION_ENGINE: &str = "qaforge.quantize.calibration_engine";
    /// Which kernels calibration computed with, i.e. whether another CPU reproduces its ranges.
    pub const QUANTIZE_CALIBRATION_KERNELS: &str = "qaforge.quantize.calibration_kernels";
    /// Why calibration (or int4's input statistics) ran in ONNX Runtime although tract was asked for: tract could
    /// not run the float graph (absent when calibration ran where it was asked to).
    pub const QUANTIZE_CALIBRATION_FALLBACK: &str = "qaforge.quantize.calibration_fallback";

    /// The engine an artifact is for: `onnxruntime` (absent: portable ONNX).
    pub const FLAVOUR: &str = "qaforge.flavour";
    /// What each ONNX Runtime pass rewrote.
    pub const ONNXRUNTIME_PASSES: &str = "qaforge.onnxruntime.passes";

    /// The package format (`ort`) of a packaged artifact.
    pub const PACKAGE_FORMAT: &str = "qaforge.package.format";
    /// sha256 of the ONNX artifact a package was made from.
    pub const PACKAGE_SOURCE_SHA256: &str = "qaforge.package.source_sha256";

    /// How the artifact's integer products are stored (read by the runtime's exactness check).
    pub const INTEGER_PRODUCTS: &str = "qaforge.integer_products";

    /// In a logits file computed on a device (`verify --logits`): sha256 of the bundle's
    /// features.safetensors the logits were computed from.
    pub const LOGITS_FEATURES_SHA256: &str = "qaforge.logits.features_sha256";
    /// In a logits file: sha256 of the artifact file that computed them.
    pub const LOGITS_ARTIFACT_SHA256: &str = "qaforge.logits.artifact_sha256";
    /// In a logits file: the runtime that computed them (name, version, execution provider).
    pub const LOGITS_RUNTIME: &str = "qaforge.logits.runtime";
    /// In a logits file: the device (machine, CPU model and features) they were computed on.
    pub const LOGITS_DEVICE: &str = "qaforge.logits.device";
    /// In a logits file: features per run of the artifact (batch composition changes int8-dynamic logits).
    pub const LOGITS_BATCH_SIZE: &str = "qaforge.logits.batch_size";

    /// Every key above, for tests and tools that list an artifact's provenance.
    pub const ALL: &[&str] = &[
        STAGE,
        PRECISION,
        SOURCE_SHA256,
        SOURCE_FORMAT,
        TOKENIZER_SHA256,
        QUANTIZE_TOOL,
        QUANTIZE_INPUT_SHA256,
        QUANTIZE_EXCLUDE,
        QUANTIZE_QA_HEAD,
        QUANTIZE_TARGET,
        QUANTIZE_WEIGHTS,
        QUANTIZE_INT4,
        QUANTIZE_METHOD,
        QUANTIZE_SAMPLES,
        QUANTIZE_CALIBRATION_ENGINE,
        QUANTIZE_CALIBRATION_KERNELS,
        QUANTIZE_CALIBRATION_FALLBACK,
        FLAVOUR,
        ONNXRUNTIME_PASSES,
        PACKAGE_FORMAT,
        PACKAGE_SOURCE_SHA256,
        INTEGER_PRODUCTS,
        LOGITS_FEATURES_SHA256,
        LOGITS_ARTIFACT_SHA256,
        LOGITS_RUNTIME,
        LOGITS_DEVICE,
        LOGITS_BATCH_SIZE,
    ];
}

/// The numeric precision of an artifact: what `qaforge convert` writes (fp32) and what
/// `qaforge quantize` makes of it. Verify's tolerances are a table keyed by this type (an
/// exhaustive match), so a new precision does not compile until it has tolerances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Precision {
    /// float32 weights and compute (the converted model).
    Fp32,
    /// float16 weights and compute, float32 at the boundary.
    Fp16,
    /// int8 weights, activations quantized at run time.
    Int8Dynamic,
    /// int8 weights and calibrated int8 activations (QDQ).
    Int8Static,
    /// 4-bit block-wise weights (MatMulNBits, GatherBlockQuantized), float activations.
    Int4,
}

impl Precision {
    /// Every precision, in the order of the documentation.
    pub const ALL: [Precision; 5] = [Precision::Fp32, Precision::Fp16, Precision::Int8Dynamic, Precision::Int8Static, Precision::Int4];

    /// The name used on the command line, in metadata and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8Dynamic => "int8-dynamic",
            Precision::Int8Static => "int8-static",
            Precision::Int4 => "int4",
        }
    }

    /// Whether weights are stored as 8-bit integers.
    pub fn is_int8(self) -> bool {
        matches!(self, Precision::Int8Dynamic | Precision::Int8Static)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision name qaforge does not know (an artifact from a newer qaforge, or edited metadata).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (known: fp32, fp16, int8-dynamic, int8-static, int4)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Precision::ALL.into_iter().find(|p| p.as_str() == text).ok_or_else(|| UnknownPrecision(text.to_string()))
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.as_str().to_string()
    }
}

impl TryFrom<String> for Precision {
    type Error = UnknownPrecision;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_round_trips_through_its_name() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Precision>(&format!("\"{p}\"")).unwrap(), p);
        }
        assert_eq!("int2".parse::<Precision>(), Err(UnknownPrecision("int2".into())));
    }

    #[test]
    fn all_lists_every_precision_once() {
        // A precision added to the enum but not to ALL would escape the tolerance table's test:
        // this match has no wildcard, so a new variant stops it compiling until it is counted.
        let index = |p: Precision| match p {
            Precision::Fp32 => 0,
            Precision::Fp16 => 1,
            Precision::Int8Dynamic => 2,
            Precision::Int8Static => 3,
            Precision::Int4 => 4,
        };
        let mut seen = [false; Precision::ALL.len()];
        for p in Precision::ALL {
            assert!(!std::mem::replace(&mut seen[index(p)], true), "{p} listed twice");
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn keys_are_distinct_and_namespaced() {
        let mut sorted = keys::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys::ALL.len());
        assert!(keys::ALL.iter().all(|k| k.starts_with("qaforge.")));
    }
}
