//! The server's metrics in Prometheus' (OpenMetrics) text format, every one registered at start
//! (each failure cause too) so that a scrape before the first request already lists them.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a request failed, as the `cause` label and the error body's `error_type` say it.
pub const CAUSES: [&str; 8] =
    ["validation", "payload_too_large", "overloaded", "timeout", "unauthorized", "backend", "unavailable", "internal"];

type Labels = Vec<(String, String)>;

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests to `/predict`.
    pub requests: Counter,
    /// Requests answered 200.
    pub successes: Counter,
    failures: Family<Labels, Counter>,
    /// Whole request time, seconds.
    pub request_duration: Histogram,
    /// Time a request's windows waited in the queue (the longest of them), seconds.
    pub queue_duration: Histogram,
    /// Tokenization time, seconds.
    pub tokenization_duration: Histogram,
    /// Inference time of the batches a request's windows ran in (the longest), seconds.
    pub inference_duration: Histogram,
    /// Windows per batch.
    pub batch_size: Histogram,
    /// Padded tokens per batch (rows × longest row).
    pub batch_tokens: Histogram,
    /// Padded tokens over real tokens, per batch.
    pub padding_ratio: Histogram,
    /// Windows waiting in the queue.
    pub queue_size: Gauge,
    /// Requests being answered.
    pub in_flight: Gauge,
}

impl Metrics {
    /// Registers every metric, every failure cause at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let seconds = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let metrics = Metrics {
            requests: Counter::default(),
            successes: Counter::default(),
            failures: Family::default(),
            request_duration: seconds(),
            queue_duration: seconds(),
            tokenization_duration: seconds(),
            inference_duration: seconds(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            batch_tokens: Histogram::new(exponential_buckets(64.0, 2.0, 11)),
            padding_ratio: Histogram::new([1.0, 1.01, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0]),
            queue_size: Gauge::default(),
            in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("qaforge_request_count", "Requests to /predict", metrics.requests.clone());
        registry.register("qaforge_request_success", "Requests answered 200", metrics.successes.clone());
        registry.register("qaforge_request_failure", "Requests that failed, by cause", metrics.failures.clone());
        registry.register("qaforge_request_duration_seconds", "Whole request time", metrics.request_duration.clone());
        registry.register(
            "qaforge_request_queue_duration_seconds",
            "Time a request's windows waited for a batch",
            metrics.queue_duration.clone(),
        );
        registry.register(
            "qaforge_request_tokenization_duration_seconds",
            "Tokenization time of a request",
            metrics.tokenization_duration.clone(),
        );
        registry.register(
            "qaforge_request_inference_duration_seconds",
            "Inference time of the batches a request ran in",
            metrics.inference_duration.clone(),
        );
        registry.register("qaforge_batch_size", "Windows per batch", metrics.batch_size.clone());
        registry.register(
            "qaforge_batch_tokens",
            "Padded tokens per batch (rows x longest row)",
            metrics.batch_tokens.clone(),
        );
        registry.register(
            "qaforge_batch_padding_ratio",
            "Padded tokens over real tokens, per batch",
            metrics.padding_ratio.clone(),
        );
        registry.register("qaforge_queue_size", "Windows waiting for a batch", metrics.queue_size.clone());
        registry.register("qaforge_requests_in_flight", "Requests being answered", metrics.in_flight.clone());
        for cause in CAUSES {
            let _ = metrics.failures.get_or_create(&vec![("cause".to_string(), cause.to_string())]);
        }
        Metrics { registry, ..metrics }
    }

    /// Counts a failed request.
    pub fn failed(&self, cause: &'static str) {
        self.failures.get_or_create(&vec![("cause".to_string(), cause.to_string())]).inc();
    }

    /// Every metric in the text format (`/metrics`).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_exists_before_the_first_request() {
        let text = Metrics::new().render();
        for name in [
            "qaforge_request_count_total",
            "qaforge_request_success_total",
            "qaforge_request_duration_seconds_bucket",
            "qaforge_batch_size_bucket",
            "qaforge_batch_tokens_bucket",
            "qaforge_batch_padding_ratio_bucket",
            "qaforge_queue_size",
            "qaforge_request_queue_duration_seconds_count",
            "qaforge_request_tokenization_duration_seconds_count",
            "qaforge_request_inference_duration_seconds_count",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        for cause in CAUSES {
            assert!(
                text.contains(&format!("qaforge_request_failure_total{{cause=\"{cause}\"}} 0")),
                "{cause}:\n{text}"
            );
        }
    }
}
