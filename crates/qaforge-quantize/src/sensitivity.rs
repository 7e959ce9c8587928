//! Sensitivity search: when the fully quantized graph loses more F1 than allowed, rank units (one
//! per encoder layer plus the embedding path, or one per weight product: [`SearchUnit`]) by the
//! logit error that quantizing that unit alone causes on calibration features, then keep the most
//! harmful units float, one at a time, until the F1 drop on the evaluation slice is within the
//! limit and the logits' cosine with the float graph's stays above the precision's floor (the two
//! checks `qaforge verify` applies; on a model whose F1 barely depends on its logits, the cosine is
//! what catches a broken graph). Each step records the candidate's size: the price of what it keeps
//! float. In the int8 modes a kept unit can instead keep only its activations float
//! ([`SearchKeep::Activations`]): its weights stay int8, so the size price is nil and the price is
//! the speed of a float product.

use std::collections::BTreeMap;
use std::str::FromStr;

use qaforge_provenance::{parse_named, Named};
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

/// What the search keeps float at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchUnit {
    /// An encoder layer (its nodes are named `layer.N.…`) or the embedding path: few units to
    /// rank, but each kept float costs a whole layer's float weights.
    #[default]
    Layer,
    /// One product by a constant weight, found by structure (any exporter's names): one forward
    /// per product to rank, and each kept float costs only that product's float weights.
    Product,
}

impl SearchUnit {
    /// Every unit, in the order help texts list them.
    pub const ALL: [SearchUnit; 2] = [SearchUnit::Layer, SearchUnit::Product];

    /// The unit's name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchUnit::Layer => "layer",
            SearchUnit::Product => "product",
        }
    }
}

impl Named for SearchUnit {
    const ALL: &'static [Self] = &SearchUnit::ALL;

    fn as_str(self) -> &'static str {
        SearchUnit::as_str(self)
    }
}

impl FromStr for SearchUnit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "search unit")
    }
}

/// What the search keeps in higher precision for a unit it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchKeep {
    /// Weights and activations float (`--exclude`): the unit's float weights are the price.
    #[default]
    Float,
    /// int8 weights, float activations (`--float-activations`, int8 modes): the artifact keeps
    /// its int8 size, the unit's product runs in float on dequantized weights (its speed is the
    /// price). Where the error is the activation grid's, as with BERT's outlier activations,
    /// this keeps most of what `Float` buys.
    Activations,
}

impl SearchKeep {
    /// Every choice, in the order help texts list them.
    pub const ALL: [SearchKeep; 2] = [SearchKeep::Float, SearchKeep::Activations];

    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKeep::Float => "float",
            SearchKeep::Activations => "activations",
        }
    }

    /// How a kept unit is kept, in the words summaries, reports and errors print ("2 products
    /// float", "… with float activations").
    pub fn words(self) -> &'static str {
        match self {
            SearchKeep::Float => "float",
            SearchKeep::Activations => "with float activations",
        }
    }
}

impl Named for SearchKeep {
    const ALL: &'static [Self] = &SearchKeep::ALL;

    fn as_str(self) -> &'static str {
        SearchKeep::as_str(self)
    }
}

impl FromStr for SearchKeep {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_named(text, "search keep")
    }
}

/// What the search must reach, and what it keeps float to get there.
#[derive(Debug, Clone, Copy)]
pub struct SearchGoal {
    /// The largest F1 drop on the evaluation slice accepted.
    pub max_f1_drop: f64,
    /// The smallest cosine of the logits with the float graph's accepted.
    pub min_cosine: f64,
    /// What is kept float at a time.
    pub unit: SearchUnit,
    /// What keeping a unit keeps in higher precision.
    pub keep: SearchKeep,
}

/// One step of the search, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchStep {
    /// Units kept float at this step.
    pub kept_float: Vec<String>,
    /// F1 drop on the evaluation slice.
    pub f1_drop: f64,
    /// Cosine of the candidate's logits with the float graph's on the evaluation slice.
    pub cosine: f64,
    /// The candidate's size as written (ONNX bytes): against the first step's, the price of
    /// what this step keeps float.
    pub bytes: u64,
}

/// What the search did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SearchLog {
    /// What the search kept float at a time.
    pub unit: SearchUnit,
    /// What keeping a unit kept in higher precision.
    pub keep: SearchKeep,
    /// Mean squared logit error of quantizing each unit alone, most harmful first.
    pub sensitivity: Vec<(String, f64)>,
    /// Each evaluated configuration, in the order measured.
    pub steps: Vec<SearchStep>,
    /// The step written (an index into `steps`; the first when nothing had to be kept float).
    pub chosen: Option<usize>,
}

/// A unit the search can keep float: its name and the `--exclude` pattern that keeps it float.
struct Unit {
    name: String,
    pattern: String,
}

/// The units of `graph` the search ranks: those with a product the request quantizes (every
/// layer's for fp16, which converts more than products). A product unit's pattern is its node's
/// name, so products whose names a pattern cannot single out (empty, with `*`, or an op type's)
/// are not offered; nor is a layer unit whose pattern would not reach its products (a product not
/// named `layer.N.…` or `first.…`): keeping it "float" would change nothing.
fn search_units(
    graph: &tract_onnx::pb::GraphProto,
    options: &QuantizeOptions,
    unit: SearchUnit,
    keep: SearchKeep,
) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut add = |name: String, pattern: String| {
        if !units.iter().any(|u| u.name == name) {
            units.push(Unit { name, pattern });
        }
    };
    let reaches = |pattern: &str, node: &tract_onnx::pb::NodeProto| crate::graph::glob_match(pattern, &node.name);
    let decisions = Selection::for_request(graph, options);
    let candidates = decisions
        .decisions()
        .iter()
        .filter(|(_, d)| match keep {
            _ if options.precision == Precision::Fp16 => true,
            SearchKeep::Float => !matches!(d, Decision::Float(_)),
            SearchKeep::Activations => *d == Decision::Quantize,
        })
        .map(|(i, _)| &graph.node[*i]);
    match (unit, options.precision) {
        (SearchUnit::Layer, Precision::Fp16) => {
            for g in graph.node.iter().map(|n| group_of(&n.name)).filter(|g| g.starts_with("layer.")) {
                add(g.clone(), format!("{g}.*"));
            }
        }
        (SearchUnit::Layer, _) => {
            for node in candidates {
                let (g, pattern) = (group_of(&node.name), format!("{}.*", group_of(&node.name)));
                if reaches(&pattern, node) {
                    add(g, pattern);
                }
            }
        }
        (SearchUnit::Product, _) => {
            let singled_out =
                |name: &str| !name.is_empty() && !name.contains('*') && !graph.node.iter().any(|n| n.op_type == name);
            for node in candidates.filter(|n| singled_out(&n.name)) {
                add(node.name.clone(), node.name.clone());
            }
        }
    }
    units
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

/// Quantizes `model` keeping as few units float as needed for an F1 drop ≤ `goal.max_f1_drop`
/// and a logit cosine ≥ `goal.min_cosine`.
pub fn search(
    model: &ModelProto,
    options: &QuantizeOptions,
    calibration: Option<&Features>,
    slice: &EvaluationSlice<'_>,
    goal: SearchGoal,
    input_sha256: &str,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(ModelProto, QuantizeSummary, SearchLog), QuantizeError> {
    let ranges = calibrated_ranges(model, options, calibration, progress)?;
    let ranges = ranges.as_ref();
    let grams = crate::input_statistics(model, options, calibration, progress)?;
    let grams = grams.as_ref();
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
    if goal.keep == SearchKeep::Activations && !options.precision.is_int8() {
        return Err(QuantizeError::Options(format!(
            "the search keeps float activations with int8 weights in the int8 modes only, not {}",
            options.precision.as_str()
        )));
    }
    let mut log = SearchLog { unit: goal.unit, keep: goal.keep, ..SearchLog::default() };
    let units = search_units(graph, options, goal.unit, goal.keep);
    let pattern_of = |name: &str| units.iter().find(|u| u.name == name).map(|u| u.pattern.clone());
    // Ranking quantizes one unit with every other unit float; the prefix steps keep units as
    // `goal.keep` says.
    let with_float = |names: &[String]| -> QuantizeOptions {
        let mut o = options.clone();
        o.exclude.extend(names.iter().filter_map(|n| pattern_of(n)));
        o
    };
    let with_kept = |names: &[String]| -> QuantizeOptions {
        let mut o = options.clone();
        let patterns = names.iter().filter_map(|n| pattern_of(n));
        match goal.keep {
            SearchKeep::Float => o.exclude.extend(patterns),
            SearchKeep::Activations => o.float_activations.extend(patterns),
        }
        o
    };
    let (_, float_eval) = f1_of(model, slice, options)?;
    let measure = |candidate: &ModelProto, kept: &[String]| -> Result<SearchStep, QuantizeError> {
        let (f1, logits) = f1_of(candidate, slice, options)?;
        Ok(SearchStep {
            kept_float: kept.to_vec(),
            f1_drop: slice.reference_f1 - f1,
            cosine: cosine(&logits, &float_eval, slice.features),
            bytes: qaforge_onnx::encode(candidate).len() as u64,
        })
    };
    let passes = |step: &SearchStep| step.f1_drop <= goal.max_f1_drop && step.cosine >= goal.min_cosine;
    let (best, summary) = apply(model, options, ranges, grams, input_sha256)?;
    let step = measure(&best, &[])?;
    log.steps.push(step.clone());
    if passes(&step) {
        log.chosen = Some(0);
        return Ok((best, summary, log));
    }

    // Rank units by the logit error of quantizing each alone, on (at most 32) calibration
    // features, or on the evaluation features when there are no calibration features (dynamic, fp16).
    let probe = calibration.cloned().unwrap_or_else(|| slice.features.clone()).truncated(32);
    let float_logits =
        crate::tract_session(model, "float graph", options)?.run_features(&probe, 8, options.threads, &|_| {})?;
    for unit in &units {
        let others: Vec<String> = units.iter().filter(|o| o.name != unit.name).map(|o| o.name.clone()).collect();
        let (candidate, _) = apply(model, &with_float(&others), ranges, grams, input_sha256)?;
        let logits = crate::tract_session(&candidate, "candidate graph", options)?.run_features(
            &probe,
            8,
            options.threads,
            &|_| {},
        )?;
        log.sensitivity.push((unit.name.clone(), logit_mse(&logits, &float_logits, &probe)));
    }
    log.sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

    // Which prefix of the ranking to keep float: doubling, then bisection (see
    // `smallest_passing_prefix`), so that a search over a few hundred products measures a dozen
    // candidates, not hundreds.
    let ranking: Vec<String> = log.sensitivity.iter().map(|(name, _)| name.clone()).collect();
    let mut chosen: Option<(usize, ModelProto, QuantizeSummary)> = None;
    let mut last = step;
    let found = smallest_passing_prefix(ranking.len(), |k| {
        let kept = &ranking[..k];
        let (candidate, mut s) = apply(model, &with_kept(kept), ranges, grams, input_sha256)?;
        let unit_of = |pattern: &str| kept.iter().find(|k| pattern_of(k).as_deref() == Some(pattern)).cloned();
        for reason in s.kept_float.values_mut() {
            let searched = match reason {
                KeptFloat::Excluded(pattern) => unit_of(pattern).map(KeptFloat::SensitivitySearch),
                KeptFloat::FloatActivations(pattern) => unit_of(pattern).map(KeptFloat::SensitivitySearchActivations),
                _ => None,
            };
            if let Some(searched) = searched {
                *reason = searched;
            }
        }
        let step = measure(&candidate, kept)?;
        let ok = passes(&step);
        log.steps.push(step.clone());
        if ok && chosen.as_ref().is_none_or(|(best, _, _)| k < *best) {
            chosen = Some((k, candidate, s));
        }
        last = step;
        Ok::<bool, QuantizeError>(ok)
    })?;
    match (found, chosen) {
        (Some(k), Some((chosen_k, best, summary))) if k == chosen_k => {
            log.chosen = log.steps.iter().rposition(|s| s.kept_float.len() == k);
            Ok((best, summary, log))
        }
        _ => Err(QuantizeError::Graph(format!(
            "F1 drop {:.2} (limit {}), cosine {:.6} (floor {}) with every {} ({}) kept {}",
            last.f1_drop,
            goal.max_f1_drop,
            last.cosine,
            goal.min_cosine,
            goal.unit.as_str(),
            ranking.join(", "),
            goal.keep.words()
        ))),
    }
}

/// The smallest `k` in `1..=n` for which `passes(k)` holds, assuming that once a prefix of the
/// ranking passes, longer ones do too: tries 1, 2, 4, … until one passes, then bisects between
/// the longest failing and the shortest passing (about 2·log2(n) calls). The checks are measured,
/// so a longer prefix can fail where a shorter one passed by luck; the answer then is a passing
/// prefix, not necessarily the shortest. None when even `n` fails.
fn smallest_passing_prefix<E>(n: usize, mut passes: impl FnMut(usize) -> Result<bool, E>) -> Result<Option<usize>, E> {
    let (mut failing, mut k) = (0, 1);
    let mut passing = loop {
        if k > n {
            return Ok(None);
        }
        if passes(k)? {
            break k;
        }
        failing = k;
        k = if k == n { n + 1 } else { (2 * k).min(n) };
    };
    while passing - failing > 1 {
        let middle = failing + (passing - failing) / 2;
        if passes(middle)? {
            passing = middle;
        } else {
            failing = middle;
        }
    }
    Ok(Some(passing))
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto, ValueInfoProto};

    use super::*;

    fn matmul(name: &str, input: &str, weight: &str, output: &str) -> NodeProto {
        NodeProto {
            name: name.into(),
            op_type: "MatMul".into(),
            input: vec![input.into(), weight.into()],
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// x → layer.0.query → (unnamed) → layer.1.output → Relu → `MatMul`-named product → head → logits.
    fn graph() -> GraphProto {
        let weight = |name: &str| TensorProto {
            name: name.into(),
            dims: vec![2, 2],
            data_type: DataType::Float as i32,
            float_data: vec![1.0, 0.5, -0.5, 1.0],
            ..Default::default()
        };
        let relu = NodeProto {
            name: "layer.1.act".into(),
            op_type: "Relu".into(),
            input: vec!["c".into()],
            output: vec!["d".into()],
            ..Default::default()
        };
        GraphProto {
            node: vec![
                matmul("layer.0.query", "x", "w0", "a"),
                matmul("", "a", "w1", "b"),
                matmul("layer.1.output", "b", "w2", "c"),
                relu,
                matmul("Relu", "d", "w3", "e"),
                matmul("head", "e", "w4", "logits"),
            ],
            initializer: ["w0", "w1", "w2", "w3", "w4"].map(weight).to_vec(),
            input: vec![ValueInfoProto { name: "x".into(), ..Default::default() }],
            output: vec![ValueInfoProto { name: "logits".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn listed(units: &[Unit]) -> Vec<(&str, &str)> {
        units.iter().map(|u| (u.name.as_str(), u.pattern.as_str())).collect()
    }

    #[test]
    fn product_units_are_the_quantized_products_a_pattern_can_single_out() {
        let g = graph();
        let units = search_units(
            &g,
            &QuantizeOptions::for_tests(Precision::Int8Static, &[]),
            SearchUnit::Product,
            SearchKeep::Float,
        );
        // The unnamed product and the one named like an op type cannot be kept float alone by a
        // pattern; the QA head is float already.
        assert_eq!(listed(&units), [("layer.0.query", "layer.0.query"), ("layer.1.output", "layer.1.output")]);
        // A product the user excluded is float already: not a unit.
        let units = search_units(
            &g,
            &QuantizeOptions::for_tests(Precision::Int8Static, &["layer.0.*"]),
            SearchUnit::Product,
            SearchKeep::Float,
        );
        assert_eq!(listed(&units), [("layer.1.output", "layer.1.output")]);
        // Each pattern keeps exactly its product float.
        for unit in search_units(
            &g,
            &QuantizeOptions::for_tests(Precision::Int8Static, &[]),
            SearchUnit::Product,
            SearchKeep::Float,
        ) {
            let selection = Selection::of(&g, std::slice::from_ref(&unit.pattern), false);
            let float: Vec<&str> = selection
                .decisions()
                .iter()
                .filter(|(_, d)| matches!(d, Decision::Float(KeptFloat::Excluded(_))))
                .map(|(i, _)| g.node[*i].name.as_str())
                .collect();
            assert_eq!(float, [unit.name.as_str()]);
        }
    }

    #[test]
    fn units_that_keep_float_activations_are_products_still_quantized() {
        let g = graph();
        let mut options = QuantizeOptions::for_tests(Precision::Int8Static, &[]);
        options.float_activations = vec!["layer.0.query".into()];
        // Kept float, a product with float activations could still lose its int8 weights; kept
        // with float activations, it has nothing left to keep.
        let float = search_units(&g, &options, SearchUnit::Product, SearchKeep::Float);
        assert_eq!(listed(&float), [("layer.0.query", "layer.0.query"), ("layer.1.output", "layer.1.output")]);
        let activations = search_units(&g, &options, SearchUnit::Product, SearchKeep::Activations);
        assert_eq!(listed(&activations), [("layer.1.output", "layer.1.output")]);
        assert_eq!("activations".parse::<SearchKeep>(), Ok(SearchKeep::Activations));
        assert_eq!("float".parse::<SearchKeep>(), Ok(SearchKeep::Float));
    }

    #[test]
    fn layer_units_group_products_by_layer() {
        let units = search_units(
            &graph(),
            &QuantizeOptions::for_tests(Precision::Int8Dynamic, &[]),
            SearchUnit::Layer,
            SearchKeep::Float,
        );
        // The unnamed product and `Relu` have no `layer.N.` or `first.` in their names to be kept
        // float by: not units.
        assert_eq!(listed(&units), [("layer.0", "layer.0.*"), ("layer.1", "layer.1.*")]);
    }

    #[test]
    fn the_smallest_passing_prefix_is_found_in_logarithmic_calls() {
        for n in 1..=300 {
            for smallest in 1..=n + 1 {
                let mut calls = Vec::new();
                let found = smallest_passing_prefix(n, |k| {
                    assert!((1..=n).contains(&k), "{k} outside 1..={n}");
                    calls.push(k);
                    Ok::<bool, ()>(k >= smallest)
                })
                .unwrap();
                assert_eq!(found, (smallest <= n).then_some(smallest), "n {n}, smallest {smallest}, calls {calls:?}");
                let bound = 2 * (usize::BITS - n.leading_zeros()) as usize + 1;
                assert!(calls.len() <= bound, "n {n}: {} calls {calls:?}", calls.len());
            }
        }
        // A prefix that fails after a shorter one passed (measurement noise) still gives a
        // passing prefix.
        let found = smallest_passing_prefix(8, |k| Ok::<bool, ()>(k == 2 || k >= 6)).unwrap();
        assert!(matches!(found, Some(2) | Some(6)), "{found:?}");
    }

    #[test]
    fn units_parse_from_their_names() {
        assert_eq!("product".parse::<SearchUnit>(), Ok(SearchUnit::Product));
        assert_eq!("layer".parse::<SearchUnit>(), Ok(SearchUnit::Layer));
        assert_eq!("node".parse::<SearchUnit>().unwrap_err(), "unknown search unit `node` (known: layer, product)");
    }
}
