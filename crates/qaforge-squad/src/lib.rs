//! SQuAD v2 for qaforge: reading data files and the official evaluation metric.
//!
//! The metric restates evaluate-v2.0.py exactly (same normalisation, same order of floating-point
//! operations), so `qaforge eval` prints the same numbers as the official script.

pub mod data;
pub mod features;
pub mod metric;
pub mod postprocess;
pub mod questions;

pub use data::{load_predictions, Example, SquadError, SquadFile};
pub use features::{FeatureOptions, Features, QaTokenizer};
pub use metric::{agreement, evaluate, evaluate_with_thresholds, normalize_answer, Metrics, NoAnswerProbabilities};
pub use postprocess::{
    null_probability, predict, predict_all, predict_ranked, span_probability, FeatureLogits, PostprocessOptions,
    Prediction, Ranked, Span,
};
pub use questions::load_questions;
