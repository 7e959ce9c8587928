//! `--exclude` patterns matched against nodes, and the kept-float reasons of a summary
//! ([`KeptFloat`]). Reading
//! and editing the graph is qaforge-onnx's graph editor ([`qaforge_onnx::edit`]).

use std::collections::BTreeMap;

use tract_onnx::pb::NodeProto;

/// Whether `pattern` matches `text`: `*` matches any run of characters, everything else itself.
/// (Hand-written: a glob crate for one wildcard is more dependency than code.)
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The first of `patterns` that matches the node's name or op type.
pub fn matching_pattern<'a>(patterns: &'a [String], node: &NodeProto) -> Option<&'a str> {
    patterns.iter().find(|p| glob_match(p, &node.name) || glob_match(p, &node.op_type)).map(String::as_str)
}

/// Why a node stays float (or keeps float activations): the reasons every pass gives, typed, each
/// with the words summaries and reports print.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeptFloat {
    /// The QA head (int8 precisions, by default): it decides every answer.
    QaHead,
    /// The QA head under int4 with `--int8-qa-head`: int8 weights, float activations.
    QaHeadInt8Weights,
    /// A node an `--exclude` pattern (this one) matches.
    Excluded(String),
    /// A product a `--float-activations` pattern (this one) matches: int8 weights, float
    /// activations.
    FloatActivations(String),
    /// A product on the embedding path (int8 precisions): int8 weights, float activations.
    EmbeddingPath,
    /// A product on the embedding path (int4): int8 weights, float activations.
    EmbeddingPathInt4,
    /// A product of two activations (attention scores or context, next to Softmax).
    ActivationProduct,
    /// int4 under a size budget: the product stays float.
    BudgetFloat,
    /// int4 under a size budget: int8 weights, float activations.
    BudgetInt8,
    /// fp16: an op (this one) computed in float32 by default.
    Fp16KeptOp(String),
    /// fp16: the node produces a graph output.
    GraphOutput,
    /// fp16: the node reads a constant (this one) beyond float16's range.
    BeyondHalf(String),
    /// The sensitivity search kept this group (`layer.N`, the embedding path) float.
    SensitivitySearch(String),
    /// The sensitivity search kept this unit's activations float (its weights int8).
    SensitivitySearchActivations(String),
}

impl std::fmt::Display for KeptFloat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptFloat::QaHead => {
                f.write_str("QA head (the last MatMul before the start/end logits): it decides every answer (default)")
            }
            KeptFloat::QaHeadInt8Weights => f.write_str("QA head: int8 weights (--int8-qa-head), float activations"),
            KeptFloat::Excluded(pattern) => write!(f, "excluded by --exclude {pattern}"),
            KeptFloat::FloatActivations(pattern) => {
                write!(f, "int8 weights, float activations (--float-activations {pattern})")
            }
            KeptFloat::EmbeddingPath => {
                f.write_str("embedding path: activations stay float (default), weights stored int8")
            }
            KeptFloat::EmbeddingPathInt4 => f.write_str("embedding path: int8 weights, float activations (default)"),
            KeptFloat::ActivationProduct => {
                f.write_str("activation × activation (attention scores or context next to Softmax) stays float")
            }
            KeptFloat::BudgetFloat => f.write_str("size budget: float"),
            KeptFloat::BudgetInt8 => f.write_str("size budget: int8 weights, float activations"),
            KeptFloat::Fp16KeptOp(op) => {
                write!(f, "{op} stays float32 by default (overflow or accumulation error in float16)")
            }
            KeptFloat::GraphOutput => f.write_str("produces a graph output, which stays float32"),
            KeptFloat::BeyondHalf(constant) => {
                write!(f, "reads `{constant}`, a constant beyond float16's range (±65504)")
            }
            KeptFloat::SensitivitySearch(group) => {
                write!(f, "kept float by the sensitivity search ({group} ranks among the most harmful units)")
            }
            KeptFloat::SensitivitySearchActivations(unit) => write!(
                f,
                "int8 weights, float activations: kept by the sensitivity search ({unit} ranks among the most harmful units)"
            ),
        }
    }
}

impl serde::Serialize for KeptFloat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Kept-float decisions with their reasons, by node name (ordered for reports).
pub type Reasons = BTreeMap<String, KeptFloat>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_names_and_wildcards() {
        assert!(glob_match("layer.3.*", "layer.3.ffn.1.intermediate"));
        assert!(glob_match("*.intermediate", "layer.3.ffn.1.intermediate"));
        assert!(glob_match("MatMul", "MatMul"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("layer.3.*", "layer.30"));
        assert!(!glob_match("layer.1", "layer.12"));
        assert!(glob_match("layer.*.attention.*", "layer.12.attention.query"));
    }
}
