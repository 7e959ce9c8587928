//! `qaforge serve`: a verified question-answering artifact behind an HTTP endpoint.
//!
//! Routes (see `docs/serve.md`): `POST /predict` takes the body of Hugging Face's inference API
//! and transformers' question-answering pipeline and answers as the pipeline does; `GET /health`
//! (alive), `GET /ready` (the model is loaded and has run a warm-up batch, and no shutdown has
//! begun), `GET /info`, `GET /metrics` (Prometheus), and KServe's `/v2/health/live` and
//! `/v2/health/ready`. Requests' windows meet in one dynamic batcher ([`batcher`]); limits answer
//! with `{"error", "error_type"}` and their status (413, 422, 429 with Retry-After, 408, 401),
//! engine failures and panics with 500 while the server goes on; SIGTERM or Ctrl-C turns `/ready`
//! to 503, answers what is in flight, and returns.
//!
//! An answer does not depend on the load: each window's logits are computed as `qaforge answer`
//! computes them alone (padded one token past its end; the rows of a batch are independent, and
//! where an artifact couples them, int8-dynamic or float16, each window runs alone), and post-processed by
//! the same code.

pub mod api;
pub mod batcher;
pub mod metrics;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use qaforge_pipeline::{EngineChoice, LoadedArtifact};
use qaforge_runtime::{BatchBudget, Engine};
use qaforge_squad::QaTokenizer;
use tokio::sync::Semaphore;

use crate::batcher::{Batcher, BatcherOptions};
use crate::metrics::Metrics;

/// Errors that stop the server from starting (or from ending cleanly).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The artifact, tokenizer or report could not be loaded.
    #[error(transparent)]
    Load(#[from] qaforge_pipeline::PipelineError),
    /// The options do not fit together.
    #[error("{0}")]
    Options(String),
    /// The address could not be bound, or the runtime could not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Everything `qaforge serve` is started with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The artifact (.onnx, or .ort with ONNX Runtime).
    pub artifact: PathBuf,
    /// Model directory with tokenizer.json or vocab.txt.
    pub tokenizer: PathBuf,
    /// The engine.
    pub engine: EngineChoice,
    /// `--engine auto`: tract where `engine` would not compute the artifact exactly on this CPU.
    pub exact_fallback: bool,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// The address to listen on.
    pub address: SocketAddr,
    /// Padded tokens a batch may reach (rows × longest row).
    pub max_batch_tokens: usize,
    /// Windows a batch may hold.
    pub max_batch_requests: usize,
    /// How long a batch's first window may wait for company.
    pub max_batch_delay: Duration,
    /// Requests answered at once; one more is refused with 429 at once.
    pub max_concurrent_requests: usize,
    /// Questions in one request.
    pub max_client_batch_size: usize,
    /// Windows one request may split into.
    pub max_windows_per_request: usize,
    /// Largest body, in bytes.
    pub payload_limit: usize,
    /// Time a request may take before it is answered 408 and its work cancelled.
    pub request_timeout: Duration,
    /// A Bearer token every request but the health checks must carry.
    pub api_key: Option<String>,
    /// The `qaforge verify` report of this artifact, whose verdict `/info` gives.
    pub report: Option<PathBuf>,
    /// Cores for the engine.
    pub cores: usize,
    /// ONNX Runtime sessions side by side, the cores split between them.
    pub sessions: usize,
    /// Test hook: questions named `__qaforge_fault_*__` make the request handler panic or the
    /// engine's batch fail or panic, to prove what the server does then (hidden from help).
    pub faults: bool,
}

/// The loaded model: what `/predict` and `/info` read once the server is ready.
pub(crate) struct Model {
    pub artifact: LoadedArtifact,
    pub tokenizer: QaTokenizer,
    pub batcher: Batcher,
    pub info: serde_json::Value,
    pub max_positions: usize,
}

/// What every handler shares.
pub(crate) struct AppState {
    pub options: ServeOptions,
    pub model: OnceLock<Model>,
    pub ready: AtomicBool,
    pub shutting_down: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Semaphore>,
    pub next_id: AtomicU64,
    /// Ends the server when loading failed (signals end it otherwise).
    pub stop: tokio::sync::Notify,
}

/// Loads the artifact and serves it on `options.address` until SIGTERM or Ctrl-C; returns once
/// every request in flight has been answered.
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    if options.max_batch_tokens == 0
        || options.max_batch_requests == 0
        || options.max_concurrent_requests == 0
        || options.max_client_batch_size == 0
        || options.max_windows_per_request == 0
        || options.sessions == 0
    {
        return Err(ServeError::Options("the --max-* limits and --sessions take a number of at least 1".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("qaforge-http")
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io { what: "starting the HTTP runtime".into(), source })?;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState {
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
        options,
        model: OnceLock::new(),
        ready: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        metrics,
        next_id: AtomicU64::new(1),
        stop: tokio::sync::Notify::new(),
    });
    // Listening first: /health answers and /ready says 503 while the model loads and warms up.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(state.options.address))
        .map_err(|source| ServeError::Io { what: format!("listening on {}", state.options.address), source })?;
    let address =
        listener.local_addr().map_err(|source| ServeError::Io { what: "reading the bound address".into(), source })?;
    let server = runtime.spawn(routes::run(listener, state.clone()));
    tracing::info!(%address, artifact = %state.options.artifact.display(), "listening; loading the model");
    let loaded = load(&state.options, &state.metrics).and_then(|model| {
        warm_up(&model)?;
        Ok(model)
    });
    match loaded {
        Ok(model) => {
            let batching = model.info["batching"]["mode"].as_str().unwrap_or_default().to_string();
            let _ = state.model.set(model);
            state.ready.store(true, Ordering::SeqCst);
            tracing::info!(%address, batching, "ready");
        }
        Err(e) => {
            state.shutting_down.store(true, Ordering::SeqCst);
            state.stop.notify_one();
            let _ = runtime.block_on(server);
            return Err(e);
        }
    }
    let served = runtime.block_on(server);
    // Every request is answered: the batcher finishes what it holds, and its threads end.
    if let Some(model) = state.model.get() {
        model.batcher.shutdown();
    }
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Io { what: "serving".into(), source }),
        Err(e) => Err(ServeError::Options(format!("the server stopped: {e}"))),
    }
}

/// Loads the artifact and tokenizer, checks the report, and starts the batcher.
fn load(options: &ServeOptions, metrics: &Arc<Metrics>) -> Result<Model, ServeError> {
    let artifact = LoadedArtifact::open(
        &options.artifact,
        &options.engine,
        options.exact_fallback,
        options.input_names.as_deref(),
    )?;
    let tokenizer = QaTokenizer::from_model_dir(&options.tokenizer).map_err(qaforge_pipeline::PipelineError::from)?;
    let verification = match &options.report {
        Some(path) => Some(read_report(path, &artifact)?),
        None => None,
    };
    let engines: Vec<Arc<dyn Engine>> = match artifact.chosen.engine {
        EngineChoice::Tract => vec![Arc::from(artifact.engine(1)?)],
        EngineChoice::OnnxRuntime { .. } => {
            let threads = (options.cores / options.sessions).max(1);
            (0..options.sessions).map(|_| artifact.engine(threads).map(Arc::from)).collect::<Result<Vec<_>, _>>()?
        }
    };
    let workers = match artifact.chosen.engine {
        EngineChoice::Tract => options.cores.max(1),
        EngineChoice::OnnxRuntime { .. } => engines.len(),
    };
    let max_rows = if artifact.coupling.is_some() { 1 } else { options.max_batch_requests };
    let batcher = Batcher::start(
        engines.clone(),
        workers,
        BatcherOptions {
            budget: BatchBudget { max_tokens: options.max_batch_tokens, max_rows },
            max_delay: options.max_batch_delay,
        },
        metrics.clone(),
    )
    .map_err(|source| ServeError::Io { what: "starting the batcher's threads".into(), source })?;
    let max_positions = max_positions(&artifact);
    // The precision verify would judge it at: the recorded key unless the operators contradict it
    // (a quantized graph carrying its float input's copied metadata).
    let (precision, precision_source) = match qaforge_onnx::artifact_precision(&artifact.model) {
        Ok((precision, source)) => (Some(precision.as_str()), source),
        Err(why) => (None, why),
    };
    let info = serde_json::json!({
        "qaforge": env!("CARGO_PKG_VERSION"),
        "artifact": options.artifact.display().to_string(),
        "sha256": artifact.sha256,
        "precision": precision,
        "precision_source": precision_source,
        "provenance": artifact.model.metadata_props.iter().map(|p| (p.key.clone(), serde_json::Value::from(p.value.as_str()))).collect::<serde_json::Map<_, _>>(),
        "tokenizer": options.tokenizer.display().to_string(),
        "engine": engines[0].description(),
        "engine_exact": artifact.chosen.exactness == qaforge_runtime::Exactness::Exact,
        "engine_instead_because": artifact.chosen.instead_because,
        "batching": match &artifact.coupling {
            Some(why) => serde_json::json!({"mode": "each window alone", "why": why, "max_batch_tokens": options.max_batch_tokens}),
            None => serde_json::json!({"mode": "dynamic", "why": "every window's logits are computed alone in its row", "max_batch_tokens": options.max_batch_tokens, "max_batch_requests": options.max_batch_requests, "max_batch_delay_us": options.max_batch_delay.as_micros() as u64}),
        },
        "limits": {
            "max_concurrent_requests": options.max_concurrent_requests,
            "max_client_batch_size": options.max_client_batch_size,
            "max_windows_per_request": options.max_windows_per_request,
            "payload_limit": options.payload_limit,
            "request_timeout_ms": options.request_timeout.as_millis() as u64,
            "max_seq_len": max_positions,
        },
        "defaults": {"top_k": 1, "max_answer_len": 30, "doc_stride": 128, "max_seq_len": 384, "handle_impossible_answer": "as verified: no answer where the null score beats the best span"},
        "verification": verification,
    });
    Ok(Model { artifact, tokenizer, batcher, info, max_positions })
}

/// The longest window the artifact's position table takes (512 where its graph does not say).
fn max_positions(artifact: &LoadedArtifact) -> usize {
    let graph = artifact.model.graph.as_ref();
    let table = graph.and_then(|g| {
        let rows: Vec<i64> = g
            .initializer
            .iter()
            .filter(|t| t.name.contains("position_embeddings") && t.dims.len() == 2)
            .map(|t| t.dims[0])
            .collect();
        rows.into_iter().min()
    });
    table.and_then(|rows| usize::try_from(rows).ok()).filter(|&r| r >= 16).unwrap_or(512)
}

/// The verify report at `path`, checked to be this artifact's, as `/info` gives it.
fn read_report(path: &std::path::Path, artifact: &LoadedArtifact) -> Result<serde_json::Value, ServeError> {
    let bytes =
        std::fs::read(path).map_err(|source| qaforge_pipeline::PipelineError::Io { path: path.to_owned(), source })?;
    let report: qaforge_verify::Report = serde_json::from_slice(&bytes)
        .map_err(|e| ServeError::Options(format!("{}: not a qaforge verify report: {e}", path.display())))?;
    if report.run.sha256 != artifact.sha256 {
        return Err(ServeError::Options(format!(
            "{}: the report verifies the artifact {}, not {} ({}): verify this artifact and pass its report",
            path.display(),
            report.run.sha256,
            artifact.path.display(),
            artifact.sha256
        )));
    }
    if report.verdict != qaforge_verify::Verdict::Pass {
        tracing::warn!(report = %path.display(), verdict = %report.verdict, "the artifact's verify report does not say PASS");
    }
    Ok(serde_json::json!({
        "report": path.display().to_string(),
        "verdict": report.verdict,
        "precision": report.run.precision,
        "golden": report.run.golden.display().to_string(),
        "engine": report.computed_on(),
        "f1": report.squad.artifact.f1,
        "reference_f1": report.squad.reference.f1,
        "agreement_f1": report.squad.agreement_f1,
        "questions": report.squad.questions,
        "failures": report.failures,
    }))
}

/// One question through the whole path (tokenizer, batcher, engine, post-processing) before the
/// server says it is ready.
fn warm_up(model: &Model) -> Result<(), ServeError> {
    let input = api::QaInput {
        question: "What does the server do first?".into(),
        context: "Before it says it is ready, the server answers one question.".into(),
    };
    let windows = routes::windows_of(model, &[input], &api::Parameters::default(), usize::MAX)
        .map_err(|e| ServeError::Options(format!("warm-up: {}", e.message())))?;
    let metrics = Metrics::new();
    for receiver in model.batcher.submit(windows.into_iter().flat_map(|(_, w)| w).collect(), &metrics) {
        match receiver.blocking_recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ServeError::Options(format!("warm-up: {e}"))),
            Err(_) => return Err(ServeError::Options("warm-up: the batcher stopped".into())),
        }
    }
    Ok(())
}
