//! Which weight products one quantize request quantizes, and how: decided once per request
//! ([`Selection::of`]) from the graph's structure, `--exclude` and `--int8-qa-head`, and read by
//! every step (calibration, input statistics, the int8 and int4 passes) instead of each
//! matching the patterns against the graph again.

use std::collections::{BTreeSet, HashSet};

use qaforge_onnx::edit::GraphIndex;
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

use crate::graph::{matching_pattern, KeptFloat, Reasons};
use crate::QuantizeError;

/// What happens to one MatMul by a constant weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Weights and activation int8.
    Quantize,
    /// Weights stored int8 (dequantized to float), activation float.
    WeightOnly(KeptFloat),
    /// Everything float.
    Float(KeptFloat),
}

/// The decision for every product by a constant weight, and which of them form the QA head.
#[derive(Debug, Clone)]
pub struct Selection {
    decisions: Vec<(usize, Decision)>,
    heads: BTreeSet<usize>,
}

/// A product int4 stores in blocks by default: its node, output, input, weight (an index into the
/// graph's initializers, decoded only where the values are needed) and shape `[k, n]`.
pub(crate) struct Product {
    pub node: String,
    pub output: String,
    pub input: String,
    pub weight: usize,
    pub k: usize,
    pub n: usize,
}

impl Selection {
    /// Decides every MatMul by a constant 2-D float weight, in graph order: the QA head stays float
    /// (unless `int8_qa_head`), `exclude` patterns keep nodes float, the embedding path keeps float
    /// activations. The QA head and the embedding path are found by the graph's structure, not by
    /// node names, so that graphs from other exporters get the same defaults.
    pub fn of(graph: &GraphProto, exclude: &[String], int8_qa_head: bool) -> Self {
        let index = GraphIndex::new(graph);
        let is_weight_matmul = |n: &NodeProto| {
            n.op_type == "MatMul"
                && n.input.len() == 2
                && index.initializers.get(&n.input[1]).is_some_and(|&i| is_float_matrix(&graph.initializer[i]))
        };
        let heads = qa_heads(graph, &index);
        let decisions = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| is_weight_matmul(n))
            .map(|(i, n)| {
                let decision = if heads.contains(&i) && !int8_qa_head {
                    Decision::Float(KeptFloat::QaHead)
                } else if let Some(p) = matching_pattern(exclude, n) {
                    Decision::Float(KeptFloat::Excluded(p.to_string()))
                } else if reads_embedding_tables(graph, &index, &n.input[0]) {
                    Decision::WeightOnly(KeptFloat::EmbeddingPath)
                } else {
                    Decision::Quantize
                };
                (i, decision)
            })
            .collect();
        Selection { decisions, heads }
    }

    /// The selection of one quantize request: [`Selection::of`] with its `--exclude` patterns
    /// and QA head choice, then every product still to quantize whose name or op type a
    /// `--float-activations` pattern matches keeps float activations with int8 weights
    /// (`--exclude` wins where both match: it keeps more float).
    pub fn for_request(graph: &GraphProto, options: &crate::QuantizeOptions) -> Self {
        let mut selection = Selection::of(graph, &options.exclude, options.int8_qa_head);
        for (i, decision) in &mut selection.decisions {
            if *decision != Decision::Quantize {
                continue;
            }
            if let Some(p) = matching_pattern(&options.float_activations, &graph.node[*i]) {
                *decision = Decision::WeightOnly(KeptFloat::FloatActivations(p.to_string()));
            }
        }
        selection
    }

    /// Every product by a constant weight with its decision, in graph order.
    pub fn decisions(&self) -> &[(usize, Decision)] {
        &self.decisions
    }

    /// Whether node `i` is part of the QA head.
    pub fn is_qa_head(&self, i: usize) -> bool {
        self.heads.contains(&i)
    }

    /// The activations int8-static calibrates: the inputs of the products it quantizes, in graph
    /// order without repeats.
    pub fn calibration_tensors(&self, graph: &GraphProto) -> Vec<String> {
        let mut tensors: Vec<String> = Vec::new();
        for (i, decision) in &self.decisions {
            let x = &graph.node[*i].input[0];
            if *decision == Decision::Quantize && !tensors.contains(x) {
                tensors.push(x.clone());
            }
        }
        tensors
    }

    /// The products int4 would store in blocks (not the QA head, the embedding path or what
    /// `--exclude` keeps), in graph order.
    pub(crate) fn block_products(&self, graph: &GraphProto) -> Result<Vec<Product>, QuantizeError> {
        let mut out = Vec::new();
        for (i, decision) in &self.decisions {
            if *decision != Decision::Quantize || self.heads.contains(i) {
                continue;
            }
            let n = &graph.node[*i];
            let weight = graph
                .initializer
                .iter()
                .position(|t| t.name == n.input[1])
                .ok_or_else(|| QuantizeError::Graph(format!("no initializer `{}`", n.input[1])))?;
            let dims = &graph.initializer[weight].dims;
            out.push(Product {
                node: n.name.clone(),
                output: n.output[0].clone(),
                input: n.input[0].clone(),
                weight,
                k: dims[0] as usize,
                n: dims[1] as usize,
            });
        }
        Ok(out)
    }
}

/// Ops that only select, move or re-type data: a tensor that passes through them keeps its role.
const DATA_MOVEMENT: &[&str] = &[
    "Gather",
    "Slice",
    "Pad",
    "Concat",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Split",
    "Identity",
    "Flatten",
    "Expand",
    "Cast",
    "Shape",
    "Constant",
    "ConstantOfShape",
];

/// The QA head: the MatMuls from which a graph output is reached without passing another MatMul
/// (walking back from every output, stopping at the first MatMul on each path).
fn qa_heads(graph: &GraphProto, index: &GraphIndex) -> BTreeSet<usize> {
    let mut heads = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    while let Some(tensor) = stack.pop() {
        if !seen.insert(tensor) {
            continue;
        }
        let Some(&p) = index.producer.get(tensor) else { continue };
        let n = &graph.node[p];
        if n.op_type == "MatMul" {
            heads.insert(p);
            continue;
        }
        stack.extend(n.input.iter().filter(|i| !i.is_empty()).map(String::as_str));
    }
    heads
}

/// Whether `tensor` is rows of embedding tables moved into place: every path back from it passes
/// only data-movement ops and reaches a Gather from an initializer table (MobileBERT's embedding
/// transformation reads the word embeddings' trigram concatenation). A normalization, an
/// addition or any other computation on the way means it is not.
fn reads_embedding_tables(graph: &GraphProto, index: &GraphIndex, tensor: &str) -> bool {
    let mut found_table = false;
    let mut seen = HashSet::new();
    let mut stack = vec![tensor];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        let Some(&p) = index.producer.get(t) else { continue };
        let n = &graph.node[p];
        if !DATA_MOVEMENT.contains(&n.op_type.as_str()) {
            return false;
        }
        if n.op_type == "Gather" && n.input.first().is_some_and(|table| index.initializers.contains_key(table)) {
            found_table = true;
            continue;
        }
        stack.extend(
            n.input.iter().filter(|i| !i.is_empty() && !index.initializers.contains_key(*i)).map(String::as_str),
        );
    }
    found_table
}

pub(crate) fn is_float_matrix(t: &TensorProto) -> bool {
    t.data_type == DataType::Float as i32 && t.dims.len() == 2
}

/// MatMuls whose both inputs are activations (attention scores and context) stay float: the
/// context MatMul reads Softmax's output, and quantizing Softmax's neighbours is the trap that
/// tract turns into a fixed-point softmax stuck at 255 (see the softmax_trap test).
pub fn activation_matmuls(graph: &GraphProto) -> Reasons {
    let index = GraphIndex::new(graph);
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul" && n.input.len() == 2 && !index.initializers.contains_key(&n.input[1]))
        .map(|n| (n.name.clone(), KeptFloat::ActivationProduct))
        .collect()
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{NodeProto, TensorProto, ValueInfoProto};

    use super::*;
    use crate::{Precision, QuantizeOptions};

    /// x → layer.0.query → layer.0.output → head → logits, every weight 2 × 2.
    fn graph() -> GraphProto {
        let matmul = |name: &str, input: &str, weight: &str, output: &str| NodeProto {
            name: name.into(),
            op_type: "MatMul".into(),
            input: vec![input.into(), weight.into()],
            output: vec![output.into()],
            ..Default::default()
        };
        let weight = |name: &str| TensorProto {
            name: name.into(),
            dims: vec![2, 2],
            data_type: DataType::Float as i32,
            float_data: vec![1.0, 0.5, -0.5, 1.0],
            ..Default::default()
        };
        GraphProto {
            node: vec![
                matmul("layer.0.query", "x", "w0", "a"),
                matmul("layer.0.output", "a", "w1", "b"),
                matmul("head", "b", "w2", "logits"),
            ],
            initializer: ["w0", "w1", "w2"].map(weight).to_vec(),
            input: vec![ValueInfoProto { name: "x".into(), ..Default::default() }],
            output: vec![ValueInfoProto { name: "logits".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn float_activation_patterns_keep_int8_weights_and_exclusions_win() {
        let g = graph();
        let mut options = QuantizeOptions::for_tests(Precision::Int8Static, &["layer.0.query"]);
        options.float_activations = vec!["layer.0.*".into()];
        let selection = Selection::for_request(&g, &options);
        assert_eq!(
            selection.decisions(),
            [
                (0, Decision::Float(KeptFloat::Excluded("layer.0.query".into()))),
                (1, Decision::WeightOnly(KeptFloat::FloatActivations("layer.0.*".into()))),
                (2, Decision::Float(KeptFloat::QaHead)),
            ]
        );
        // Only quantized products' inputs are calibrated: none is left here.
        assert!(selection.calibration_tensors(&g).is_empty());
        // Without the pattern the request's selection is `of`'s.
        options.float_activations.clear();
        assert_eq!(
            Selection::for_request(&g, &options).decisions(),
            Selection::of(&g, &options.exclude, false).decisions()
        );
    }
}
