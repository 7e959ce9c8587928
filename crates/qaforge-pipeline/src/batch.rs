//! `qaforge answer --batch`: every question of a file answered in batches under a token budget,
//! each batch padded only to its longest window, and the predictions written for `qaforge eval`.
//!
//! Questions are taken a bounded number at a time (`lookahead`): their windows are sorted by
//! length, cut into batches whose padded cost fits the budget, and run on every core. The
//! predictions come out in file order, and a question's answer depends on neither the look-ahead
//! nor the batches: every window's logits are its own (an artifact whose arithmetic couples the
//! rows of a batch, int8-dynamic or float16, runs each window alone, as verify runs it), and a batch is
//! padded exactly as verify pads a window (one padding token past the longest, as run_qa.py's
//! padding lets MobileBERT's trigram embedding see it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use qaforge_runtime::{BatchBudget, Engine, EngineChoice};
use qaforge_squad::{Example, FeatureLogits, FeatureOptions, Features, PostprocessOptions, Prediction, QaTokenizer};

use crate::artifact::LoadedArtifact;
use crate::PipelineError;

/// How batches are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// The padded cost one batch may reach: windows × its longest window, in tokens.
    pub max_batch_tokens: usize,
    /// Questions whose windows are sorted by length together.
    pub lookahead: usize,
    /// ONNX Runtime sessions run side by side, the cores split between them. One a core is
    /// `answer --batch`'s default: on 2 cores, two sessions of one thread answered the trained
    /// fixture's 300 bench questions 1.03× (fp32), 1.09× (int8-static) and 1.23× (int8-dynamic,
    /// whose windows run alone) as fast as one of two threads (medians of 3 runs,
    /// bench/results/serving-2026-12-05-2), since a core that runs its own window waits for no
    /// other inside each operator.
    pub sessions: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        // 1024 padded tokens: about 5 SQuAD windows of ~200 tokens. Larger batches' activations
        // leave the cache: the trained fixture's 300 bench questions in ONNX Runtime on 2 cores
        // ran at 34.5, 35.8, 34.9, 32.3 and 27.7 questions/s with 384, 1024, 2048, 4096 and 8192
        // (2026-12-05, docs/benchmarks.md).
        BatchOptions { max_batch_tokens: 1024, lookahead: 256, sessions: 1 }
    }
}

/// Questions to answer.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The artifact (.onnx, or .ort with ONNX Runtime).
    pub artifact: PathBuf,
    /// Model directory with tokenizer.json or vocab.txt.
    pub tokenizer: PathBuf,
    /// The questions: SQuAD v2-format JSON, or JSON Lines of `{"id", "question", "context"}`.
    pub input: PathBuf,
    /// Where to write the predictions (question id → text, "" for no answer).
    pub output: PathBuf,
    /// Where to write the no-answer odds (question id → null score minus the best span's).
    pub null_odds: Option<PathBuf>,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// The engine that runs the artifact.
    pub engine: EngineChoice,
    /// `--engine auto`: tract where `engine` would not be exact on this CPU.
    pub exact_fallback: bool,
    /// Cores to use.
    pub cores: usize,
    /// How batches are made.
    pub options: BatchOptions,
}

/// What `answer --batch` did.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// The questions answered, and how many of them the model abstained on.
    pub questions: usize,
    /// Of them, answered with no answer.
    pub abstained: usize,
    /// Windows run.
    pub windows: usize,
    /// Batches run.
    pub batches: usize,
    /// Real tokens of every window.
    pub tokens: usize,
    /// Tokens computed, padding included.
    pub padded_tokens: usize,
    /// The engine, and how batches were made.
    pub engine: String,
    /// Where the predictions were written.
    pub output: PathBuf,
    /// Wall time, loading included.
    pub seconds: f64,
    /// Of it, loading: the questions, the tokenizer, the artifact and its engines.
    pub load_seconds: f64,
}

impl BatchOutcome {
    /// Seconds spent answering: tokenizing, running and post-processing, loading excluded.
    pub fn answering_seconds(&self) -> f64 {
        (self.seconds - self.load_seconds).max(1e-9)
    }

    /// The summary as `answer --batch --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "questions": self.questions,
            "abstained": self.abstained,
            "windows": self.windows,
            "batches": self.batches,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "engine": self.engine,
            "output": self.output.display().to_string(),
            "seconds": self.seconds,
            "load_seconds": self.load_seconds,
            "questions_per_second": self.questions as f64 / self.answering_seconds(),
            "windows_per_second": self.windows as f64 / self.answering_seconds(),
        })
    }
}

impl std::fmt::Display for BatchOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_second = |n: usize| n as f64 / self.answering_seconds();
        writeln!(
            f,
            "answered {} questions -> {} ({} without an answer)",
            self.questions,
            self.output.display(),
            self.abstained
        )?;
        writeln!(f, "  engine        {}", self.engine)?;
        writeln!(f, "  windows       {} in {} batches", self.windows, self.batches)?;
        writeln!(
            f,
            "  padding       {:.3}× the real tokens ({} computed for {})",
            self.padded_tokens as f64 / self.tokens.max(1) as f64,
            self.padded_tokens,
            self.tokens
        )?;
        write!(
            f,
            "  time          {:.2} s: {:.2} s loading, then {:.1} questions/s, {:.1} windows/s",
            self.seconds,
            self.load_seconds,
            per_second(self.questions),
            per_second(self.windows)
        )
    }
}

/// Answers every question of `request.input` and writes the predictions. `progress` gets
/// (questions just answered, total).
pub fn answer_batch(
    request: &BatchRequest,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BatchOutcome, PipelineError> {
    let started = Instant::now();
    let options = request.options;
    if options.max_batch_tokens == 0 || options.lookahead == 0 || options.sessions == 0 {
        return Err(PipelineError::Request(
            "--max-batch-tokens, --lookahead and --sessions take a number of at least 1".into(),
        ));
    }
    let examples = qaforge_squad::load_questions(&request.input)?;
    let tokenizer = QaTokenizer::from_model_dir(&request.tokenizer)?;
    let artifact = LoadedArtifact::open(
        &request.artifact,
        &request.engine,
        request.exact_fallback,
        request.input_names.as_deref(),
    )?;
    // ONNX Runtime parallelises inside a run: `sessions` of them share the cores. tract runs each
    // batch on one thread: one engine, a batch per core.
    let sessions = match artifact.chosen.engine {
        EngineChoice::Tract => vec![artifact.engine(1)?],
        EngineChoice::OnnxRuntime { .. } => {
            let threads = (request.cores / options.sessions).max(1);
            (0..options.sessions).map(|_| artifact.engine(threads)).collect::<Result<Vec<_>, _>>()?
        }
    };
    let workers = match artifact.chosen.engine {
        EngineChoice::Tract => request.cores.max(1),
        EngineChoice::OnnxRuntime { .. } => sessions.len(),
    };
    let budget = BatchBudget {
        max_tokens: options.max_batch_tokens,
        max_rows: if artifact.coupling.is_some() { 1 } else { usize::MAX },
    };
    let postprocess = PostprocessOptions::default();
    let mut predictions: Vec<Prediction> = Vec::with_capacity(examples.len());
    let mut totals = BatchOutcome {
        questions: examples.len(),
        abstained: 0,
        windows: 0,
        batches: 0,
        tokens: 0,
        padded_tokens: 0,
        engine: format!(
            "{}{}",
            sessions[0].description(),
            match &artifact.coupling {
                Some(why) => format!("; each window alone: {why}"),
                None => format!("; batches of at most {} padded tokens", options.max_batch_tokens),
            }
        ),
        output: request.output.clone(),
        seconds: 0.0,
        load_seconds: started.elapsed().as_secs_f64(),
    };
    for chunk in examples.chunks(options.lookahead) {
        let features = tokenizer.features(chunk, &FeatureOptions::default())?;
        artifact.check_token_ids(&features)?;
        let padded = |i: usize| (features.length(i) + 1).min(features.max_length);
        let mut order: Vec<usize> = (0..features.count).collect();
        // Stable: windows of equal length keep their file order.
        order.sort_by_key(|&i| features.length(i));
        let batches = qaforge_runtime::pack(&order, padded, budget);
        let logits = run_batches(&sessions, workers, &features, &batches)?;
        totals.windows += features.count;
        totals.batches += batches.len();
        totals.tokens += (0..features.count).map(|i| features.length(i)).sum::<usize>();
        totals.padded_tokens +=
            batches.iter().map(|b| b.len() * b.iter().map(|&i| padded(i)).max().unwrap_or(0)).sum::<usize>();
        predictions.extend(predict_chunk(chunk, &features, &logits, &postprocess));
        progress(chunk.len(), examples.len());
    }
    totals.abstained = predictions.iter().filter(|p| p.text.is_empty()).count();
    let object = |value: &dyn Fn(&Prediction) -> serde_json::Value| -> String {
        // In file order (serde_json's maps sort their keys), one entry a line.
        let entries: Vec<String> = examples
            .iter()
            .zip(&predictions)
            .map(|(e, p)| format!("  {}: {}", serde_json::Value::from(e.id.as_str()), value(p)))
            .collect();
        format!("{{\n{}\n}}\n", entries.join(",\n"))
    };
    qaforge_onnx::write_atomically(&request.output, object(&|p| p.text.as_str().into()).as_bytes())?;
    if let Some(path) = &request.null_odds {
        qaforge_onnx::write_atomically(
            path,
            object(&|p| {
                serde_json::Number::from_f64(p.null_odds.into())
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            })
            .as_bytes(),
        )?;
    }
    totals.seconds = started.elapsed().as_secs_f64();
    Ok(totals)
}

/// Each window's (start, end) logits over its real tokens, from running `batches` of `features`
/// on `workers` threads, each taking the next batch (thread `k` uses session `k % sessions`).
fn run_batches(
    sessions: &[Box<dyn Engine>],
    workers: usize,
    features: &Features,
    batches: &[Vec<usize>],
) -> Result<Vec<(Vec<f32>, Vec<f32>)>, PipelineError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(Vec<f32>, Vec<f32>)>> = Mutex::new(vec![(Vec::new(), Vec::new()); features.count]);
    let failed = Mutex::new(None);
    std::thread::scope(|scope| {
        for worker in 0..workers.min(batches.len()).max(1) {
            let (next, results, failed) = (&next, &results, &failed);
            let engine = &sessions[worker % sessions.len()];
            scope.spawn(move || {
                while let Some(rows) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let batch = features.gather(rows);
                    let len = qaforge_runtime::padded_length(&batch, 0, batch.count);
                    let gather = |v: &[i64]| qaforge_runtime::gather_rows(&batch, v, 0, batch.count, len);
                    match engine.run_batch(
                        batch.count,
                        len,
                        gather(&batch.input_ids),
                        gather(&batch.attention_mask),
                        gather(&batch.token_type_ids),
                    ) {
                        Ok((start, end)) => {
                            let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                            for (r, &i) in rows.iter().enumerate() {
                                let n = batch.length(r);
                                results[i] = (start[r * len..r * len + n].to_vec(), end[r * len..r * len + n].to_vec());
                            }
                        }
                        Err(e) => {
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// run_qa.py's post-processing of each question of `chunk` over its windows' logits (real tokens
/// only, as verify post-processes).
fn predict_chunk(
    chunk: &[Example],
    features: &Features,
    logits: &[(Vec<f32>, Vec<f32>)],
    options: &PostprocessOptions,
) -> Vec<Prediction> {
    let offsets: Vec<Vec<Option<(usize, usize)>>> = (0..features.count).map(|i| features.context_offsets(i)).collect();
    chunk
        .iter()
        .enumerate()
        .map(|(e, example)| {
            let views: Vec<FeatureLogits> = (0..features.count)
                .filter(|&i| features.example_index[i] == e)
                .map(|i| FeatureLogits {
                    start: &logits[i].0,
                    end: &logits[i].1,
                    offsets: &offsets[i][..logits[i].0.len()],
                })
                .collect();
            qaforge_squad::predict(&example.context, &views, options)
        })
        .collect()
}
