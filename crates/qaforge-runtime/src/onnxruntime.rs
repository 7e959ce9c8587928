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
    pub fn from_bytes(library: &Path, bytes: &[u8], label: &Path, intra_threads: usize, layout: InputLayout) -> Result<Self, RuntimeError> {
        let error = |message: String| RuntimeError { path: label.to_owned(), message };
        let (environment, _) = environment(library).map_err(|e| error(format!("loading ONNX Runtime from {}: {e}", library.display())))?;
        let session = Session::builder(environment)
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

    fn run_outputs(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<TensorOutputs, RuntimeError> {
        let error = |e: ort::Error| RuntimeError { path: self.path.clone(), message: e.to_string() };
        let tensor = |feed: Feed| -> Result<ort::session::SessionInputValue<'_>, ort::Error> {
            Ok(match feed {
                Feed::I64(v) => Tensor::from_array(([batch, len], v))?.into(),
                Feed::I32(v) => Tensor::from_array(([batch, len], v))?.into(),
            })
        };
        let inputs: Vec<ort::session::SessionInputValue<'_>> = self.layout.feeds(ids, mask, types).into_iter().map(|f| tensor(f).map_err(error)).collect::<Result<_, _>>()?;
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
