//! Which engine runs an artifact: the user's request (`--engine auto|tract|ort` with ONNX
//! Runtime's library), resolved into an [`EngineChoice`], and, per artifact, whether that engine
//! computes its integer products exactly on this CPU ([`choose_engine`]; the kernel analysis is
//! [`crate::integer_kernels`]).

use std::path::{Path, PathBuf};

use qaforge_provenance::{parse_named, Named};

use crate::integer_kernels::{onnxruntime_exactness, CpuFeatures, Exactness, IntegerProducts};
use crate::EngineChoice;

/// Whether this build can load ONNX Runtime (the `ort` feature).
pub const WITH_ONNXRUNTIME: bool = cfg!(feature = "ort");

/// The engine a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRequest {
    /// ONNX Runtime where its library is given and it computes the artifact exactly on this CPU,
    /// tract otherwise.
    Auto,
    /// tract, built in.
    Tract,
    /// ONNX Runtime, loaded from its library.
    Ort,
}

impl EngineRequest {
    /// Every request, in the order help texts list them.
    pub const ALL: [EngineRequest; 3] = [EngineRequest::Auto, EngineRequest::Tract, EngineRequest::Ort];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineRequest::Auto => "auto",
            EngineRequest::Tract => "tract",
            EngineRequest::Ort => "ort",
        }
    }

    /// The engine to start from, given ONNX Runtime's `library` (`--ort-library` or
    /// `$ORT_DYLIB_PATH`), and whether [`choose_engine`] may move an artifact to tract where
    /// that engine is not exact on this CPU: auto is ONNX Runtime where this build has it and
    /// its library is given, tract otherwise.
    pub fn resolve(self, library: Option<&Path>) -> Result<(EngineChoice, bool), String> {
        match self {
            EngineRequest::Tract => Ok((EngineChoice::Tract, false)),
            EngineRequest::Ort => Ok((onnxruntime(library)?, false)),
            EngineRequest::Auto if WITH_ONNXRUNTIME && library.is_some() => Ok((onnxruntime(library)?, true)),
            EngineRequest::Auto => Ok((EngineChoice::Tract, false)),
        }
    }
}

impl Named for EngineRequest {
    const ALL: &'static [Self] = &EngineRequest::ALL;

    fn as_str(self) -> &'static str {
        EngineRequest::as_str(self)
    }
}

impl std::str::FromStr for EngineRequest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "engine")
    }
}

/// ONNX Runtime's library `library` (`--ort-library` or `$ORT_DYLIB_PATH`), checked to be a
/// file, in a build that can load it.
pub fn onnxruntime_library(library: Option<&Path>) -> Result<PathBuf, String> {
    if !WITH_ONNXRUNTIME {
        return Err(
            "this qaforge was built without ONNX Runtime support: rebuild with `cargo build --features ort`".into()
        );
    }
    let library = library.ok_or("ONNX Runtime needs libonnxruntime: pass --ort-library or set ORT_DYLIB_PATH")?;
    if !library.is_file() {
        return Err(format!("{}: no such file (libonnxruntime for --engine ort)", library.display()));
    }
    Ok(library.to_owned())
}

/// ONNX Runtime as the engine, from `library` (see [`onnxruntime_library`]).
pub fn onnxruntime(library: Option<&Path>) -> Result<EngineChoice, String> {
    Ok(EngineChoice::OnnxRuntime { library: onnxruntime_library(library)? })
}

/// Whether `engine` computes `model`'s integer products on `cpu` as exactly as the artifact's
/// target does: tract always (its integer kernels widen before multiplying); ONNX Runtime unless
/// full-range int8 weights meet its saturating u8 × s8 kernel.
pub fn engine_exactness(engine: &EngineChoice, cpu: &CpuFeatures, model: &tract_onnx::pb::ModelProto) -> Exactness {
    match engine {
        EngineChoice::Tract => Exactness::Exact,
        EngineChoice::OnnxRuntime { .. } => onnxruntime_exactness(cpu, &IntegerProducts::of(model)),
    }
}

/// The engine an artifact is computed in, and how exactly it computes it on this CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenEngine {
    /// The engine to load.
    pub engine: EngineChoice,
    /// Whether it computes the artifact's integer products as its target does, here.
    pub exactness: Exactness,
    /// Why `--engine auto` moved the artifact to tract (ONNX Runtime would not be exact here).
    pub instead_because: Option<String>,
}

/// The engine `model` is computed in. Without `exact_fallback`, `asked`. With it (`--engine
/// auto`): `asked` (ONNX Runtime, the engine the artifact ships to, several times tract's speed on
/// int8) where it computes the artifact's integer products exactly on `cpu`; tract, whose integer
/// kernels are exact on every CPU, where it would not (full-range int8 weights meeting ONNX
/// Runtime's saturating u8 × s8 kernel on x86 without VNNI), with the reason. A graph only ONNX
/// Runtime runs (an .ort package, com.microsoft fused operators) stays where it was asked, and
/// verify says NOT VERIFIED there. The exactness is computed once, for the engine chosen.
pub fn choose_engine(
    asked: &EngineChoice,
    exact_fallback: bool,
    cpu: &CpuFeatures,
    model: &tract_onnx::pb::ModelProto,
    engine_bytes: &[u8],
) -> ChosenEngine {
    match engine_exactness(asked, cpu, model) {
        Exactness::Inexact { reason }
            if exact_fallback && !crate::is_ort_format(engine_bytes) && crate::onnxruntime_only(model).is_none() =>
        {
            ChosenEngine {
                engine: EngineChoice::Tract,
                exactness: engine_exactness(&EngineChoice::Tract, cpu, model),
                instead_because: Some(reason),
            }
        }
        exactness => ChosenEngine { engine: asked.clone(), exactness, instead_because: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tract_and_auto_without_a_library_need_nothing() {
        assert_eq!(EngineRequest::Tract.resolve(None), Ok((EngineChoice::Tract, false)));
        assert_eq!(EngineRequest::Auto.resolve(None), Ok((EngineChoice::Tract, false)));
        assert!(EngineRequest::Ort.resolve(None).is_err());
        for e in EngineRequest::ALL {
            assert_eq!(e.as_str().parse::<EngineRequest>(), Ok(e));
        }
    }

    #[test]
    fn a_missing_library_is_named() {
        let missing = Path::new("/nonexistent/libonnxruntime.so");
        let err = EngineRequest::Ort.resolve(Some(missing)).unwrap_err();
        assert!(err.contains("/nonexistent/libonnxruntime.so") || err.contains("without ONNX Runtime"), "{err}");
    }
}
