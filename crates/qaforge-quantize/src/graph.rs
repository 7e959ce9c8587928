//! `--exclude` patterns matched against nodes, and the kept-float reasons of a summary. Reading
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

/// Kept-float decisions with their reasons, by node name (ordered for reports).
pub type Reasons = BTreeMap<String, String>;

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
