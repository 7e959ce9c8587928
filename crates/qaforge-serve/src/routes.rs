//! The routes, their limits and errors, and graceful shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use qaforge_squad::{Example, FeatureLogits, FeatureOptions, PostprocessOptions};

use crate::api::{Answer, Bounds, ErrorBody, Parameters, PredictRequest, QaInput};
use crate::batcher::{Fault, Window, WindowLogits};
use crate::{AppState, Model};

/// A request that could not be answered: its status, kind and words.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Failure { status, kind, message: message.into() }
    }

    /// What went wrong, in words.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { error: self.message, error_type: self.kind })).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The server: every route, the body limit and the panic guard, until a signal (or a failed load)
/// ends it; requests in flight are answered first.
pub(crate) async fn run(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let metrics = state.metrics.clone();
    let app = Router::new()
        .route("/predict", post(predict))
        .route("/health", get(health))
        .route("/v2/health/live", get(health))
        .route("/ready", get(ready))
        .route("/v2/health/ready", get(ready))
        .route("/info", get(info))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::max(state.options.payload_limit))
        // A panic anywhere in a request is answered 500; the server goes on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(move |panic: Box<dyn std::any::Any + Send>| {
            metrics.failed("internal");
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            tracing::error!(panic = %what, "a request panicked");
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the request failed inside the server: {what}"),
            )
            .into_response()
        }))
        .with_state(state.clone());
    let shutdown = {
        let state = state.clone();
        async move {
            tokio::select! {
                _ = terminate() => tracing::info!("shutting down: answering the requests in flight"),
                _ = state.stop.notified() => {}
            }
            // /ready says 503 from now on.
            state.shutting_down.store(true, Ordering::SeqCst);
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// SIGTERM or Ctrl-C.
async fn terminate() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = term => {}
    }
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) && !state.shutting_down.load(Ordering::SeqCst) {
        StatusCode::OK.into_response()
    } else {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            if state.shutting_down.load(Ordering::SeqCst) { "shutting down" } else { "loading the model" },
        )
        .into_response()
    }
}

async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(failure) = authorize(&state, &headers) {
        return failure.into_response();
    }
    match state.model.get() {
        Some(model) => Json(model.info.clone()).into_response(),
        None => Failure::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "loading the model").into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}

/// With `--api-key`, the request must carry `Authorization: Bearer <key>`.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(key) = &state.options.api_key else { return Ok(()) };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time: the key's length is all a timing could tell.
    let matches = given.is_some_and(|g| {
        g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if matches {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs `Authorization: Bearer <key>` (--api-key)",
        ))
    }
}

/// Counts the request's end in the metrics and logs it, a line a request.
struct Outcome<'a> {
    state: &'a AppState,
    id: u64,
    started: Instant,
}

impl Outcome<'_> {
    fn failed(&self, failure: Failure) -> Response {
        self.state.metrics.failed(failure.kind);
        self.state.metrics.request_duration.observe(self.started.elapsed().as_secs_f64());
        tracing::warn!(id = self.id, status = failure.status.as_u16(), error_type = failure.kind, error = %failure.message, "request failed");
        failure.into_response()
    }
}

/// Decrements the in-flight gauge however the request ends (a timeout drops the future).
struct InFlight<'a>(&'a AppState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = Outcome { state: &state, id: state.next_id.fetch_add(1, Ordering::Relaxed), started: Instant::now() };
    state.metrics.requests.inc();
    if let Err(failure) = authorize(&state, &headers) {
        return outcome.failed(failure);
    }
    let Some(model) =
        state.model.get().filter(|_| state.ready.load(Ordering::SeqCst) && !state.shutting_down.load(Ordering::SeqCst))
    else {
        return outcome.failed(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the model is not ready (loading, or shutting down)",
        ));
    };
    // At most --max-concurrent-requests in flight: one more is refused at once, never queued.
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return outcome.failed(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "more than {} requests in flight (--max-concurrent-requests); retry later",
                state.options.max_concurrent_requests
            ),
        ));
    };
    state.metrics.in_flight.inc();
    let _in_flight = InFlight(&state);
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return outcome.failed(Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes (--payload-limit)", state.options.payload_limit),
            ))
        }
        Err(rejection) => {
            return outcome.failed(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", rejection.body_text()))
        }
    };
    let bounds = Bounds { max_inputs: state.options.max_client_batch_size, max_seq_len: model.max_positions };
    let request = match PredictRequest::parse(&body, bounds) {
        Ok(request) => request,
        Err(message) => return outcome.failed(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)),
    };
    let timeout = state.options.request_timeout;
    // Past the timeout the answer's future is dropped, and with it the receivers of its windows:
    // the batcher skips those that have not run.
    match tokio::time::timeout(timeout, answer(&state, model, request, outcome.id)).await {
        Ok(Ok(body)) => {
            state.metrics.successes.inc();
            state.metrics.request_duration.observe(outcome.started.elapsed().as_secs_f64());
            Json(body).into_response()
        }
        Ok(Err(failure)) => outcome.failed(failure),
        Err(_) => outcome.failed(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("not answered within {} ms (--request-timeout-ms); its work was cancelled", timeout.as_millis()),
        )),
    }
}

/// Each input's windows (features built as `qaforge answer` builds them, with the request's
/// length and stride), refused past `max_windows` in all.
pub(crate) fn windows_of(
    model: &Model,
    inputs: &[QaInput],
    parameters: &Parameters,
    max_windows: usize,
) -> Result<Vec<(qaforge_squad::Features, Vec<Window>)>, Failure> {
    let options =
        FeatureOptions { max_length: parameters.max_seq_len, doc_stride: parameters.doc_stride, lstrip_question: true };
    let mut out = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for (i, input) in inputs.iter().enumerate() {
        let example = Example {
            id: format!("inputs[{i}]"),
            title: String::new(),
            question: input.question.clone(),
            context: input.context.clone(),
            answers: vec![],
        };
        let features = model
            .tokenizer
            .features(std::slice::from_ref(&example), &options)
            .map_err(|e| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", format!("inputs[{i}]: {e}")))?;
        model
            .artifact
            .check_token_ids(&features)
            .map_err(|e| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", e.to_string()))?;
        total += features.count;
        if total > max_windows {
            return Err(Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                format!(
                    "the request's contexts split into more than {max_windows} windows (--max-windows-per-request)"
                ),
            ));
        }
        let m = features.max_length;
        let windows = (0..features.count)
            .map(|k| {
                let n = features.length(k);
                Window {
                    ids: features.input_ids[k * m..k * m + n].to_vec(),
                    types: features.token_type_ids[k * m..k * m + n].to_vec(),
                    max_length: m,
                    fault: None,
                }
            })
            .collect();
        out.push((features, windows));
    }
    Ok(out)
}

/// Answers a parsed request: tokenized off the async threads, its windows batched, each input
/// post-processed as `qaforge answer` post-processes it.
async fn answer(
    state: &Arc<AppState>,
    model: &Model,
    request: PredictRequest,
    id: u64,
) -> Result<serde_json::Value, Failure> {
    let tokenizing = Instant::now();
    let fault = if state.options.faults { request.inputs.iter().find_map(|i| fault_of(&i.question)) } else { None };
    if fault == Some("handler-panic") {
        panic!("injected handler panic (fault injection)");
    }
    let parameters = request.parameters;
    let tokenized = {
        let (state, inputs) = (state.clone(), request.inputs.clone());
        let max_windows = state.options.max_windows_per_request;
        tokio::task::spawn_blocking(move || {
            let model = state.model.get().ok_or_else(|| {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the model is not loaded")
            })?;
            windows_of(model, &inputs, &parameters, max_windows)
        })
        .await
        .map_err(|e| {
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("tokenization failed: {e}"))
        })??
    };
    state.metrics.tokenization_duration.observe(tokenizing.elapsed().as_secs_f64());
    let mut counts = Vec::with_capacity(tokenized.len());
    let mut windows = Vec::new();
    let mut features = Vec::with_capacity(tokenized.len());
    for (f, mut w) in tokenized {
        if let Some(kind) = fault {
            for window in &mut w {
                window.fault = match kind {
                    "engine-error" => Some(Fault::EngineError),
                    "engine-panic" => Some(Fault::EnginePanic),
                    _ => None,
                };
            }
        }
        counts.push(w.len());
        windows.extend(w);
        features.push(f);
    }
    let window_count = windows.len();
    let receivers = model.batcher.submit(windows, &state.metrics);
    let mut logits: Vec<WindowLogits> = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        match receiver.await {
            Ok(Ok(l)) => logits.push(l),
            Ok(Err(e)) => return Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", e)),
            Err(_) => return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the batcher stopped")),
        }
    }
    let queued = logits.iter().map(|l| l.queued).max().unwrap_or_default();
    let inference = logits.iter().map(|l| l.inference).max().unwrap_or_default();
    state.metrics.queue_duration.observe(queued.as_secs_f64());
    state.metrics.inference_duration.observe(inference.as_secs_f64());
    let postprocess =
        PostprocessOptions { max_answer_length: parameters.max_answer_len, ..PostprocessOptions::default() };
    let mut results = Vec::with_capacity(request.inputs.len());
    let mut next = 0;
    for ((input, features), count) in request.inputs.iter().zip(&features).zip(counts) {
        let offsets: Vec<Vec<Option<(usize, usize)>>> =
            (0..features.count).map(|k| features.context_offsets(k)).collect();
        let views: Vec<FeatureLogits> = (0..count)
            .map(|k| {
                let l = &logits[next + k];
                FeatureLogits { start: &l.start, end: &l.end, offsets: &offsets[k][..l.start.len()] }
            })
            .collect();
        next += count;
        let ranked = qaforge_squad::predict_ranked(&input.context, &views, &postprocess);
        let answers = answers_of(&ranked, &views, &parameters);
        results.push(if parameters.top_k == 1 {
            serde_json::to_value(&answers[0])
        } else {
            serde_json::to_value(&answers)
        });
    }
    tracing::info!(
        id,
        inputs = request.inputs.len(),
        windows = window_count,
        queue_ms = queued.as_secs_f64() * 1e3,
        inference_ms = inference.as_secs_f64() * 1e3,
        "answered"
    );
    let results: Vec<serde_json::Value> = results
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(if request.listed { serde_json::Value::Array(results) } else { results.into_iter().next().unwrap_or_default() })
}

/// The test hook's fault a question names (`__qaforge_fault_<kind>__`).
fn fault_of(question: &str) -> Option<&'static str> {
    ["handler-panic", "engine-error", "engine-panic"]
        .into_iter()
        .find(|kind| question == format!("__qaforge_fault_{kind}__"))
}

/// The answers of one input, best first: where the verified model abstains (unless
/// `handle_impossible_answer` is false), no answer, then its spans; at least one answer.
fn answers_of(ranked: &qaforge_squad::Ranked, views: &[FeatureLogits<'_>], parameters: &Parameters) -> Vec<Answer> {
    let null_score = views.iter().map(qaforge_squad::null_probability).fold(f64::INFINITY, f64::min);
    let none = Answer {
        score: if null_score.is_finite() { null_score } else { 1.0 },
        start: 0,
        end: 0,
        answer: String::new(),
    };
    let spans = ranked.spans.iter().map(|s| Answer {
        score: qaforge_squad::span_probability(&views[s.feature], s.tokens),
        start: s.chars.0,
        end: s.chars.1,
        answer: s.text.clone(),
    });
    let abstains = parameters.handle_impossible_answer != Some(false) && ranked.prediction.text.is_empty();
    let mut answers: Vec<Answer> = if abstains {
        std::iter::once(none.clone()).chain(spans).take(parameters.top_k).collect()
    } else {
        spans.take(parameters.top_k).collect()
    };
    if answers.is_empty() {
        answers.push(none);
    }
    answers
}
