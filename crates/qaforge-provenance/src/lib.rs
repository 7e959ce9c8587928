//! What a qaforge artifact records about itself in its ONNX `metadata_props`: the owner of
//! every metadata key and of the [`Precision`] type, so that the crates writing provenance
//! (convert, quantize, the ONNX Runtime flavour, package) and the one reading it (verify) share
//! one spelling of each key and one list of precisions.
//!
//! It also owns the two things every stage shares about naming and identity: the [`Named`]
//! trait (the one spelling of each enum value on the command line, in metadata and in reports)
//! and [`sha256_hex`] (how every file's identity is written).
//!
//! This crate depends on nothing of qaforge's: every stage, the runtime included, can use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The lowercase hex sha256 of `bytes`: every artifact, checkpoint, bundle file and report
/// names files this way.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

/// A streaming sha256, finished as lowercase hex (for files hashed in pieces).
pub fn sha256_finish(hasher: Sha256) -> String {
    hex_digest(hasher.finalize().as_slice())
}

/// The streaming hasher [`sha256_finish`] finishes and its trait, re-exported so that callers
/// need no sha2 dependency of their own.
pub use sha2::{Digest, Sha256 as Sha256Hasher};

fn hex_digest(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(2 * digest.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An enum whose values have one name each, owned by the type that defines them: the command
/// line parses it (the binary derives its possible values from [`Named::ALL`]), metadata and
/// reports write it. `FromStr` implementations go through [`parse_named`].
pub trait Named: Copy + Sized + 'static {
    /// Every value, in the order help texts list them.
    const ALL: &'static [Self];
    /// The value's name.
    fn as_str(self) -> &'static str;
}

/// The value of `T` named `text`, or the list of names that would have been understood.
pub fn parse_named<T: Named>(text: &str, what: &str) -> Result<T, String> {
    T::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| {
        let known: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
        format!("unknown {what} `{text}` (known: {})", known.join(", "))
    })
}

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
    /// The `--float-activations` patterns (products with int8 weights and float activations),
    /// comma-separated (absent: none).
    pub const QUANTIZE_FLOAT_ACTIVATIONS: &str = "qaforge.quantize.float_activations";
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
    /// Scale migration ahead of int8 (`--smooth`): how many product groups took which strength.
    pub const QUANTIZE_SMOOTH: &str = "qaforge.quantize.smooth";
    /// int8-dynamic: one activation range per `tensor` or per `token` (row).
    pub const QUANTIZE_ACTIVATION_SCALES: &str = "qaforge.quantize.activation_scales";

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
        QUANTIZE_FLOAT_ACTIVATIONS,
        QUANTIZE_QA_HEAD,
        QUANTIZE_TARGET,
        QUANTIZE_WEIGHTS,
        QUANTIZE_INT4,
        QUANTIZE_METHOD,
        QUANTIZE_SAMPLES,
        QUANTIZE_CALIBRATION_ENGINE,
        QUANTIZE_CALIBRATION_KERNELS,
        QUANTIZE_CALIBRATION_FALLBACK,
        QUANTIZE_SMOOTH,
        QUANTIZE_ACTIVATION_SCALES,
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
    pub const ALL: [Precision; 5] =
        [Precision::Fp32, Precision::Fp16, Precision::Int8Dynamic, Precision::Int8Static, Precision::Int4];

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

    /// The precisions `quantize` makes (every one but fp32, its input).
    pub const QUANTIZED: [Precision; 4] =
        [Precision::Fp16, Precision::Int8Dynamic, Precision::Int8Static, Precision::Int4];

    /// Whether weights are stored as 8-bit integers.
    pub fn is_int8(self) -> bool {
        matches!(self, Precision::Int8Dynamic | Precision::Int8Static)
    }

    /// How far its numbers stray from float32's: 0 for fp32, 1 for fp16, 2 for both int8 modes,
    /// 3 for int4. Verify's tolerances loosen in this order; a graph whose operators show a
    /// higher rank than its metadata records cannot be what the metadata says.
    pub fn loss_rank(self) -> u8 {
        match self {
            Precision::Fp32 => 0,
            Precision::Fp16 => 1,
            Precision::Int8Dynamic | Precision::Int8Static => 2,
            Precision::Int4 => 3,
        }
    }
}

impl Named for Precision {
    const ALL: &'static [Self] = &Precision::ALL;

    fn as_str(self) -> &'static str {
        Precision::as_str(self)
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
        assert_eq!(parse_named::<Precision>("int8-static", "precision"), Ok(Precision::Int8Static));
        assert_eq!(
            parse_named::<Precision>("int2", "precision").unwrap_err(),
            "unknown precision `int2` (known: fp32, fp16, int8-dynamic, int8-static, int4)"
        );
    }

    #[test]
    fn sha256_is_lowercase_hex_streamed_or_whole() {
        let whole = sha256_hex(b"abc");
        assert_eq!(whole, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut hasher = Sha256Hasher::new();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(sha256_finish(hasher), whole);
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
