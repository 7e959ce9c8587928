//! The official SQuAD v2 metric (evaluate-v2.0.py), restated operation for operation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{SquadError, SquadFile};

/// evaluate-v2.0.py's output without no-answer probabilities (its key order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Exact match, percent.
    #[serde(rename = "exact")]
    pub exact: f64,
    /// F1, percent.
    #[serde(rename = "f1")]
    pub f1: f64,
    /// Questions scored.
    #[serde(rename = "total")]
    pub total: usize,
    /// Exact match on answerable questions.
    #[serde(rename = "HasAns_exact", skip_serializing_if = "Option::is_none")]
    pub has_ans_exact: Option<f64>,
    /// F1 on answerable questions.
    #[serde(rename = "HasAns_f1", skip_serializing_if = "Option::is_none")]
    pub has_ans_f1: Option<f64>,
    /// Answerable questions.
    #[serde(rename = "HasAns_total", skip_serializing_if = "Option::is_none")]
    pub has_ans_total: Option<usize>,
    /// Exact match on unanswerable questions.
    #[serde(rename = "NoAns_exact", skip_serializing_if = "Option::is_none")]
    pub no_ans_exact: Option<f64>,
    /// F1 on unanswerable questions.
    #[serde(rename = "NoAns_f1", skip_serializing_if = "Option::is_none")]
    pub no_ans_f1: Option<f64>,
    /// Unanswerable questions.
    #[serde(rename = "NoAns_total", skip_serializing_if = "Option::is_none")]
    pub no_ans_total: Option<usize>,
    /// With no-answer probabilities: the best exact match any threshold gives.
    #[serde(rename = "best_exact", skip_serializing_if = "Option::is_none")]
    pub best_exact: Option<f64>,
    /// The threshold that gives `best_exact`.
    #[serde(rename = "best_exact_thresh", skip_serializing_if = "Option::is_none")]
    pub best_exact_thresh: Option<f64>,
    /// With no-answer probabilities: the best F1 any threshold gives.
    #[serde(rename = "best_f1", skip_serializing_if = "Option::is_none")]
    pub best_f1: Option<f64>,
    /// The threshold that gives `best_f1`.
    #[serde(rename = "best_f1_thresh", skip_serializing_if = "Option::is_none")]
    pub best_f1_thresh: Option<f64>,
}

/// A no-answer probability file (question id → probability, or any score where higher means
/// "no answer", such as run_qa.py's null_odds), kept in the file's order: the official
/// best-threshold search sorts questions by probability with Python's stable sort, so questions of
/// equal probability stay in file order, and that order decides where the best threshold lands.
#[derive(Debug, Clone)]
pub struct NoAnswerProbabilities {
    path: PathBuf,
    entries: Vec<(String, f64)>,
    index: HashMap<String, usize>,
}

impl NoAnswerProbabilities {
    /// Reads a JSON object of numbers.
    pub fn load(path: &Path) -> Result<Self, SquadError> {
        let bytes = std::fs::read(path).map_err(|source| SquadError::Io { path: path.to_owned(), source })?;
        Self::parse(&bytes, path)
    }

    /// Parses a JSON object of numbers; `path` names the file in errors. A repeated key keeps its
    /// first position and its last value, as Python's json.load does.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, SquadError> {
        let OrderedNumbers(pairs) = serde_json::from_slice(bytes).map_err(|e| SquadError::Invalid {
            path: path.to_owned(),
            message: format!("expected a JSON object from question id to no-answer probability: {e}"),
        })?;
        let mut entries: Vec<(String, f64)> = Vec::with_capacity(pairs.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(pairs.len());
        for (id, p) in pairs {
            match index.get(&id) {
                Some(&i) => entries[i].1 = p,
                None => {
                    index.insert(id.clone(), entries.len());
                    entries.push((id, p));
                }
            }
        }
        Ok(NoAnswerProbabilities { path: path.to_owned(), entries, index })
    }

    /// The probability of question `id`.
    pub fn get(&self, id: &str) -> Option<f64> {
        self.index.get(id).map(|&i| self.entries[i].1)
    }

    /// Questions in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No questions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A JSON object of numbers in document order (serde_json's own map sorts its keys unless a
/// crate-wide feature is switched on, so the pairs are collected by hand).
struct OrderedNumbers(Vec<(String, f64)>);

impl<'de> serde::Deserialize<'de> for OrderedNumbers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = OrderedNumbers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedNumbers, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, f64>()? {
                    pairs.push(pair);
                }
                Ok(OrderedNumbers(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    // Python's `\b(a|an|the)\b` with re.UNICODE matches exactly the maximal word-character runs
    // that are an article, so replace such runs with a space.
    let mut no_articles = String::with_capacity(no_punc.len());
    let mut word = String::new();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punc.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn tokens(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    normalize_answer(s).split(' ').filter(|t| !t.is_empty()).map(String::from).collect()
}

fn compute_f1(gold: &str, pred: &str) -> f64 {
    let (gold, pred) = (tokens(gold), tokens(pred));
    if gold.is_empty() || pred.is_empty() {
        return f64::from(u8::from(gold == pred));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pred {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// Scores `predictions` (question id → answer text, "" for no answer) on `data`. Questions without
/// a prediction are skipped in the totals, as in the official script.
pub fn evaluate(data: &SquadFile, predictions: &BTreeMap<String, String>) -> Metrics {
    let raw = RawScores::new(data, predictions);
    summarise(&raw.exact, &raw.f1, &raw.has_ans)
}

/// evaluate-v2.0.py with `--na-prob-file` and `--na-prob-thresh`: a question whose no-answer
/// probability exceeds `na_prob_thresh` counts as answered with "", and (with a file) the best
/// exact/F1 any threshold reaches and those thresholds are added. Without a file every
/// probability is 0.0, as in the official script. Every predicted question must have a probability.
pub fn evaluate_with_thresholds(
    data: &SquadFile,
    predictions: &BTreeMap<String, String>,
    na_probs: Option<&NoAnswerProbabilities>,
    na_prob_thresh: f64,
) -> Result<Metrics, SquadError> {
    let raw = RawScores::new(data, predictions);
    let probability = |id: &str| -> Result<f64, SquadError> {
        match na_probs {
            None => Ok(0.0),
            Some(p) => p.get(id).ok_or_else(|| SquadError::Invalid {
                path: p.path.clone(),
                message: format!("no no-answer probability for question {id}"),
            }),
        }
    };
    // apply_no_ans_threshold: predicted "no answer" scores 1 on unanswerable questions, 0 otherwise.
    let mut exact = raw.exact.clone();
    let mut f1 = raw.f1.clone();
    for (k, id) in raw.ids.iter().enumerate() {
        if probability(id)? > na_prob_thresh {
            let score = f64::from(u8::from(!raw.has_ans[k]));
            exact[k] = score;
            f1[k] = score;
        }
    }
    let mut metrics = summarise(&exact, &f1, &raw.has_ans);
    if let Some(na_probs) = na_probs {
        let (best_exact, exact_thresh) = find_best_thresh(data, predictions, &raw, &raw.exact, na_probs);
        let (best_f1, f1_thresh) = find_best_thresh(data, predictions, &raw, &raw.f1, na_probs);
        metrics.best_exact = Some(best_exact);
        metrics.best_exact_thresh = Some(exact_thresh);
        metrics.best_f1 = Some(best_f1);
        metrics.best_f1_thresh = Some(f1_thresh);
    }
    Ok(metrics)
}

/// find_best_thresh: start from "no answer everywhere" (the unanswerable questions' count), walk
/// the questions in increasing probability (stable, file order on ties), and let each answer
/// count; the best running score and the probability where it was reached win.
fn find_best_thresh(
    data: &SquadFile,
    predictions: &BTreeMap<String, String>,
    raw: &RawScores,
    scores: &[f64],
    na_probs: &NoAnswerProbabilities,
) -> (f64, f64) {
    let num_no_ans = data.examples.iter().filter(|e| e.answers.is_empty()).count();
    let position: HashMap<&str, usize> = raw.ids.iter().enumerate().map(|(k, id)| (id.as_str(), k)).collect();
    let mut order: Vec<&(String, f64)> = na_probs.entries.iter().collect();
    // Rust's sort_by is stable, like Python's sorted; total_cmp orders NaN after every number,
    // where Python's comparisons with NaN leave the order unspecified.
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut cur_score = num_no_ans as f64;
    let mut best_score = cur_score;
    let mut best_thresh = 0.0;
    for (id, p) in order {
        let Some(&k) = position.get(id.as_str()) else { continue };
        let diff = if raw.has_ans[k] {
            scores[k]
        } else if predictions.get(id).is_some_and(|text| !text.is_empty()) {
            -1.0
        } else {
            0.0
        };
        cur_score += diff;
        if cur_score > best_score {
            best_score = cur_score;
            best_thresh = *p;
        }
    }
    (100.0 * best_score / raw.ids.len() as f64, best_thresh)
}

/// get_raw_scores: per predicted question (in data order), the best exact and F1 over its gold
/// answers, and whether it is answerable.
struct RawScores {
    ids: Vec<String>,
    exact: Vec<f64>,
    f1: Vec<f64>,
    has_ans: Vec<bool>,
}

impl RawScores {
    fn new(data: &SquadFile, predictions: &BTreeMap<String, String>) -> Self {
        let mut raw = RawScores { ids: Vec::new(), exact: Vec::new(), f1: Vec::new(), has_ans: Vec::new() };
        for example in &data.examples {
            let Some(pred) = predictions.get(&example.id) else { continue };
            let golds: Vec<&str> = {
                let g: Vec<&str> =
                    example.answers.iter().map(String::as_str).filter(|a| !normalize_answer(a).is_empty()).collect();
                if g.is_empty() {
                    vec![""]
                } else {
                    g
                }
            };
            let pred_norm = normalize_answer(pred);
            raw.ids.push(example.id.clone());
            raw.exact
                .push(golds.iter().map(|g| f64::from(u8::from(normalize_answer(g) == pred_norm))).fold(0.0, f64::max));
            raw.f1.push(golds.iter().map(|g| compute_f1(g, pred)).fold(0.0, f64::max));
            raw.has_ans.push(!example.answers.is_empty());
        }
        raw
    }
}

/// make_eval_dict and merge_eval: totals, then the HasAns and NoAns splits.
fn summarise(exact: &[f64], f1: &[f64], has_ans: &[bool]) -> Metrics {
    // Python (3.11, whose sum() adds floats one by one; 3.12 compensates): 100.0 * sum(scores) /
    // total, summing in question order.
    let mean = |v: &mut dyn Iterator<Item = f64>, n: usize| 100.0 * v.sum::<f64>() / n as f64;
    let total = exact.len();
    let pick = |scores: &[f64], want: bool| -> (f64, usize) {
        let n = has_ans.iter().filter(|&&h| h == want).count();
        (mean(&mut scores.iter().zip(has_ans).filter(|(_, &h)| h == want).map(|(s, _)| *s), n), n)
    };
    let (has_exact, has_n) = pick(exact, true);
    let (has_f1, _) = pick(f1, true);
    let (no_exact, no_n) = pick(exact, false);
    let (no_f1, _) = pick(f1, false);
    Metrics {
        exact: mean(&mut exact.iter().copied(), total),
        f1: mean(&mut f1.iter().copied(), total),
        total,
        has_ans_exact: (has_n > 0).then_some(has_exact),
        has_ans_f1: (has_n > 0).then_some(has_f1),
        has_ans_total: (has_n > 0).then_some(has_n),
        no_ans_exact: (no_n > 0).then_some(no_exact),
        no_ans_f1: (no_n > 0).then_some(no_f1),
        no_ans_total: (no_n > 0).then_some(no_n),
        best_exact: None,
        best_exact_thresh: None,
        best_f1: None,
        best_f1_thresh: None,
    }
}

/// Agreement of `predictions` with `reference` predictions (question id → text), scored like the
/// official metric with the reference answer as the only gold answer: (exact, f1) in percent over
/// the reference's questions, and how many predictions are identical strings.
pub fn agreement(predictions: &BTreeMap<String, String>, reference: &BTreeMap<String, String>) -> (f64, f64, usize) {
    let (mut exact, mut f1, mut identical) = (0.0, 0.0, 0);
    for (id, want) in reference {
        let got = predictions.get(id).map_or("", String::as_str);
        exact += f64::from(u8::from(normalize_answer(want) == normalize_answer(got)));
        f1 += compute_f1(want, got);
        identical += usize::from(want == got);
    }
    let n = reference.len().max(1) as f64;
    (100.0 * exact / n, 100.0 * f1 / n, identical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_official_script() {
        assert_eq!(normalize_answer("The  Quick, brown fox!"), "quick brown fox");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        assert_eq!(normalize_answer("theater"), "theater");
        assert_eq!(normalize_answer("A-team"), "ateam");
        assert_eq!(normalize_answer("  "), "");
    }

    #[test]
    fn f1_counts_shared_tokens() {
        assert_eq!(compute_f1("the cat sat", "cat sat down"), 2.0 * (2.0 / 3.0) * 1.0 / ((2.0 / 3.0) + 1.0));
        assert_eq!(compute_f1("", ""), 1.0);
        assert_eq!(compute_f1("", "x"), 0.0);
    }

    #[test]
    fn probability_files_keep_file_order_and_python_duplicate_rules() {
        let p = NoAnswerProbabilities::parse(br#"{"b": 0.5, "a": 0.25, "b": 1}"#, Path::new("na.json")).unwrap();
        assert_eq!(p.entries, vec![("b".to_string(), 1.0), ("a".to_string(), 0.25)]);
        assert_eq!(p.get("a"), Some(0.25));
        assert!(NoAnswerProbabilities::parse(b"[0.5]", Path::new("na.json")).is_err());
    }

    fn tiny_squad() -> SquadFile {
        let json = br#"{"data": [{"title": "t", "paragraphs": [{"context": "red fox", "qas": [
            {"id": "q1", "question": "?", "answers": [{"text": "red", "answer_start": 0}], "is_impossible": false},
            {"id": "q2", "question": "?", "answers": [], "is_impossible": true},
            {"id": "q3", "question": "?", "answers": [{"text": "fox", "answer_start": 4}], "is_impossible": false}]}]}]}"#;
        SquadFile::parse(json, Path::new("t.json")).unwrap()
    }

    #[test]
    fn best_threshold_depends_on_file_order_among_ties() {
        let squad = tiny_squad();
        let preds: BTreeMap<String, String> =
            [("q1", "red"), ("q2", "fox"), ("q3", "fox")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        // Equal probabilities (values from golden/squad_v2_eval.py): with q2 (a wrong answer to an
        // unanswerable question, -1) first in the file the running score peaks at 2 of 3; with it
        // last, at 3 of 3 before q2 pulls it down.
        let q2_first =
            NoAnswerProbabilities::parse(br#"{"q2": 0.5, "q1": 0.5, "q3": 0.5}"#, Path::new("na.json")).unwrap();
        let m = evaluate_with_thresholds(&squad, &preds, Some(&q2_first), 1.0).unwrap();
        assert_eq!(
            (m.exact, m.best_exact, m.best_exact_thresh),
            (100.0 * 2.0 / 3.0, Some(100.0 * 2.0 / 3.0), Some(0.5))
        );
        let q2_last =
            NoAnswerProbabilities::parse(br#"{"q1": 0.5, "q3": 0.5, "q2": 0.5}"#, Path::new("na.json")).unwrap();
        let m = evaluate_with_thresholds(&squad, &preds, Some(&q2_last), 1.0).unwrap();
        assert_eq!((m.best_exact, m.best_f1_thresh), (Some(100.0), Some(0.5)));
        // Thresholding: only q2's probability exceeds 0.4, so it counts as "no answer" (right).
        let apart =
            NoAnswerProbabilities::parse(br#"{"q2": 0.5, "q1": 0.1, "q3": 0.1}"#, Path::new("na.json")).unwrap();
        let m = evaluate_with_thresholds(&squad, &preds, Some(&apart), 0.4).unwrap();
        assert_eq!(m.exact, 100.0);
        let missing = NoAnswerProbabilities::parse(br#"{"q2": 0.5}"#, Path::new("na.json")).unwrap();
        assert!(evaluate_with_thresholds(&squad, &preds, Some(&missing), 1.0)
            .unwrap_err()
            .to_string()
            .contains("question q1"));
    }
}
