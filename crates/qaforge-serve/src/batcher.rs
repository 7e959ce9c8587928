//! The dynamic batcher: every request's windows join one queue, which fills while the engines run;
//! an engine that comes free takes its next batch from it then (up to the token budget and the
//! request count, waiting up to `max_delay` for company), so a batch holds every window that
//! arrived while the previous ones ran. Results go back to their requests, and a window whose
//! request has gone (timed out, client disconnected) is skipped, never computed.
//!
//! Which windows: the oldest always (no window waits behind younger ones for ever), then those of
//! the most similar length, as long as padding stays within [`MAX_PADDING`] of the real work, and
//! no more than an even share of the queue when several engines are free, so that every core
//! works. On a CPU a batch saves little (ONNX Runtime on 2 cores, the trained fixture's windows of
//! ~160 tokens: 1.06-1.28× the windows/s of one at a time in one session, nothing with a session
//! per core) and padding costs in full: batches are taken for what they save, never padded blind.
//! A batch gathered ahead of time (an earlier design) was formed from the one or two windows
//! queued at that moment and then waited its turn: 27 questions/s under wrk at concurrency 8
//! against 40 for `answer --batch`.
//!
//! What may share a batch: windows of the same length limit (MobileBERT's trigram embedding makes
//! a full-length window's last token see the padding after it), and, where the artifact couples
//! the rows of a batch (int8-dynamic, float16), one window alone, so that no neighbour can change an answer.
//! Hand-written rather than taken from text-embeddings-inference (whose queue.rs it follows):
//! that router is a binary, not a library, and batches embeddings of one length rule.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qaforge_runtime::{BatchBudget, Engine};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// One window's inputs: its token ids and types (real tokens only), and the length limit of the
/// request it came from.
#[derive(Debug, Clone)]
pub struct Window {
    /// Token ids.
    pub ids: Vec<i64>,
    /// Token type ids.
    pub types: Vec<i64>,
    /// The request's `max_seq_len`: windows of one limit share batches.
    pub max_length: usize,
    /// A fault the test hook injects into this window's batch ([`crate::ServeOptions::faults`]).
    pub fault: Option<Fault>,
}

/// What the test hook can make an engine's batch do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail, as an engine that cannot run the batch does.
    EngineError,
    /// Panic inside the engine's call.
    EnginePanic,
}

/// One window's logits over its real tokens, and what it cost.
#[derive(Debug, Clone)]
pub struct WindowLogits {
    /// Start logits.
    pub start: Vec<f32>,
    /// End logits.
    pub end: Vec<f32>,
    /// Time in the queue.
    pub queued: Duration,
    /// Time of the batch it ran in.
    pub inference: Duration,
}

/// Why a window got no logits: the engine failed (or panicked) on its batch.
pub type EngineFailure = String;

type Reply = oneshot::Sender<Result<WindowLogits, EngineFailure>>;

struct Entry {
    window: Window,
    enqueued: Instant,
    reply: Reply,
}

struct Batch {
    entries: Vec<Entry>,
    started: Instant,
}

/// The windows waiting, and how many engines wait for them.
struct Pending {
    entries: VecDeque<Entry>,
    idle_engines: usize,
}

struct Queue {
    pending: Mutex<Pending>,
    arrived: Condvar,
    closed: AtomicBool,
}

/// The padded tokens a batch may compute per token of its windows (each padded by one, as alone):
/// ONNX Runtime's gain from batching on 2 cores was 6-28% (2 to 4 windows of 160-256 tokens),
/// so more padding than 1/8 loses more than the batch saves.
pub const MAX_PADDING: f64 = 1.125;

/// How far into the queue the windows of similar length are looked for.
const LOOKAHEAD: usize = 64;

/// How the batcher fills batches.
#[derive(Debug, Clone, Copy)]
pub struct BatcherOptions {
    /// Padded tokens and windows a batch may hold (`max_rows` 1 where rows are coupled).
    pub budget: BatchBudget,
    /// How long the first window of a batch may wait for company (0: never).
    pub max_delay: Duration,
}

/// The queue, its gathering thread and the engine's threads.
pub struct Batcher {
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts one engine thread per session in `engines` (each its own ONNX Runtime session), or
    /// `workers` threads sharing one tract engine; each takes its next batch from the queue when
    /// it comes free.
    pub fn start(
        engines: Vec<Arc<dyn Engine>>,
        workers: usize,
        options: BatcherOptions,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending { entries: VecDeque::new(), idle_engines: 0 }),
            arrived: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for k in 0..workers.max(1) {
            let engine = engines[k % engines.len()].clone();
            let (queue, metrics) = (queue.clone(), metrics.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("qaforge-engine-{k}"))
                    .spawn(move || run(engine.as_ref(), &queue, options, &metrics))?,
            );
        }
        Ok(Batcher { queue, threads: Mutex::new(threads) })
    }

    /// Queues `windows`; each receiver gets its window's logits (or the engine's failure). Dropping
    /// a receiver cancels its window if it has not run yet.
    pub fn submit(
        &self,
        windows: Vec<Window>,
        metrics: &Metrics,
    ) -> Vec<oneshot::Receiver<Result<WindowLogits, EngineFailure>>> {
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(windows.len());
        let mut pending = self.queue.pending.lock().unwrap_or_else(|p| p.into_inner());
        for window in windows {
            let (reply, receiver) = oneshot::channel();
            pending.entries.push_back(Entry { window, enqueued: now, reply });
            receivers.push(receiver);
        }
        metrics.queue_size.set(pending.entries.len() as i64);
        drop(pending);
        self.queue.arrived.notify_one();
        receivers
    }

    /// Lets the engines end once the queue is empty, and waits for them to finish what they hold.
    pub fn shutdown(&self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.arrived.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Window {
    /// The length this window pads its batch to: one padding token past its last, within its
    /// limit (as verify and `answer` pad a window).
    fn padded_length(&self) -> usize {
        (self.ids.len() + 1).min(self.max_length.max(self.ids.len()))
    }
}

/// The padded length of a batch: its longest window's.
fn padded(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.window.padded_length()).max().unwrap_or(1)
}

/// The next batch for an engine that has come free, or `None` once the queue is closed and empty.
fn next_batch(queue: &Queue, options: BatcherOptions, metrics: &Metrics) -> Option<Batch> {
    let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
    pending.idle_engines += 1;
    let batch = loop {
        // A request that has gone (timed out, disconnected) is not computed.
        pending.entries.retain(|e| !e.reply.is_closed());
        if pending.entries.is_empty() {
            if queue.closed.load(Ordering::SeqCst) {
                pending.idle_engines -= 1;
                return None;
            }
            pending = queue.arrived.wait(pending).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        if !options.max_delay.is_zero()
            && pending.entries.len() < options.budget.max_rows
            && !queue.closed.load(Ordering::SeqCst)
        {
            // Wait for company up to max_delay after the oldest window arrived.
            let deadline = pending.entries.front().map_or_else(Instant::now, |e| e.enqueued + options.max_delay);
            let now = Instant::now();
            if now < deadline {
                pending = queue.arrived.wait_timeout(pending, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
        }
        let share = pending.entries.len().div_ceil(pending.idle_engines.max(1));
        break take_batch(&mut pending.entries, options.budget, share);
    };
    pending.idle_engines -= 1;
    metrics.queue_size.set(pending.entries.len() as i64);
    if !pending.entries.is_empty() {
        // Windows are left: another free engine may take them.
        queue.arrived.notify_one();
    }
    Some(Batch { entries: batch, started: Instant::now() })
}

/// Takes a batch out of `entries` (not empty): the oldest window, then those of the most similar
/// length within [`LOOKAHEAD`], while the batch fits `budget`, its padding stays within
/// [`MAX_PADDING`], and it holds no more than `share` windows.
fn take_batch(entries: &mut VecDeque<Entry>, budget: BatchBudget, share: usize) -> Vec<Entry> {
    let Some(first) = entries.pop_front() else {
        return Vec::new();
    };
    let (limit, target) = (first.window.max_length, first.window.padded_length());
    let mut candidates: Vec<usize> =
        (0..entries.len().min(LOOKAHEAD)).filter(|&i| entries[i].window.max_length == limit).collect();
    candidates.sort_by_key(|&i| (entries[i].window.padded_length().abs_diff(target), i));
    let (mut chosen, mut longest, mut work) = (Vec::new(), target, target);
    for i in candidates {
        if chosen.len() + 1 >= share.min(budget.max_rows) {
            break;
        }
        let length = entries[i].window.padded_length();
        let (rows, wider) = (chosen.len() + 2, longest.max(length));
        if budget.fits(rows, wider) && (rows * wider) as f64 <= MAX_PADDING * (work + length) as f64 {
            chosen.push(i);
            (longest, work) = (wider, work + length);
        }
    }
    // Out of the queue from the back, so that the indices still hold.
    chosen.sort_unstable();
    let mut batch = vec![first];
    let mut taken: Vec<Entry> = chosen.iter().rev().filter_map(|&i| entries.remove(i)).collect();
    taken.reverse();
    batch.extend(taken);
    batch
}

/// An engine thread: runs batches until the queue is closed and empty.
fn run(engine: &dyn Engine, queue: &Queue, options: BatcherOptions, metrics: &Metrics) {
    while let Some(batch) = next_batch(queue, options, metrics) {
        let (entries, len) = (&batch.entries, padded(&batch.entries));
        let rows = entries.len();
        let (mut ids, mut mask, mut types) = (vec![0i64; rows * len], vec![0i64; rows * len], vec![0i64; rows * len]);
        for (r, e) in entries.iter().enumerate() {
            let n = e.window.ids.len();
            ids[r * len..r * len + n].copy_from_slice(&e.window.ids);
            types[r * len..r * len + n].copy_from_slice(&e.window.types);
            mask[r * len..r * len + n].fill(1);
        }
        let real: usize = entries.iter().map(|e| e.window.ids.len()).sum();
        metrics.batch_size.observe(rows as f64);
        metrics.batch_tokens.observe((rows * len) as f64);
        metrics.padding_ratio.observe((rows * len) as f64 / real.max(1) as f64);
        let started = Instant::now();
        let fault = entries.iter().find_map(|e| e.window.fault);
        // A panic in an engine is the batch's failure, not the server's end.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match fault {
            None => engine.run_batch(rows, len, ids, mask, types),
            Some(Fault::EngineError) => Err(qaforge_runtime::RuntimeError {
                path: engine.label().to_owned(),
                message: "injected engine failure (fault injection)".into(),
            }),
            Some(Fault::EnginePanic) => panic!("injected engine panic (fault injection)"),
        }));
        let inference = started.elapsed();
        let result = match outcome {
            Ok(Ok(logits)) => Ok(logits),
            Ok(Err(e)) => Err(format!("the engine failed: {e}")),
            Err(panic) => Err(format!(
                "the engine panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        for (r, entry) in batch.entries.into_iter().enumerate() {
            let n = entry.window.ids.len();
            let reply = match &result {
                Ok((start, end)) => Ok(WindowLogits {
                    start: start[r * len..r * len + n].to_vec(),
                    end: end[r * len..r * len + n].to_vec(),
                    queued: batch.started.saturating_duration_since(entry.enqueued),
                    inference,
                }),
                Err(e) => Err(e.clone()),
            };
            // The request may have gone meanwhile: nothing to do then.
            let _ = entry.reply.send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qaforge_runtime::{RuntimeError, TensorOutputs};
    use std::path::Path;

    /// A stand-in engine: each row's logits are its token ids plus the batch's size (so a test
    /// can tell which windows shared a batch), and a row whose first id is 666 fails the batch.
    struct Echo;

    impl Engine for Echo {
        fn label(&self) -> &Path {
            Path::new("echo")
        }
        fn description(&self) -> String {
            "echo".into()
        }
        fn run_outputs(
            &self,
            batch: usize,
            len: usize,
            ids: Vec<i64>,
            _mask: Vec<i64>,
            _types: Vec<i64>,
        ) -> Result<TensorOutputs, RuntimeError> {
            if ids.chunks(len).any(|row| row[0] == 666) {
                return Err(RuntimeError { path: "echo".into(), message: "bad row".into() });
            }
            if ids.chunks(len).any(|row| row[0] == 999) {
                panic!("boom");
            }
            let values: Vec<f32> = ids.iter().map(|&v| v as f32 + batch as f32).collect();
            Ok(vec![(vec![batch, len], values.clone()), (vec![batch, len], values)])
        }
    }

    fn window(first: i64, n: usize) -> Window {
        Window { ids: (0..n as i64).map(|k| first + k).collect(), types: vec![0; n], max_length: 384, fault: None }
    }

    fn batcher(max_rows: usize, max_delay: Duration) -> Batcher {
        let engines: Vec<Arc<dyn Engine>> = vec![Arc::new(Echo)];
        Batcher::start(
            engines,
            1,
            BatcherOptions { budget: BatchBudget { max_tokens: 1 << 20, max_rows }, max_delay },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    #[test]
    fn windows_come_back_to_their_requests_batched_or_alone() {
        let metrics = Metrics::new();
        let together = batcher(64, Duration::from_millis(200));
        let receivers = together.submit(vec![window(10, 3), window(20, 4)], &metrics);
        let logits: Vec<WindowLogits> = receivers.into_iter().map(|r| r.blocking_recv().unwrap().unwrap()).collect();
        assert_eq!(logits[0].start, vec![12.0, 13.0, 14.0], "3 real tokens of row 0, batch of 2");
        assert_eq!(logits[1].start.len(), 4);
        together.shutdown();
        let alone = batcher(1, Duration::ZERO);
        let receivers = alone.submit(vec![window(10, 3), window(20, 5)], &metrics);
        let logits: Vec<WindowLogits> = receivers.into_iter().map(|r| r.blocking_recv().unwrap().unwrap()).collect();
        assert_eq!(logits[0].start, vec![11.0, 12.0, 13.0], "coupled rows run alone");
        alone.shutdown();
    }

    /// Queue entries of these real lengths (one window each), and their receivers.
    fn queued(lengths: &[usize]) -> (VecDeque<Entry>, Vec<oneshot::Receiver<Result<WindowLogits, EngineFailure>>>) {
        let now = Instant::now();
        lengths
            .iter()
            .map(|&n| {
                let (reply, receiver) = oneshot::channel();
                (Entry { window: window(1, n), enqueued: now, reply }, receiver)
            })
            .unzip()
    }

    fn lengths(batch: &[Entry]) -> Vec<usize> {
        batch.iter().map(|e| e.window.ids.len()).collect()
    }

    #[test]
    fn a_batch_takes_the_oldest_window_then_the_closest_lengths_within_the_padding_bound() {
        let budget = BatchBudget { max_tokens: 4096, max_rows: 64 };
        let (mut entries, _receivers) = queued(&[100, 300, 101, 99, 250, 100]);
        let batch = take_batch(&mut entries, budget, usize::MAX);
        assert_eq!(lengths(&batch), vec![100, 101, 99, 100], "the oldest, then the similar ones, in queue order");
        assert_eq!(lengths(entries.make_contiguous()), vec![300, 250], "the rest wait, in order");
        // 250 beside 300 pads 50 of 551 real tokens: within 1/8.
        let batch = take_batch(&mut entries, budget, usize::MAX);
        assert_eq!(lengths(&batch), vec![300, 250]);
        assert!(entries.is_empty());
        // 100 beside 300 would pad 200 of 402: each runs alone.
        let (mut entries, _receivers) = queued(&[300, 100]);
        assert_eq!(lengths(&take_batch(&mut entries, budget, usize::MAX)), vec![300]);
        assert_eq!(lengths(&take_batch(&mut entries, budget, usize::MAX)), vec![100]);
    }

    #[test]
    fn a_batch_keeps_to_the_token_budget_the_row_limit_and_its_share() {
        let (mut entries, _receivers) = queued(&[100; 10]);
        let budget = BatchBudget { max_tokens: 404, max_rows: 64 };
        assert_eq!(take_batch(&mut entries, budget, usize::MAX).len(), 4, "4 × 101 padded tokens fit 404");
        let budget = BatchBudget { max_tokens: 1 << 20, max_rows: 3 };
        assert_eq!(take_batch(&mut entries, budget, usize::MAX).len(), 3);
        assert_eq!(take_batch(&mut entries, budget, 2).len(), 2, "two free engines share 3 windows 2 + 1");
        assert_eq!(take_batch(&mut entries, budget, 2).len(), 1);
        assert!(entries.is_empty());
    }

    #[test]
    fn a_failing_or_panicking_batch_fails_its_windows_and_the_batcher_goes_on() {
        let metrics = Metrics::new();
        let b = batcher(1, Duration::ZERO);
        for bad in [666, 999] {
            let failed = b.submit(vec![window(bad, 2)], &metrics).remove(0).blocking_recv().unwrap();
            assert!(failed.is_err(), "{failed:?}");
        }
        let fine = b.submit(vec![window(1, 2)], &metrics).remove(0).blocking_recv().unwrap();
        assert!(fine.is_ok());
        b.shutdown();
    }

    #[test]
    fn a_dropped_receiver_is_not_computed() {
        let metrics = Metrics::new();
        let b = batcher(64, Duration::from_millis(300));
        let mut receivers = b.submit(vec![window(666, 2), window(1, 2)], &metrics);
        // The failing window's request has gone: the other window runs and succeeds.
        drop(receivers.remove(0));
        assert!(receivers.remove(0).blocking_recv().unwrap().is_ok());
        b.shutdown();
    }
}
