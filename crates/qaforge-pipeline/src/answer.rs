//! `qaforge answer`: one question about one context, answered by an artifact in either engine,
//! with the same features and post-processing as verification.

use std::path::PathBuf;

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
    /// this CPU (see [`qaforge_verify::choose_engine`]).
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
}

/// Answers `request.question` from `request.context`.
pub fn answer(request: &AnswerRequest) -> Result<Answered, PipelineError> {
    if request.context.trim().is_empty() {
        return Err(PipelineError::Request("the context is empty".into()));
    }
    let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(&request.tokenizer)?;
    let example = qaforge_squad::Example { id: "question".into(), title: String::new(), question: request.question.clone(), context: request.context.clone(), answers: vec![] };
    let features = tokenizer.features(std::slice::from_ref(&example), &qaforge_squad::FeatureOptions::default())?;
    // Decoded by qaforge first, so that a hostile file is refused with its problem named before
    // an engine reads tensors by their claimed dims.
    let path = &request.artifact;
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    let model = if qaforge_verify::is_ort_format(&bytes) {
        qaforge_verify::ort_format_view(&request.engine, &bytes, path)?
    } else {
        qaforge_onnx::decode_model(&bytes, path)?
    };
    let layout = qaforge_verify::check_inputs(&model, path, request.input_names.as_deref())?;
    qaforge_verify::check_token_ids(&model, &layout, &features, path)?;
    let chosen = qaforge_verify::choose_engine(&request.engine, request.exact_fallback, &qaforge_verify::CpuFeatures::detect(), &model, &bytes);
    let engine = qaforge_verify::load_engine(&chosen.engine, &model, &bytes, path, request.cores, layout)?;
    let logits = engine.run_features(&features, 8, engine.preferred_threads(request.cores), &|_| {})?;
    let squad = qaforge_squad::SquadFile { examples: vec![example], articles: 1, paragraphs: 1 };
    let prediction = qaforge_squad::predict_all(&squad, &features, &logits.start, &logits.end, &qaforge_squad::PostprocessOptions::default(), true)
        .remove("question")
        .ok_or_else(|| PipelineError::Request("no prediction".into()))?;
    Ok(Answered { text: prediction.text, null_odds: prediction.null_odds, margin: prediction.margin, windows: features.count })
}
