//! `qaforge serve`.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{EngineArgs, InputNamesArg};

/// Serve an artifact over HTTP: POST /predict answers questions with the request and answer
/// shapes of transformers' question-answering pipeline (and Hugging Face's inference API), through
/// a dynamic batcher; GET /health, /ready, /info and /metrics (Prometheus), and KServe's
/// /v2/health/live and /v2/health/ready. SIGTERM or Ctrl-C: /ready turns 503, the requests in
/// flight are answered, then it exits 0. See docs/serve.md.
#[derive(Args)]
pub struct ServeArgs {
    /// The ONNX artifact (verify it first: --report gives /info its verdict).
    artifact: PathBuf,
    /// Model directory with tokenizer.json or vocab.txt.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The address to listen on (a container or a cloud endpoint: 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port (0: any free port, printed in the first log line).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The padded tokens one batch may reach (windows × its longest window; larger batches leave
    /// the cache, docs/benchmarks.md).
    #[arg(long, default_value_t = qaforge_pipeline::batch::BatchOptions::default().max_batch_tokens)]
    max_batch_tokens: usize,
    /// The windows (rows) one batch may hold.
    #[arg(long, default_value_t = 64)]
    max_batch_requests: usize,
    /// How long a batch's first window may wait for company, in microseconds (0: never wait;
    /// batches still form from what queues while the engine is busy).
    #[arg(long, default_value_t = 0)]
    max_batch_delay_us: u64,
    /// Requests answered at once; one more is refused with 429 and Retry-After at once.
    #[arg(long, default_value_t = 64)]
    max_concurrent_requests: usize,
    /// Questions one request may hold (`inputs` as a list).
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Windows one request's contexts may split into; more is refused with 422.
    #[arg(long, default_value_t = 64)]
    max_windows_per_request: usize,
    /// The largest request body, in bytes; larger is refused with 413.
    #[arg(long, default_value_t = 2 << 20)]
    payload_limit: usize,
    /// Time a request may take; past it the answer is 408 and its work cancelled.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Require `Authorization: Bearer <KEY>` on /predict and /info (default: $QAFORGE_API_KEY).
    #[arg(long, env = "QAFORGE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// This artifact's `qaforge verify --report` JSON: /info gives its verdict (refused if it
    /// verifies another artifact).
    #[arg(long)]
    report: Option<PathBuf>,
    /// ONNX Runtime sessions run side by side, the cores split between them.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Logs as JSON, a line an event.
    #[arg(long)]
    json_output: bool,
    /// Test hook: questions `__qaforge_fault_handler-panic__`, `__qaforge_fault_engine-error__`
    /// and `__qaforge_fault_engine-panic__` make that happen, to prove what the server does then.
    #[arg(long, hide = true)]
    fault_injection: bool,
    #[command(flatten)]
    inputs: InputNamesArg,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Serves until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    if args.json_output {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let (engine, exact_fallback) = args.engine.resolve()?;
    qaforge_serve::serve(qaforge_serve::ServeOptions {
        artifact: args.artifact,
        tokenizer: args.tokenizer,
        engine,
        exact_fallback,
        input_names: args.inputs.input_names,
        address: SocketAddr::new(args.host, args.port),
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        max_batch_delay: Duration::from_micros(args.max_batch_delay_us),
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        max_windows_per_request: args.max_windows_per_request,
        payload_limit: args.payload_limit,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        api_key: args.api_key,
        report: args.report,
        cores: super::cores(),
        sessions: args.sessions,
        faults: args.fault_injection,
    })?;
    Ok(ExitCode::SUCCESS)
}
