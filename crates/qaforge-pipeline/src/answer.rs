//! `qaforge answer`: one question about one context, answered by an artifact in either engine,
//! with the same features and post-processing as verification.

use std::path::PathBuf;

use crate::artifact::LoadedArtifact;
use crate::{EngineChoice, PipelineError};

/// One question to answer.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    /// The artifact (.onnx, or .ort with ONNX Runtime).
    pub artifact: PathBuf,
    /// Model directory with tokenizer.json or vocab.txt.
    pub tokenizer: PathBuf,
    /// The question.
    pub question: String,
    /// The context paragraph.
    pub context: String,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// The engine that runs the artifact.
    pub engine: EngineChoice,
    /// `--engine auto`: tract instead where `engine` would not compute the artifact exactly on
    /// this CPU (see [`qaforge_runtime::choose_engine`]).
    pub exact_fallback: bool,
    /// Cores to use.
    pub cores: usize,
}

/// The answer: a span of the context, or none.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The answer text ("" when the model abstains).
    pub text: String,
    /// The no-answer score minus the best span's (positive: no answer).
    pub null_odds: f32,
    /// How far the decision is from going another way (see [`qaforge_squad::Prediction::margin`]):
    /// logits that each move by less than a quarter of it cannot change the answer.
    pub margin: f32,
    /// Windows the context was split into.
    pub windows: usize,
    /// Character (Unicode scalar) offsets of the answer in the context, `start..end`; `None` when
    /// the model abstains.
    pub chars: Option<(usize, usize)>,
    /// transformers' question-answering pipeline's score: the answer's start probability times
    /// its end probability in its window, or for no answer the lowest `[CLS]` probability of any
    /// window (what `qaforge serve` answers with).
    pub score: f64,
}

/// Answers `request.question` from `request.context`.
pub fn answer(request: &AnswerRequest) -> Result<Answered, PipelineError> {
    if request.context.trim().is_empty() {
        return Err(PipelineError::Request("the context is empty".into()));
    }
    let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(&request.tokenizer)?;
    let example = qaforge_squad::Example {
        id: "question".into(),
        title: String::new(),
        question: request.question.clone(),
        context: request.context.clone(),
        answers: vec![],
    };
    let features = tokenizer.features(std::slice::from_ref(&example), &qaforge_squad::FeatureOptions::default())?;
    let artifact = LoadedArtifact::open(
        &request.artifact,
        &request.engine,
        request.exact_fallback,
        request.input_names.as_deref(),
    )?;
    artifact.check_token_ids(&features)?;
    let engine = artifact.engine(request.cores)?;
    // A coupled artifact (int8-dynamic, float16) runs each window alone, as verify and an app run it.
    let batch = if artifact.coupling.is_some() { 1 } else { 8 };
    let logits = engine.run_features(&features, batch, engine.preferred_threads(request.cores), &|_| {})?;
    let m = features.max_length;
    let offsets: Vec<Vec<Option<(usize, usize)>>> = (0..features.count).map(|i| features.context_offsets(i)).collect();
    let views: Vec<qaforge_squad::FeatureLogits> = (0..features.count)
        .map(|i| {
            let n = features.length(i);
            qaforge_squad::FeatureLogits {
                start: &logits.start[i * m..i * m + n],
                end: &logits.end[i * m..i * m + n],
                offsets: &offsets[i][..n],
            }
        })
        .collect();
    let ranked = qaforge_squad::predict_ranked(&example.context, &views, &qaforge_squad::PostprocessOptions::default());
    Ok(Answered::of(&ranked, &views))
}

impl Answered {
    /// The answer run_qa.py's post-processing ranked (`ranked`, over the windows `views`), with the
    /// pipeline's score.
    pub fn of(ranked: &qaforge_squad::Ranked, views: &[qaforge_squad::FeatureLogits<'_>]) -> Self {
        let prediction = &ranked.prediction;
        let best = ranked.spans.first().filter(|_| !prediction.text.is_empty());
        let score = match best {
            Some(span) => qaforge_squad::span_probability(&views[span.feature], span.tokens),
            None => views.iter().map(qaforge_squad::null_probability).fold(f64::INFINITY, f64::min),
        };
        Answered {
            text: prediction.text.clone(),
            null_odds: prediction.null_odds,
            margin: prediction.margin,
            windows: views.len(),
            chars: best.map(|s| s.chars),
            score,
        }
    }

    /// The answer as `answer --json` prints it: `{"text", "start", "end", "score", "null_odds",
    /// "margin", "windows"}`, text "" and start = end = 0 for no answer (as the pipeline writes it).
    pub fn to_json(&self) -> serde_json::Value {
        let (start, end) = self.chars.unwrap_or((0, 0));
        serde_json::json!({"text": self.text, "start": start, "end": end, "score": self.score, "null_odds": self.null_odds, "margin": self.margin, "windows": self.windows})
    }
}

impl std::fmt::Display for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.text.is_empty() {
            write!(f, "no answer (null score beats the best span by {:.3})", self.null_odds)
        } else {
            writeln!(f, "{}", self.text)?;
            write!(f, "(best span beats the null score by {:.3}; {} window(s))", -self.null_odds, self.windows)
        }
    }
}
