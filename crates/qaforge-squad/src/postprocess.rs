//! run_qa.py's `postprocess_qa_predictions` with `version_2_with_negative`, restated: logits of
//! every feature of an example → the answer text, or "" when the null score wins.
//!
//! Scores are summed in float32, as numpy does on float32 logits, so results are identical to the
//! reference's, ties included where numpy's order is deterministic.

/// Settings of the post-processing (run_qa.py's defaults).
#[derive(Debug, Clone, Copy)]
pub struct PostprocessOptions {
    /// Candidates per start and end position.
    pub n_best: usize,
    /// Longest answer, in tokens.
    pub max_answer_length: usize,
    /// Predict "" when null score − best span score exceeds this.
    pub null_score_diff_threshold: f32,
}

impl Default for PostprocessOptions {
    fn default() -> Self {
        PostprocessOptions { n_best: 20, max_answer_length: 30, null_score_diff_threshold: 0.0 }
    }
}

/// One feature's view for post-processing.
#[derive(Debug, Clone, Copy)]
pub struct FeatureLogits<'a> {
    /// Start logits of every position the model computed.
    pub start: &'a [f32],
    /// End logits, same length.
    pub end: &'a [f32],
    /// Character offsets `(begin, end)` into the context, `None` outside the context.
    pub offsets: &'a [Option<(usize, usize)>],
}

/// An example's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The answer text, "" for no answer.
    pub text: String,
    /// Null score minus the best non-null span's score (run_qa.py's `null_odds`).
    pub null_odds: f32,
    /// How far the decision is from going another way: the smaller of the best span's lead over
    /// the next span with another text and |null_odds − threshold|. Logits that each move by at
    /// most d move every score difference by at most 4d, so a prediction with margin > 4d cannot
    /// change; verify excuses fp32 differences only below that.
    pub margin: f32,
}

#[derive(Clone)]
struct Candidate {
    offsets: (usize, usize),
    score: f32,
    start_logit: f32,
    end_logit: f32,
    /// The feature (window) and its start and end token.
    feature: usize,
    tokens: (usize, usize),
}

/// Indices of the `n` largest values, largest first (numpy's `argsort(x)[-1:-n-1:-1]`).
fn top_indices(values: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    // numpy's default argsort is not stable (its SIMD sorts differ by CPU), so the order of exactly
    // equal logits is unspecified there; qaforge takes the lower index first. The golden fixtures
    // hold such ties (mobilebert-tiny, question 5ad23fded7d075001a4288ff) and agree with this rule.
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(n);
    order
}

fn char_slice(text: &str, begin: usize, end: usize) -> String {
    text.chars().skip(begin).take(end.saturating_sub(begin)).collect()
}

/// One answer span of an example, as [`predict_ranked`] ranks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The text.
    pub text: String,
    /// Character (Unicode scalar) offsets of the text in the context: `begin..end`.
    pub chars: (usize, usize),
    /// start + end logit.
    pub score: f32,
    /// The feature (window) of the example it was found in, by position in the slice given.
    pub feature: usize,
    /// Its start and end token in that feature.
    pub tokens: (usize, usize),
}

/// An example's prediction with its ranked spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The prediction [`predict`] makes.
    pub prediction: Prediction,
    /// The distinct non-empty spans among run_qa.py's n-best, best first (the first is the
    /// prediction's text where it answers).
    pub spans: Vec<Span>,
    /// The feature whose `[CLS]` scores lowest (run_qa.py's null score is its start + end), if any.
    pub null_feature: Option<usize>,
}

/// Predicts one example from all its features.
pub fn predict(context: &str, features: &[FeatureLogits<'_>], options: &PostprocessOptions) -> Prediction {
    predict_ranked(context, features, options).prediction
}

/// [`predict`], with the n-best spans it ranked.
pub fn predict_ranked(context: &str, features: &[FeatureLogits<'_>], options: &PostprocessOptions) -> Ranked {
    let mut min_null: Option<Candidate> = None;
    let mut prelim = Vec::new();
    for (k, f) in features.iter().enumerate() {
        let n = f.start.len().min(f.end.len());
        if n == 0 {
            continue;
        }
        let null_score = f.start[0] + f.end[0];
        if min_null.as_ref().is_none_or(|m| m.score > null_score) {
            min_null = Some(Candidate {
                offsets: (0, 0),
                score: null_score,
                start_logit: f.start[0],
                end_logit: f.end[0],
                feature: k,
                tokens: (0, 0),
            });
        }
        let starts = top_indices(&f.start[..n], options.n_best);
        let ends = top_indices(&f.end[..n], options.n_best);
        for &s in &starts {
            for &e in &ends {
                let (Some(Some(so)), Some(Some(eo))) = (f.offsets.get(s), f.offsets.get(e)) else { continue };
                if e < s || e - s + 1 > options.max_answer_length {
                    continue;
                }
                prelim.push(Candidate {
                    offsets: (so.0, eo.1),
                    score: f.start[s] + f.end[e],
                    start_logit: f.start[s],
                    end_logit: f.end[e],
                    feature: k,
                    tokens: (s, e),
                });
            }
        }
    }
    let Some(min_null) = min_null else {
        return Ranked {
            prediction: Prediction { text: String::new(), null_odds: 0.0, margin: f32::INFINITY },
            spans: Vec::new(),
            null_feature: None,
        };
    };
    prelim.push(min_null.clone());
    // Python's sorted(..., reverse=True) is stable: equal scores keep their insertion order.
    prelim.sort_by(|a, b| b.score.total_cmp(&a.score));
    prelim.truncate(options.n_best);
    if !prelim.iter().any(|p| p.offsets == (0, 0)) {
        prelim.push(min_null.clone());
    }
    let texts: Vec<String> = prelim.iter().map(|p| char_slice(context, p.offsets.0, p.offsets.1)).collect();
    let best = texts.iter().position(|t| !t.is_empty());
    let (best_text, best_start, best_end) = match best {
        Some(i) => (texts[i].clone(), prelim[i].start_logit, prelim[i].end_logit),
        // run_qa.py inserts a fallback "empty" prediction with zero logits.
        None => ("empty".to_string(), 0.0, 0.0),
    };
    let null_odds = min_null.score - best_start - best_end;
    let lead = best.map_or(f32::INFINITY, |i| {
        let runner_up = prelim
            .iter()
            .zip(&texts)
            .enumerate()
            .filter(|(j, (_, t))| *j != i && !t.is_empty() && **t != texts[i])
            .map(|(_, (p, _))| p.score)
            .next();
        runner_up.map_or(f32::INFINITY, |r| prelim[i].score - r)
    });
    let margin = lead.min((null_odds - options.null_score_diff_threshold).abs());
    let text = if null_odds > options.null_score_diff_threshold { String::new() } else { best_text };
    let mut spans: Vec<Span> = Vec::new();
    for (p, t) in prelim.iter().zip(texts) {
        if !t.is_empty() && !spans.iter().any(|s| s.chars == p.offsets) {
            spans.push(Span { text: t, chars: p.offsets, score: p.score, feature: p.feature, tokens: p.tokens });
        }
    }
    Ranked { prediction: Prediction { text, null_odds, margin }, spans, null_feature: Some(min_null.feature) }
}

/// transformers' question-answering pipeline's probabilities in one feature: a softmax over the
/// start logits and one over the end logits of the positions that can answer (the context's
/// tokens and `[CLS]`), as its `select_starts_ends` computes them (others get no mass).
fn pipeline_probabilities(f: &FeatureLogits<'_>) -> (Vec<f64>, Vec<f64>) {
    let n = f.start.len().min(f.end.len());
    let allowed = |k: usize| k == 0 || f.offsets.get(k).is_some_and(|o| o.is_some());
    let softmax = |logits: &[f32]| -> Vec<f64> {
        let max = (0..n).filter(|&k| allowed(k)).map(|k| f64::from(logits[k])).fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = (0..n).map(|k| if allowed(k) { (f64::from(logits[k]) - max).exp() } else { 0.0 }).collect();
        let sum: f64 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    };
    (softmax(f.start), softmax(f.end))
}

/// The pipeline's score of the span from token `tokens.0` to `tokens.1` of feature `f`: the
/// probability of its start times that of its end.
pub fn span_probability(f: &FeatureLogits<'_>, tokens: (usize, usize)) -> f64 {
    let (start, end) = pipeline_probabilities(f);
    start.get(tokens.0).copied().unwrap_or(0.0) * end.get(tokens.1).copied().unwrap_or(0.0)
}

/// The pipeline's no-answer score of feature `f`: the probability that both start and end are `[CLS]`.
pub fn null_probability(f: &FeatureLogits<'_>) -> f64 {
    span_probability(f, (0, 0))
}

/// Predicts every example of `data` from `[features.count, features.max_length]` start and end
/// logits of `features` (built from `data`): question id → prediction.
///
/// With `real_tokens_only`, padding positions take no part. run_qa.py ranks all max_length
/// positions, so padding positions (never answers: they have no offsets) can take some of the
/// n-best slots; a run with dynamic padding does not compute them, and then both sides of a
/// comparison must leave them out.
pub fn predict_all(
    data: &crate::SquadFile,
    features: &crate::Features,
    start: &[f32],
    end: &[f32],
    options: &PostprocessOptions,
    real_tokens_only: bool,
) -> std::collections::BTreeMap<String, Prediction> {
    let m = features.max_length;
    let offsets: Vec<Vec<Option<(usize, usize)>>> = (0..features.count).map(|i| features.context_offsets(i)).collect();
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); data.examples.len()];
    for (i, &e) in features.example_index.iter().enumerate() {
        if let Some(list) = by_example.get_mut(e) {
            list.push(i);
        }
    }
    data.examples
        .iter()
        .zip(&by_example)
        .map(|(example, list)| {
            let views: Vec<FeatureLogits> = list
                .iter()
                .map(|&i| {
                    let n = if real_tokens_only { features.length(i) } else { m };
                    FeatureLogits {
                        start: &start[i * m..i * m + n],
                        end: &end[i * m..i * m + n],
                        offsets: &offsets[i][..n],
                    }
                })
                .collect();
            (example.id.clone(), predict(&example.context, &views, options))
        })
        .collect()
}
