//! The official SQuAD v2 metric (evaluate-v2.0.py), restated operation for operation.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::data::SquadFile;

/// evaluate-v2.0.py's output without no-answer probabilities (its key order).
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    let mut exact = Vec::new();
    let mut f1 = Vec::new();
    let mut has_ans = Vec::new();
    for example in &data.examples {
        let Some(pred) = predictions.get(&example.id) else { continue };
        let golds: Vec<&str> = {
            let g: Vec<&str> = example.answers.iter().map(String::as_str).filter(|a| !normalize_answer(a).is_empty()).collect();
            if g.is_empty() { vec![""] } else { g }
        };
        let pred_norm = normalize_answer(pred);
        exact.push(golds.iter().map(|g| f64::from(u8::from(normalize_answer(g) == pred_norm))).fold(0.0, f64::max));
        f1.push(golds.iter().map(|g| compute_f1(g, pred)).fold(0.0, f64::max));
        has_ans.push(!example.answers.is_empty());
    }
    // Python: 100.0 * sum(scores) / total, summing in question order.
    let mean = |v: &mut dyn Iterator<Item = f64>, n: usize| 100.0 * v.sum::<f64>() / n as f64;
    let total = exact.len();
    let pick = |scores: &[f64], want: bool| -> (f64, usize) {
        let n = has_ans.iter().filter(|&&h| h == want).count();
        (mean(&mut scores.iter().zip(&has_ans).filter(|(_, &h)| h == want).map(|(s, _)| *s), n), n)
    };
    let (has_exact, has_n) = pick(&exact, true);
    let (has_f1, _) = pick(&f1, true);
    let (no_exact, no_n) = pick(&exact, false);
    let (no_f1, _) = pick(&f1, false);
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
}
