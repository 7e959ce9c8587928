//! Which engines compute an artifact's integer matrix products exactly on which CPU.
//!
//! int8 artifacts multiply uint8 activations by int8 (or uint8) weights and accumulate in int32.
//! ONNX Runtime's MLAS picks its u8 × s8 kernel by CPU (onnxruntime/core/mlas/lib/platform.cpp):
//! on x86-64 with AVX2 or AVX-512 core but no VNNI it uses `vpmaddubsw`, which adds two adjacent
//! u8 × s8 products into an int16 *with saturation*; 255 × (|w₁| + |w₂|) exceeds 32767 as soon as
//! a weight pair sums past 128 in magnitude, so full-range int8 weights ([-127, 127]) give wrong
//! sums there. Its VNNI kernels (`vpdpbusd`, AVX-512 VNNI or AVX-VNNI), its SSE kernels (16-bit
//! widening), its u8 × u8 kernels (16-bit widening, `vpmaddwd`) and every ARM64 kernel
//! (`umull`/`smull`, `udot`/`sdot`) accumulate exactly. tract's integer kernels widen before
//! multiplying on every CPU. Measured on an AVX2-only AMD EPYC with onnxruntime 1.23.2: random
//! u8 × s8 MatMulInteger with full-range weights is off by up to 100034; with 7-bit weights, or
//! with uint8 weights offset by 128, it is exact.
//!
//! The CPU's features are given as flag names, so the decision table is tested on every machine
//! with features fed in; [`CpuFeatures::detect`] reads the machine's own.

use std::collections::{BTreeSet, HashMap};

use tract_onnx::pb::{tensor_proto::DataType, ModelProto, TensorProto};

/// The largest |int8 weight| for which a pair of u8 × s8 products cannot saturate an int16:
/// 255 × (64 + 64) = 32640 ≤ 32767.
pub const SATURATION_FREE_INT8: i32 = 64;

/// The CPU features that decide how integer kernels behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeatures {
    /// `x86_64`, `aarch64`, or another architecture name.
    pub arch: String,
    /// Feature flags in /proc/cpuinfo's spelling (`avx2`, `avx512bw`, `avx512_vnni`, `avx_vnni`, …),
    /// only those usable (enabled by the OS).
    pub flags: BTreeSet<String>,
}

impl CpuFeatures {
    /// A CPU described by its architecture and flag names (any spelling of Linux's /proc/cpuinfo
    /// or Rust's `is_x86_feature_detected!`: `avx512_vnni` and `avx512vnni` are the same flag).
    pub fn from_flags(arch: &str, flags: &[&str]) -> Self {
        CpuFeatures { arch: arch.to_string(), flags: flags.iter().map(|f| canonical_flag(f)).collect() }
    }

    /// This machine's CPU (features the OS has enabled, as std detects them).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut flags = Vec::new();
            macro_rules! probe {
                ($($name:tt),*) => {$(
                    if std::arch::is_x86_feature_detected!($name) {
                        flags.push($name);
                    }
                )*};
            }
            probe!("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avxvnni");
            CpuFeatures::from_flags("x86_64", &flags)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures::from_flags(std::env::consts::ARCH, &[])
        }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&canonical_flag(flag))
    }

    /// AVX-512 core (BW, DQ, VL), MLAS's condition for its AVX-512 integer kernels.
    fn avx512_core(&self) -> bool {
        self.has("avx512f") && self.has("avx512bw") && self.has("avx512dq") && self.has("avx512vl")
    }

    /// The architecture and the flags that matter here, for reports: `x86_64 avx2 avx512f avx512vnni`.
    pub fn describe(&self) -> String {
        let shown = ["avx2", "avx512f", "avx512bw", "avx512vnni", "avxvnni"];
        std::iter::once(self.arch.clone())
            .chain(shown.iter().filter(|f| self.has(f)).map(|f| f.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The u8 × s8 kernel ONNX Runtime's MLAS selects on this CPU (the decision table of
    /// platform.cpp), and whether it accumulates exactly.
    pub fn onnxruntime_u8s8_kernel(&self) -> U8S8Kernel {
        match self.arch.as_str() {
            "x86_64" | "x86" => {
                if !self.has("avx2") {
                    U8S8Kernel { name: "SSE (16-bit widening)", exact: true }
                } else if self.avx512_core() {
                    // AVX-512 core replaces the AVX2 / AVX-VNNI kernel; only AVX-512 VNNI is exact.
                    if self.has("avx512vnni") {
                        U8S8Kernel { name: "AVX-512 VNNI (vpdpbusd)", exact: true }
                    } else {
                        U8S8Kernel { name: "AVX-512 core (vpmaddubsw, saturating)", exact: false }
                    }
                } else if self.has("avxvnni") {
                    U8S8Kernel { name: "AVX-VNNI (vpdpbusd)", exact: true }
                } else {
                    U8S8Kernel { name: "AVX2 (vpmaddubsw, saturating)", exact: false }
                }
            }
            "aarch64" | "arm64" => U8S8Kernel { name: "ARM64 NEON (widening or dot product)", exact: true },
            // Elsewhere MLAS runs portable C++ with int32 arithmetic.
            _ => U8S8Kernel { name: "portable C++", exact: true },
        }
    }
}

/// `avx512_vnni` → `avx512vnni`, `avx_vnni` → `avxvnni`: one spelling for both sources.
fn canonical_flag(flag: &str) -> String {
    flag.trim().to_ascii_lowercase().replace(['_', '-'], "")
}

/// ONNX Runtime's u8 × s8 GEMM kernel on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U8S8Kernel {
    /// The kernel, in words.
    pub name: &'static str,
    /// Whether it accumulates every product exactly (false: int16 pair sums saturate).
    pub exact: bool,
}

/// The integer products of an artifact, found by structure: int8 or uint8 weight initializers
/// multiplied with uint8 activations (MatMulInteger, QLinearMatMul, the com.microsoft
/// DynamicQuantizeMatMul / MatMulIntegerToFloat, or DequantizeLinear → MatMul with a dequantized
/// uint8 activation on the other side, which ONNX Runtime fuses into an integer kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegerProducts {
    /// Products with int8 weights.
    pub int8_weights: usize,
    /// Products with uint8 weights (run by the exact u8 × u8 kernels).
    pub uint8_weights: usize,
    /// The largest |value| among the int8 weights of those products.
    pub int8_max_abs: i32,
}

impl IntegerProducts {
    /// The metadata key under which a package without an ONNX graph (an ORT-format model)
    /// carries the products of the artifact it was made from.
    pub const METADATA_KEY: &'static str = qaforge_provenance::keys::INTEGER_PRODUCTS;

    /// `int8_weights=N;uint8_weights=N;int8_max_abs=N`, for [`Self::METADATA_KEY`].
    pub fn to_metadata(&self) -> String {
        format!(
            "int8_weights={};uint8_weights={};int8_max_abs={}",
            self.int8_weights, self.uint8_weights, self.int8_max_abs
        )
    }

    /// Parses [`Self::to_metadata`]'s form.
    pub fn from_metadata(text: &str) -> Option<Self> {
        let mut found = IntegerProducts::default();
        for field in text.split(';') {
            let (key, value) = field.split_once('=')?;
            match key {
                "int8_weights" => found.int8_weights = value.parse().ok()?,
                "uint8_weights" => found.uint8_weights = value.parse().ok()?,
                "int8_max_abs" => found.int8_max_abs = value.parse().ok()?,
                _ => return None,
            }
        }
        Some(found)
    }

    /// Scans `model` for integer products. A model without nodes (ONNX Runtime's view of an
    /// ORT-format package) is taken at its recorded [`Self::METADATA_KEY`]; one that records
    /// nothing unreadable counts as having int8 weights of unknown range (the worst case).
    pub fn of(model: &ModelProto) -> Self {
        let mut found = IntegerProducts::default();
        let Some(graph) = model.graph.as_ref() else { return found };
        if graph.node.is_empty() {
            if let Some(p) = model.metadata_props.iter().find(|p| p.key == Self::METADATA_KEY) {
                return Self::from_metadata(&p.value).unwrap_or(IntegerProducts {
                    int8_weights: 1,
                    uint8_weights: 0,
                    int8_max_abs: 127,
                });
            }
        }
        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let producer: HashMap<&str, &tract_onnx::pb::NodeProto> =
            graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        // The integer initializer behind a DequantizeLinear output, and whether an activation is
        // a dequantized uint8 tensor computed at run time.
        let dequantized_initializer = |name: &str| {
            producer
                .get(name)
                .filter(|n| n.op_type == "DequantizeLinear")
                .and_then(|n| n.input.first())
                .and_then(|i| initializers.get(i.as_str()).copied())
        };
        let dequantized_u8_activation = |name: &str| {
            producer
                .get(name)
                .filter(|n| n.op_type == "DequantizeLinear")
                .and_then(|n| n.input.first())
                .is_some_and(|i| !initializers.contains_key(i.as_str()))
        };
        let mut record = |weight: &TensorProto| {
            if weight.data_type == DataType::Int8 as i32 {
                found.int8_weights += 1;
                found.int8_max_abs = found.int8_max_abs.max(int8_max_abs(weight));
            } else if weight.data_type == DataType::Uint8 as i32 {
                found.uint8_weights += 1;
            }
        };
        for n in &graph.node {
            let weight_input = match n.op_type.as_str() {
                "MatMulInteger" | "DynamicQuantizeMatMul" | "MatMulIntegerToFloat" => n.input.get(1),
                "QLinearMatMul" => n.input.get(3),
                "MatMul" | "Gemm" => {
                    let (Some(a), Some(b)) = (n.input.first(), n.input.get(1)) else { continue };
                    if dequantized_u8_activation(a) {
                        if let Some(w) = dequantized_initializer(b) {
                            record(w);
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(w) = weight_input.and_then(|w| initializers.get(w.as_str())) {
                record(w);
            }
        }
        found
    }

    /// Whether some int8 weights are large enough for u8 × s8 pair sums to saturate int16.
    pub fn needs_exact_u8s8(&self) -> bool {
        self.int8_weights > 0 && self.int8_max_abs > SATURATION_FREE_INT8
    }
}

fn int8_max_abs(t: &TensorProto) -> i32 {
    if !t.raw_data.is_empty() {
        t.raw_data.iter().map(|&b| (b as i8 as i32).abs()).max().unwrap_or(0)
    } else {
        t.int32_data.iter().map(|v| v.abs()).max().unwrap_or(0)
    }
}

/// Whether ONNX Runtime on `cpu` computes `products` as exactly as the artifact's target does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exactness {
    /// Every integer product is accumulated exactly.
    Exact,
    /// Some products may saturate: the figures measured are not what the target computes.
    Inexact {
        /// Why, in words: the kernel, the weights, and what to do instead.
        reason: String,
    },
}

/// The decision table: ONNX Runtime is exact on `cpu` for `products` unless full-range int8 weights
/// meet a saturating u8 × s8 kernel.
pub fn onnxruntime_exactness(cpu: &CpuFeatures, products: &IntegerProducts) -> Exactness {
    let kernel = cpu.onnxruntime_u8s8_kernel();
    if kernel.exact || !products.needs_exact_u8s8() {
        return Exactness::Exact;
    }
    Exactness::Inexact {
        reason: format!(
            "ONNX Runtime on this CPU ({}) multiplies u8 × s8 with its {} kernel, and this artifact's int8 weights reach |{}| > {} \
             ({} integer MatMuls): pair sums overflow int16 and are clipped, so its logits here are not what its target computes. \
             Verify it with --engine tract (exact integer arithmetic) or on a CPU with VNNI or ARM64, or quantize with --target x86-avx2 for CPUs like this one",
            cpu.describe(),
            kernel.name,
            products.int8_max_abs,
            SATURATION_FREE_INT8,
            products.int8_weights
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x86(flags: &[&str]) -> CpuFeatures {
        CpuFeatures::from_flags("x86_64", flags)
    }

    #[test]
    fn mlas_kernel_table() {
        let avx2 = ["avx2", "fma"];
        let avx512_core = ["avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl"];
        assert!(!x86(&avx2).onnxruntime_u8s8_kernel().exact, "AVX2 without VNNI saturates");
        assert!(x86(&["avx2", "avx_vnni"]).onnxruntime_u8s8_kernel().exact, "AVX-VNNI is exact");
        assert!(!x86(&avx512_core).onnxruntime_u8s8_kernel().exact, "AVX-512 without VNNI saturates");
        let vnni: Vec<&str> = avx512_core.iter().copied().chain(["avx512_vnni"]).collect();
        assert!(x86(&vnni).onnxruntime_u8s8_kernel().exact, "AVX-512 VNNI is exact");
        // AVX-512 core takes precedence over AVX-VNNI in MLAS: without AVX-512 VNNI it saturates.
        let core_and_avx_vnni: Vec<&str> = avx512_core.iter().copied().chain(["avxvnni"]).collect();
        assert!(!x86(&core_and_avx_vnni).onnxruntime_u8s8_kernel().exact);
        // avx512f alone is not AVX-512 core: the AVX-VNNI kernel stays.
        assert!(x86(&["avx2", "avx512f", "avxvnni"]).onnxruntime_u8s8_kernel().exact);
        assert!(x86(&["sse4_1"]).onnxruntime_u8s8_kernel().exact, "SSE kernels widen to 16 bits");
        assert!(CpuFeatures::from_flags("aarch64", &[]).onnxruntime_u8s8_kernel().exact);
    }

    #[test]
    fn flag_spellings_agree() {
        assert_eq!(x86(&["avx512_vnni", "AVX_VNNI"]), x86(&["avx512vnni", "avxvnni"]));
        assert_eq!(x86(&["avx2", "avx512f", "avx512_vnni"]).describe(), "x86_64 avx2 avx512f avx512vnni");
    }

    fn products(int8_max_abs: i32, int8_weights: usize, uint8_weights: usize) -> IntegerProducts {
        IntegerProducts { int8_weights, uint8_weights, int8_max_abs }
    }

    #[test]
    fn decision_table() {
        let avx2 = x86(&["avx2"]);
        let vnni = x86(&["avx2", "avxvnni"]);
        let arm = CpuFeatures::from_flags("aarch64", &[]);
        let full_range = products(127, 24, 0);
        let seven_bit = products(64, 24, 0);
        let unsigned = products(0, 0, 24);
        let float = products(0, 0, 0);
        assert!(matches!(onnxruntime_exactness(&avx2, &full_range), Exactness::Inexact { .. }));
        for exact in [&seven_bit, &unsigned, &float] {
            assert_eq!(onnxruntime_exactness(&avx2, exact), Exactness::Exact, "{exact:?} on AVX2");
        }
        for cpu in [&vnni, &arm] {
            for p in [&full_range, &seven_bit, &unsigned, &float] {
                assert_eq!(onnxruntime_exactness(cpu, p), Exactness::Exact, "{p:?} on {cpu:?}");
            }
        }
        let Exactness::Inexact { reason } = onnxruntime_exactness(&avx2, &full_range) else { unreachable!() };
        assert!(
            reason.contains("x86_64 avx2") && reason.contains("--engine tract") && reason.contains("--target x86-avx2"),
            "{reason}"
        );
    }

    #[test]
    fn detection_runs_and_names_the_architecture() {
        let cpu = CpuFeatures::detect();
        assert_eq!(cpu.arch, std::env::consts::ARCH);
        assert!(cpu.describe().starts_with(std::env::consts::ARCH));
    }

    #[test]
    fn products_are_found_by_structure() {
        use tract_onnx::pb::{GraphProto, NodeProto};
        let tensor = |name: &str, ty: DataType, bytes: Vec<u8>| TensorProto {
            name: name.into(),
            dims: vec![bytes.len() as i64],
            data_type: ty as i32,
            raw_data: bytes,
            ..Default::default()
        };
        let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        let graph = GraphProto {
            initializer: vec![
                tensor("w_dynamic", DataType::Int8, vec![3, (-100i8) as u8]),
                tensor("w_static", DataType::Int8, vec![(-127i8) as u8]),
                tensor("w_u8", DataType::Uint8, vec![255]),
                tensor("w_weight_only", DataType::Int8, vec![127]),
                tensor("s", DataType::Float, vec![0; 4]),
            ],
            node: vec![
                node("MatMulInteger", &["xq", "w_dynamic", "xz"], "y1"),
                node("QuantizeLinear", &["x", "s"], "q"),
                node("DequantizeLinear", &["q", "s"], "dq"),
                node("DequantizeLinear", &["w_static", "s"], "w_static_f"),
                node("MatMul", &["dq", "w_static_f"], "y2"),
                node("MatMulInteger", &["xq", "w_u8", "xz"], "y3"),
                // A float activation times a dequantized weight runs in float: not an integer product.
                node("DequantizeLinear", &["w_weight_only", "s"], "w_weight_only_f"),
                node("MatMul", &["x", "w_weight_only_f"], "y4"),
            ],
            ..Default::default()
        };
        let model = ModelProto { graph: Some(graph), ..Default::default() };
        let found = IntegerProducts::of(&model);
        assert_eq!(found, products(127, 2, 1));
        assert!(found.needs_exact_u8s8());
    }
}
