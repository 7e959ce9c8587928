//! Reading and editing an ONNX graph in place: initializers by name, producers and consumers,
//! which tensors are float32, fresh unique names, and name/op pattern matching.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto};

use crate::QuantizeError;

/// Float32 values of an initializer, from raw_data or float_data.
pub fn f32_values(t: &TensorProto) -> Result<Vec<f32>, QuantizeError> {
    if t.data_type != DataType::Float as i32 {
        return Err(QuantizeError::Graph(format!("initializer `{}` is not float32", t.name)));
    }
    let count = element_count(t)?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != count {
        return Err(QuantizeError::Graph(format!("initializer `{}` holds {} values for dims {:?}", t.name, values.len(), t.dims)));
    }
    Ok(values)
}

/// Number of elements the dims of `t` claim (checked for overflow and negative dims).
pub fn element_count(t: &TensorProto) -> Result<usize, QuantizeError> {
    t.dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
        .ok_or_else(|| QuantizeError::Graph(format!("initializer `{}` has invalid dims {:?}", t.name, t.dims)))
}

/// A tensor message with raw little-endian data.
pub fn raw_tensor(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name: name.to_string(), dims: dims.to_vec(), data_type: data_type as i32, raw_data, ..Default::default() }
}

/// A node of one op with the given inputs and outputs, named `name`.
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op_type.to_string(),
        attribute: attributes,
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

/// An integer attribute's value on a node.
pub fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Element types of every tensor of a graph that can be known without running it: graph inputs,
/// initializers, and node outputs by each op's typing rule. Unknown types are absent.
pub fn element_types(graph: &GraphProto) -> HashMap<String, i32> {
    qaforge_onnx::element_types(graph)
}

/// Lookup tables over a graph's nodes and initializers.
pub struct GraphIndex {
    /// Initializer position by name.
    pub initializers: HashMap<String, usize>,
    /// Node position producing each tensor.
    pub producer: HashMap<String, usize>,
    /// Node positions consuming each tensor, in graph order.
    pub consumers: HashMap<String, Vec<usize>>,
    /// Graph output names.
    pub outputs: BTreeSet<String>,
}

impl GraphIndex {
    /// Indexes `graph`.
    pub fn new(graph: &GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.clone(), i);
            }
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                let list = consumers.entry(input.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        GraphIndex {
            initializers: graph.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            producer,
            consumers,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        }
    }
}

/// Fresh names that do not clash with any existing tensor or node name of a graph.
pub struct Names {
    taken: BTreeSet<String>,
}

impl Names {
    /// Every name used in `graph`.
    pub fn of(graph: &GraphProto) -> Self {
        let mut taken = BTreeSet::new();
        taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
        taken.extend(graph.input.iter().map(|t| t.name.clone()));
        for n in &graph.node {
            taken.insert(n.name.clone());
            taken.extend(n.output.iter().cloned());
            taken.extend(n.input.iter().cloned());
        }
        Names { taken }
    }

    /// `base` if free, else `base.2`, `base.3`...
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 2;
        while self.taken.contains(&name) {
            name = format!("{base}.{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}

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
