//! Everything one quantize request decides before any step runs, in one place: the precision,
//! the CPUs an int8 artifact is for and how its weights are stored, int4's blocks, rounding and
//! size budget, int8-static's calibration method, and what stays float. Each enum owns the names
//! the command line, the metadata and the reports use ([`Named`]).

use std::str::FromStr;

use qaforge_provenance::{parse_named, Named, Precision};

/// The CPUs an int8 artifact is for. Its weights are stored so that ONNX Runtime's integer
/// kernels on those CPUs compute it exactly (see `qaforge_runtime::integer_kernels`); every
/// target's artifact is exact in tract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Target {
    /// Phones and ARM64 servers: int8 weights in [-127, 127] (exact in every ARM64 kernel).
    #[default]
    Arm64,
    /// x86-64 with AVX-512 VNNI or AVX-VNNI: int8 weights in [-127, 127] (`vpdpbusd` is exact).
    X86Vnni,
    /// x86-64 without VNNI (AVX2, or AVX-512 without VNNI): uint8 weights offset by 128, which
    /// ONNX Runtime multiplies with its exact u8 × u8 kernels (its u8 × s8 kernels saturate there).
    X86Avx2,
}

impl Target {
    /// Every target, in the order help texts list them.
    pub const ALL: [Target; 3] = [Target::Arm64, Target::X86Vnni, Target::X86Avx2];

    /// The name used on the command line and in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Arm64 => "arm64",
            Target::X86Vnni => "x86-vnni",
            Target::X86Avx2 => "x86-avx2",
        }
    }

    /// How this target stores int8 weights.
    pub fn weight_storage(self) -> WeightStorage {
        match self {
            Target::Arm64 | Target::X86Vnni => WeightStorage::Int8,
            Target::X86Avx2 => WeightStorage::Uint8Offset,
        }
    }
}

impl Named for Target {
    const ALL: &'static [Self] = &Target::ALL;

    fn as_str(self) -> &'static str {
        Target::as_str(self)
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "target")
    }
}

/// How weights are quantized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightOptions {
    /// One scale per tensor instead of one per output channel.
    pub per_tensor: bool,
    /// How the quantized values are stored, which decides the integer kernels that run them.
    pub storage: WeightStorage,
}

/// How int8 weight values are stored. The choice decides which ONNX Runtime kernel multiplies
/// them with the uint8 activations and whether it is exact on a CPU (see
/// `qaforge_runtime::integer_kernels`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// int8 in [-127, 127]: 255 levels, exact in ONNX Runtime on ARM64 and on x86 with VNNI.
    #[default]
    Int8,
    /// int8 in [-64, 63], ONNX Runtime's `reduce_range`: exact on every CPU, one bit coarser.
    Int8SevenBit,
    /// uint8 in [1, 255] with zero point 128: the same 255 levels as [`WeightStorage::Int8`],
    /// multiplied by ONNX Runtime's u8 × u8 kernels, which widen to 16 bits and are exact on
    /// every x86 CPU (its u8 × s8 kernels saturate without VNNI).
    Uint8Offset,
}

impl WeightStorage {
    /// In words, for provenance and summaries.
    pub fn describe(self) -> &'static str {
        match self {
            WeightStorage::Int8 => "int8 [-127, 127]",
            WeightStorage::Int8SevenBit => "int8 7-bit [-64, 63] (reduce range)",
            WeightStorage::Uint8Offset => "uint8 [1, 255], zero point 128",
        }
    }
}

impl WeightOptions {
    /// The weight options for `target`; `reduce_range` asks for 7-bit int8 weights instead
    /// (ONNX Runtime's reduce_range: exact on every CPU, one bit coarser).
    pub fn for_target(target: Target, per_tensor: bool, reduce_range: bool) -> Self {
        let storage = if reduce_range { WeightStorage::Int8SevenBit } else { target.weight_storage() };
        WeightOptions { per_tensor, storage }
    }
}

/// How int8-dynamic quantizes a product's input at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActivationScales {
    /// One scale and zero point for the whole input tensor (DynamicQuantizeLinear, as ONNX
    /// Runtime's quantize_dynamic writes): one fused op, but the range is the batch's, so one
    /// token's outliers coarsen every token's grid and a feature's logits depend on what it is
    /// batched with.
    #[default]
    Tensor,
    /// One scale and zero point per token (row), from ReduceMin/ReduceMax over its channels:
    /// each token quantized on its own range, so its logits do not depend on the batch. A few
    /// more element-wise ops per product (the zero points are subtracted in int32 after
    /// MatMulInteger, whose `a_zero_point` ONNX Runtime takes only as one scalar).
    Token,
}

impl ActivationScales {
    /// Every granularity, in the order help texts list them.
    pub const ALL: [ActivationScales; 2] = [ActivationScales::Tensor, ActivationScales::Token];

    /// The name on the command line and in provenance.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationScales::Tensor => "tensor",
            ActivationScales::Token => "token",
        }
    }
}

impl Named for ActivationScales {
    const ALL: &'static [Self] = &ActivationScales::ALL;

    fn as_str(self) -> &'static str {
        ActivationScales::as_str(self)
    }
}

impl FromStr for ActivationScales {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "activation scales")
    }
}

/// How embedding tables are stored in an int4 artifact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TableBits {
    /// 4-bit blocks along each row (GatherBlockQuantized), where the row length allows a block
    /// of at least 16; int8 otherwise.
    #[default]
    Int4,
    /// int8 per row, dequantized before the Gather (as in the int8 precisions).
    Int8,
}

impl TableBits {
    /// Every way, in the order help texts list them.
    pub const ALL: [TableBits; 2] = [TableBits::Int4, TableBits::Int8];

    /// The name on the command line and in provenance.
    pub fn as_str(self) -> &'static str {
        match self {
            TableBits::Int4 => "int4",
            TableBits::Int8 => "int8",
        }
    }
}

/// How weights are rounded to their blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rounding {
    /// Each block's grid by a search for its least squared error, every weight to its nearest
    /// level ([`crate::blockwise::round_to_grid`]).
    #[default]
    Search,
    /// GPTQ: rounding errors compensated with the calibration inputs' statistics
    /// ([`crate::blockwise::gptq`]).
    Gptq,
}

impl Rounding {
    /// Every rounding, in the order help texts list them.
    pub const ALL: [Rounding; 2] = [Rounding::Search, Rounding::Gptq];

    /// The name on the command line and in provenance.
    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::Search => "search",
            Rounding::Gptq => "gptq",
        }
    }
}

/// How int4 quantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int4Options {
    /// Weights per block (one scale each) along the reduced dimension: a power of two ≥ 16.
    pub block_size: usize,
    /// How embedding tables are stored.
    pub tables: TableBits,
    /// How weights are rounded.
    pub rounding: Rounding,
    /// The largest artifact, in bytes: each product then gets 2 or 4 bits, int8 or float, by
    /// the size budget ([`crate::budget`]).
    pub max_size: Option<u64>,
}

impl Default for Int4Options {
    fn default() -> Self {
        Int4Options { block_size: 32, tables: TableBits::Int4, rounding: Rounding::Search, max_size: None }
    }
}

impl Named for TableBits {
    const ALL: &'static [Self] = &TableBits::ALL;

    fn as_str(self) -> &'static str {
        TableBits::as_str(self)
    }
}

impl FromStr for TableBits {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "embedding table storage")
    }
}

impl Named for Rounding {
    const ALL: &'static [Self] = &Rounding::ALL;

    fn as_str(self) -> &'static str {
        Rounding::as_str(self)
    }
}

impl FromStr for Rounding {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "rounding")
    }
}

/// How a tensor's calibrated range is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip |x| at this percentile of the observed |x| (e.g. 99.999).
    Percentile(f64),
    /// Clip |x| where the expected squared error of quantizing onto the artifact's own uint8 grid
    /// (rounding inside the range, clipping outside) is smallest.
    ///
    /// This replaced TensorRT's entropy (KL divergence) calibration, which qaforge offered before:
    /// on the trained fixture it cut the LayerNorm outputs' outlier features from |x| ≈ 28 to ≈ 9
    /// and the GELU outputs from ≈ 24 to ≈ 2.5, and F1 fell by 19.4 points. KL compares the shapes
    /// of two histograms, so the few large values of BERT's outlier dimensions weigh almost
    /// nothing, although the model depends on them; and it modelled 128 levels over [0, t] where
    /// the artifact's uint8 grid has 255 over [min, t]. Squared error weighs each clipped value by
    /// how far it is moved.
    Mse,
}

/// The calibration methods by name (`--method`), the percentile being an option of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodName {
    /// [`CalibrationMethod::MinMax`].
    MinMax,
    /// [`CalibrationMethod::Percentile`].
    Percentile,
    /// [`CalibrationMethod::Mse`].
    Mse,
}

impl MethodName {
    /// Every method, in the order help texts list them.
    pub const ALL: [MethodName; 3] = [MethodName::MinMax, MethodName::Percentile, MethodName::Mse];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodName::MinMax => "minmax",
            MethodName::Percentile => "percentile",
            MethodName::Mse => "mse",
        }
    }

    /// The method, with `percentile` for [`MethodName::Percentile`].
    pub fn with_percentile(self, percentile: f64) -> CalibrationMethod {
        match self {
            MethodName::MinMax => CalibrationMethod::MinMax,
            MethodName::Percentile => CalibrationMethod::Percentile(percentile),
            MethodName::Mse => CalibrationMethod::Mse,
        }
    }
}

impl Named for MethodName {
    const ALL: &'static [Self] = &MethodName::ALL;

    fn as_str(self) -> &'static str {
        MethodName::as_str(self)
    }
}

/// Why `--method entropy` is refused (the method was replaced by mse; see [`CalibrationMethod::Mse`]).
pub const ENTROPY_REMOVED: &str = "--method entropy was removed: its KL-divergence ranges clip BERT's outlier features (F1 -19.4 on the trained fixture golden/minilm-l6-squad2); use --method mse (squared-error-optimal ranges) or percentile";

impl FromStr for MethodName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "entropy" {
            return Err(ENTROPY_REMOVED.into());
        }
        parse_named(text, "calibration method")
    }
}

impl std::fmt::Display for CalibrationMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibrationMethod::MinMax => f.write_str("minmax"),
            CalibrationMethod::Percentile(p) => write!(f, "percentile {p}"),
            CalibrationMethod::Mse => f.write_str("mse"),
        }
    }
}

/// Everything that decides the output of [`quantize`](crate::quantize()).
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Target precision.
    pub precision: Precision,
    /// Node name or op type patterns (`*` wildcards) kept float.
    pub exclude: Vec<String>,
    /// Node name or op type patterns (`*` wildcards) of products that keep float activations
    /// with int8 weights (int8 modes): the artifact stays int8-sized, the product's input is
    /// not quantized. `exclude` wins where both match.
    pub float_activations: Vec<String>,
    /// Quantize the QA head too (int8 modes): float by default, as it decides every answer.
    pub int8_qa_head: bool,
    /// The CPUs the artifact is for (int8 modes; recorded in its provenance).
    pub target: Target,
    /// Weight quantization (int8 modes).
    pub weights: WeightOptions,
    /// Block size and embedding tables (int4).
    pub int4: Int4Options,
    /// Calibration method (int8-static).
    pub method: CalibrationMethod,
    /// How int8-dynamic scales its activations at run time: per tensor or per token.
    pub activation_scales: ActivationScales,
    /// Features per calibration batch.
    pub batch_size: usize,
    /// Threads running calibration batches.
    pub threads: usize,
    /// The graph's inputs for token ids, attention mask and token types, when its names do not
    /// say (`--input-names`): how calibration and the sensitivity search feed it.
    pub input_names: Option<Vec<String>>,
    /// The engine int8-static calibration runs the float graph in: tract, or ONNX Runtime for
    /// graphs tract cannot run (recorded in the artifact's provenance).
    pub calibration_engine: qaforge_runtime::EngineChoice,
    /// Where `calibration_engine` is tract: the engine (ONNX Runtime) to calibrate in when tract
    /// cannot load or run the float graph, if one is at hand. Which engine calibrated, and why,
    /// is recorded in the artifact's provenance.
    pub calibration_fallback: Option<qaforge_runtime::EngineChoice>,
}

#[cfg(test)]
impl QuantizeOptions {
    /// Options for unit tests: `precision`, `exclude`, arm64 storage, minmax, one thread, tract.
    pub(crate) fn for_tests(precision: Precision, exclude: &[&str]) -> Self {
        QuantizeOptions {
            precision,
            exclude: exclude.iter().map(|e| e.to_string()).collect(),
            float_activations: Vec::new(),
            int8_qa_head: false,
            target: Target::Arm64,
            weights: WeightOptions::default(),
            int4: Int4Options::default(),
            method: CalibrationMethod::MinMax,
            activation_scales: ActivationScales::Tensor,
            batch_size: 1,
            threads: 1,
            input_names: None,
            calibration_engine: qaforge_runtime::EngineChoice::Tract,
            calibration_fallback: None,
        }
    }
}

/// `--max-size`: a size in bytes, a number optionally with kB, MB, GB (powers of 1000) or KiB,
/// MiB, GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_bytes: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}` (bytes, kB, MB, GB, KiB, MiB or GiB)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a size (e.g. 12MB or 12000000)"))?;
    let bytes = value * unit_bytes;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!("`{text}`: a size from 1 byte to 1 PB"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_entropy_says_why_it_is_gone() {
        for t in Target::ALL {
            assert_eq!(t.as_str().parse::<Target>(), Ok(t));
        }
        for r in Rounding::ALL {
            assert_eq!(r.as_str().parse::<Rounding>(), Ok(r));
        }
        for a in ActivationScales::ALL {
            assert_eq!(a.as_str().parse::<ActivationScales>(), Ok(a));
        }
        for b in TableBits::ALL {
            assert_eq!(b.as_str().parse::<TableBits>(), Ok(b));
        }
        for m in MethodName::ALL {
            assert_eq!(m.as_str().parse::<MethodName>(), Ok(m));
            assert_eq!(m.with_percentile(99.9).to_string().split(' ').next(), Some(m.as_str()));
        }
        assert!("entropy".parse::<MethodName>().unwrap_err().contains("--method mse"));
        assert_eq!("x86".parse::<Target>().unwrap_err(), "unknown target `x86` (known: arm64, x86-vnni, x86-avx2)");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("12MB"), Ok(12_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("12000000"), Ok(12_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }
}
