//! Sensitivity search: when the fully quantized graph loses more F1 than allowed, rank node groups
//! (one per encoder layer, plus the embedding path) by the logit error that quantizing that group
//! alone causes on calibration features, then keep the most harmful groups float, one at a time,
//! until the F1 drop on the evaluation slice is within the limit and the logits' cosine with the
//! float graph's stays above the precision's floor (the two checks `qaforge verify` applies; on a
//! model whose F1 barely depends on its logits, the cosine is what catches a broken graph).

use std::collections::BTreeMap;

use qaforge_runtime::Engine;
use qaforge_squad::{evaluate, predict_all, Features, PostprocessOptions, SquadFile};
use tract_onnx::pb::ModelProto;

use crate::graph::KeptFloat;
use crate::selection::{Decision, Selection};
use crate::{apply, calibrated_ranges, Precision, QuantizeError, QuantizeOptions, QuantizeSummary};

/// The evaluation slice the F1 drop is measured on.
pub struct EvaluationSlice<'a> {
    /// Questions and gold answers.
    pub data: &'a SquadFile,
    /// Their features.
    pub features: &'a Features,
    /// F1 of the reference (PyTorch) on this slice, computed the way [`f1_of`] computes it.
    pub reference_f1: f64,
}

/// Label-free evaluation: the float graph's own predictions on `data` become the gold answers
/// (a predicted span the only answer, "" an unanswerable question), so the F1 drop of a candidate
/// is its disagreement with the float graph in F1 points, and no gold labels are needed. Returns
/// the pseudo-labelled data and the float graph's F1 on it (100 by construction, computed as
/// [`f1_of`] computes it).
pub fn label_free(
    model: &ModelProto,
    data: &SquadFile,
    features: &Features,
    options: &QuantizeOptions,
) -> Result<(SquadFile, f64), QuantizeError> {
    let session = crate::tract_session(model, "float graph", options)?;
    let logits = session.run_features(features, 8, options.threads, &|_| {})?;
    let predictions = predict_all(data, features, &logits.start, &logits.end, &PostprocessOptions::default(), true);
    let mut pseudo = data.clone();
    for example in &mut pseudo.examples {
        let text = predictions.get(&example.id).map(|p| p.text.clone()).unwrap_or_default();
        example.answers = if text.is_empty() { Vec::new() } else { vec![text] };
    }
    let texts: BTreeMap<String, String> = predictions.into_iter().map(|(k, p)| (k, p.text)).collect();
    let f1 = evaluate(&pseudo, &texts).f1;
    Ok((pseudo, f1))
}

/// The questions of `data` after those whose features calibrate (the first `calibration_features`
/// features), at most `questions` of them, with their features: held back from calibration, so
/// the search measures on questions the ranges were not fitted to.
pub fn held_back(
    data: &SquadFile,
    features: &Features,
    calibration_features: usize,
    questions: usize,
) -> Option<(SquadFile, Features)> {
    let first = if calibration_features == 0 {
        0
    } else {
        features.example_index.get(calibration_features.min(features.count) - 1)? + 1
    };
    let end = (first + questions).min(data.examples.len());
    if first >= end {
        return None;
    }
    let range = features.range_of_questions(first..end);
    Some((data.questions(first..end), features.select(range.start, range.end, first)))
}

/// One step of the search, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchStep {
    /// Groups kept float at this step.
    pub kept_float: Vec<String>,
    /// F1 drop on the evaluation slice.
    pub f1_drop: f64,
    /// Cosine of the candidate's logits with the float graph's on the evaluation slice.
    pub cosine: f64,
}

/// What the search did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SearchLog {
    /// Mean squared logit error of quantizing each group alone, most harmful first.
    pub sensitivity: Vec<(String, f64)>,
    /// Each evaluated configuration.
    pub steps: Vec<SearchStep>,
}

/// F1 (real tokens only, as verify scores) of a graph on a slice, with its logits.
pub fn f1_of(
    model: &ModelProto,
    slice: &EvaluationSlice<'_>,
    options: &QuantizeOptions,
) -> Result<(f64, qaforge_runtime::Logits), QuantizeError> {
    let session = crate::tract_session(model, "candidate graph", options)?;
    let logits = session.run_features(slice.features, 8, options.threads, &|_| {})?;
    let predictions: BTreeMap<String, String> =
        predict_all(slice.data, slice.features, &logits.start, &logits.end, &PostprocessOptions::default(), true)
            .into_iter()
            .map(|(k, p)| (k, p.text))
            .collect();
    Ok((evaluate(slice.data, &predictions).f1, logits))
}

fn cosine(a: &qaforge_runtime::Logits, b: &qaforge_runtime::Logits, features: &Features) -> f64 {
    let m = features.max_length;
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for i in 0..features.count {
        for t in 0..features.length(i) {
            for (x, y) in [(a.start[i * m + t], b.start[i * m + t]), (a.end[i * m + t], b.end[i * m + t])] {
                let (x, y) = (x as f64, y as f64);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
        }
    }
    if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
    }
}

/// The group of a node: `layer.N` for encoder layer N, else the first name component.
fn group_of(name: &str) -> String {
    let mut parts = name.split('.');
    match (parts.next(), parts.next()) {
        (Some("layer"), Some(n)) => format!("layer.{n}"),
        (Some(first), _) => first.to_string(),
        _ => String::new(),
    }
}

fn logit_mse(a: &qaforge_runtime::Logits, b: &qaforge_runtime::Logits, features: &Features) -> f64 {
    let m = features.max_length;
    let (mut sum, mut n) = (0f64, 0usize);
    for i in 0..features.count {
        for t in 0..features.length(i) {
            for (x, y) in [(a.start[i * m + t], b.start[i * m + t]), (a.end[i * m + t], b.end[i * m + t])] {
                sum += ((x - y) as f64).powi(2);
                n += 1;
            }
        }
    }
    sum / n.max(1) as f64
}

/// Quantizes `model` keeping as few groups float as needed for an F1 drop ≤ `max_f1_drop` and a
/// logit cosine ≥ `min_cosine`.
#[allow(clippy::too_many_arguments)]
pub fn search(
    model: &ModelProto,
    options: &QuantizeOptions,
    calibration: Option<&Features>,
    slice: &EvaluationSlice<'_>,
    max_f1_drop: f64,
    min_cosine: f64,
    input_sha256: &str,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(ModelProto, QuantizeSummary, SearchLog), QuantizeError> {
    let ranges = calibrated_ranges(model, options, calibration, progress)?;
    let ranges = ranges.as_ref();
    let grams = crate::input_statistics(model, options, calibration, progress)?;
    let grams = grams.as_ref();
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
    let mut log = SearchLog::default();
    let with_groups = |groups: &[String]| -> QuantizeOptions {
        let mut o = options.clone();
        o.exclude.extend(groups.iter().map(|g| format!("{g}.*")));
        o
    };
    let mut kept: Vec<String> = Vec::new();
    let (_, float_eval) = f1_of(model, slice, options)?;
    let measure = |candidate: &ModelProto| -> Result<(f64, f64), QuantizeError> {
        let (f1, logits) = f1_of(candidate, slice, options)?;
        Ok((slice.reference_f1 - f1, cosine(&logits, &float_eval, slice.features)))
    };
    let (mut best, mut summary) = apply(model, options, ranges, grams, input_sha256)?;
    let (mut drop, mut cos) = measure(&best)?;
    log.steps.push(SearchStep { kept_float: vec![], f1_drop: drop, cosine: cos });
    if drop <= max_f1_drop && cos >= min_cosine {
        return Ok((best, summary, log));
    }

    // Rank groups by the logit error of quantizing each alone, on (at most 32) calibration
    // features, or on the evaluation features when there are no calibration features (dynamic, fp16).
    let probe = calibration.cloned().unwrap_or_else(|| slice.features.clone()).truncated(32);
    let float_logits =
        crate::tract_session(model, "float graph", options)?.run_features(&probe, 8, options.threads, &|_| {})?;
    let mut groups: Vec<String> = Vec::new();
    for (i, decision) in Selection::of(graph, &options.exclude, options.int8_qa_head).decisions() {
        let g = group_of(&graph.node[*i].name);
        if !matches!(decision, Decision::Float(_)) && !groups.contains(&g) {
            groups.push(g);
        }
    }
    if options.precision == Precision::Fp16 {
        groups.clear();
        for g in graph.node.iter().map(|n| group_of(&n.name)).filter(|g| g.starts_with("layer.")) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    for g in &groups {
        let others: Vec<String> = groups.iter().filter(|o| *o != g).cloned().collect();
        let (candidate, _) = apply(model, &with_groups(&others), ranges, grams, input_sha256)?;
        let logits = crate::tract_session(&candidate, "candidate graph", options)?.run_features(
            &probe,
            8,
            options.threads,
            &|_| {},
        )?;
        log.sensitivity.push((g.clone(), logit_mse(&logits, &float_logits, &probe)));
    }
    log.sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

    for (g, _) in log.sensitivity.clone() {
        kept.push(g);
        let (candidate, mut s) = apply(model, &with_groups(&kept), ranges, grams, input_sha256)?;
        for reason in s.kept_float.values_mut() {
            let group = match reason {
                KeptFloat::Excluded(pattern) => {
                    pattern.strip_suffix(".*").filter(|g| kept.iter().any(|k| k == g)).map(str::to_string)
                }
                _ => None,
            };
            if let Some(group) = group {
                *reason = KeptFloat::SensitivitySearch(group);
            }
        }
        (drop, cos) = measure(&candidate)?;
        log.steps.push(SearchStep { kept_float: kept.clone(), f1_drop: drop, cosine: cos });
        best = candidate;
        summary = s;
        if drop <= max_f1_drop && cos >= min_cosine {
            return Ok((best, summary, log));
        }
    }
    Err(QuantizeError::Graph(format!(
        "F1 drop {drop:.2} (limit {max_f1_drop}), cosine {cos:.6} (floor {min_cosine}) with every group ({}) kept float",
        kept.join(", ")
    )))
}
