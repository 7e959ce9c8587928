//! ONNX Runtime, the engine phones run, through the `ort` crate with `load-dynamic`: the shared
//! library is opened at run time (for example the one inside the onnxruntime PyPI wheel), because
//! the crate's default features download binaries at build time, which cannot work offline.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;

use crate::{Engine, Feed, InputLayout, RuntimeError, TensorOutputs};

/// ONNX Runtime's process-wide environment, created once from the first library loaded.
static ENVIRONMENT: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

fn environment(library: &Path) -> Result<&'static (ort::environment::Environment, PathBuf), String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        let environment = builder.build().map_err(|e| e.to_string())?;
        Ok((environment, library.to_owned()))
    });
    match loaded {
        Ok(pair) if pair.1 == library => Ok(pair),
        Ok(pair) => Err(format!("ONNX Runtime is already loaded from {} in this process", pair.1.display())),
        Err(e) => Err(e.clone()),
    }
}

/// An ONNX Runtime CPU session for one artifact. ONNX Runtime parallelises inside each run
/// (`intra_threads`), so batches are run one at a time through a lock.
pub struct OrtSession {
    path: PathBuf,
    library: PathBuf,
    session: Mutex<Session>,
    layout: InputLayout,
}

impl OrtSession {
    /// Opens libonnxruntime from `library` (once per process) and builds a session for the model
    /// `bytes` with all graph optimisations and `intra_threads` threads; `layout` says which inputs
    /// the graph takes (see [`crate::check_inputs`]).
    pub fn from_bytes(
        library: &Path,
        bytes: &[u8],
        label: &Path,
        intra_threads: usize,
        layout: InputLayout,
    ) -> Result<Self, RuntimeError> {
        let error = |message: String| RuntimeError { path: label.to_owned(), message };
        let (environment, _) =
            environment(library).map_err(|e| error(format!("loading ONNX Runtime from {}: {e}", library.display())))?;
        // Every graph optimisation, as onnxruntime's Python sessions default to (and the bench's
        // ONNX Runtime loop runs).
        let session = Session::builder(environment)
            .map_err(|e| error(e.to_string()))?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(|e| error(e.to_string()))?
            .with_intra_threads(intra_threads.max(1))
            .map_err(|e| error(e.to_string()))?
            .commit_from_memory(bytes)
            .map_err(|e| error(e.to_string()))?;
        Ok(OrtSession { path: label.to_owned(), library: library.to_owned(), session: Mutex::new(session), layout })
    }
}

impl Engine for OrtSession {
    fn label(&self) -> &Path {
        &self.path
    }

    fn description(&self) -> String {
        let file = self.library.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        format!("onnxruntime ({file})")
    }

    fn preferred_threads(&self, _cores: usize) -> usize {
        1
    }

    fn run_outputs(
        &self,
        batch: usize,
        len: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<TensorOutputs, RuntimeError> {
        let error = |e: ort::Error| RuntimeError { path: self.path.clone(), message: e.to_string() };
        let tensor = |feed: Feed| -> Result<ort::session::SessionInputValue<'_>, ort::Error> {
            Ok(match feed {
                Feed::I64(v) => Tensor::from_array(([batch, len], v))?.into(),
                Feed::I32(v) => Tensor::from_array(([batch, len], v))?.into(),
            })
        };
        let inputs: Vec<ort::session::SessionInputValue<'_>> = self
            .layout
            .feeds(ids, mask, types)
            .into_iter()
            .map(|f| tensor(f).map_err(error))
            .collect::<Result<_, _>>()?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(inputs.as_slice()).map_err(error)?;
        outputs
            .iter()
            .map(|(_, value)| {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(error)?;
                let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                Ok((shape, data.to_vec()))
            })
            .collect()
    }
}

/// The format [`save_optimized`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedFormat {
    /// ONNX Runtime Mobile's ORT format (flatbuffer).
    Ort,
    /// ONNX protobuf.
    Onnx,
}

/// Loads the model `bytes` in ONNX Runtime with all graph optimizations (ORT_ENABLE_ALL, the
/// "Fixed" optimization style of ONNX Runtime's converter) and the session `config` entries, and
/// writes the optimized model to `path` in `format`. Loading is the check that the artifact is
/// one ONNX Runtime accepts.
pub fn save_optimized(
    library: &Path,
    bytes: &[u8],
    label: &Path,
    path: &Path,
    format: SavedFormat,
    config: &[(&str, &str)],
) -> Result<(), RuntimeError> {
    let error = |message: String| RuntimeError { path: label.to_owned(), message };
    let (environment, _) =
        environment(library).map_err(|e| error(format!("loading ONNX Runtime from {}: {e}", library.display())))?;
    let mut builder = Session::builder(environment)
        .map_err(|e| error(e.to_string()))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| error(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| error(e.to_string()))?
        .with_optimized_model_path(path)
        .map_err(|e| error(e.to_string()))?;
    let format_name = match format {
        SavedFormat::Ort => "ORT",
        SavedFormat::Onnx => "ONNX",
    };
    builder = builder.with_config_entry("session.save_model_format", format_name).map_err(|e| error(e.to_string()))?;
    for (key, value) in config {
        builder = builder.with_config_entry(key, value).map_err(|e| error(e.to_string()))?;
    }
    builder.commit_from_memory(bytes).map_err(|e| error(format!("ONNX Runtime refused it: {e}")))?;
    Ok(())
}

/// Checks that ONNX Runtime loads the model `bytes` (with all graph optimizations).
pub fn check_loads(library: &Path, bytes: &[u8], label: &Path) -> Result<(), RuntimeError> {
    let error = |message: String| RuntimeError { path: label.to_owned(), message };
    let (environment, _) =
        environment(library).map_err(|e| error(format!("loading ONNX Runtime from {}: {e}", library.display())))?;
    Session::builder(environment)
        .map_err(|e| error(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| error(e.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|e| error(format!("ONNX Runtime refused it: {e}")))?;
    Ok(())
}

/// What ONNX Runtime says of a model it loaded (ONNX or ORT format), as a graph-less ModelProto:
/// the graph's inputs with their element types, and the metadata. It lets an ORT-format model,
/// which has no ONNX protobuf, be checked and fed like any artifact.
pub fn model_view(library: &Path, bytes: &[u8], label: &Path) -> Result<tract_onnx::pb::ModelProto, RuntimeError> {
    use tract_onnx::pb;
    let error = |message: String| RuntimeError { path: label.to_owned(), message };
    let (environment, _) =
        environment(library).map_err(|e| error(format!("loading ONNX Runtime from {}: {e}", library.display())))?;
    let session = Session::builder(environment)
        .map_err(|e| error(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| error(e.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|e| error(format!("ONNX Runtime refused it: {e}")))?;
    let elem_type = |t: Option<ort::value::TensorElementType>| match t {
        Some(ort::value::TensorElementType::Int64) => pb::tensor_proto::DataType::Int64 as i32,
        Some(ort::value::TensorElementType::Int32) => pb::tensor_proto::DataType::Int32 as i32,
        Some(ort::value::TensorElementType::Float32) => pb::tensor_proto::DataType::Float as i32,
        _ => pb::tensor_proto::DataType::Undefined as i32,
    };
    let input = session
        .inputs()
        .iter()
        .map(|i| pb::ValueInfoProto {
            name: i.name().to_string(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem_type(i.dtype().tensor_type()),
                    shape: None,
                })),
            }),
            doc_string: String::new(),
        })
        .collect();
    let metadata = session.metadata().map_err(|e| error(e.to_string()))?;
    let mut keys = metadata.custom_keys().map_err(|e| error(e.to_string()))?;
    keys.sort();
    let metadata_props = keys
        .into_iter()
        .filter_map(|key| metadata.custom(&key).map(|value| pb::StringStringEntryProto { key, value }))
        .collect();
    Ok(pb::ModelProto {
        graph: Some(pb::GraphProto { input, ..Default::default() }),
        metadata_props,
        ..Default::default()
    })
}
