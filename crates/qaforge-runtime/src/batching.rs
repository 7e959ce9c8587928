//! Batches of windows under a token budget, shared by `answer --batch` and the server's dynamic
//! batcher: a batch costs its padded size (rows × its longest row, padding included, which is
//! what an engine computes), and whether rows may share a batch at all depends on the artifact's arithmetic
//! ([`batch_coupling`]).

use tract_onnx::pb::ModelProto;

/// What one batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBudget {
    /// The padded cost a batch may reach: rows × its longest row, in tokens. A single row longer
    /// than this still runs, alone.
    pub max_tokens: usize,
    /// The rows a batch may hold.
    pub max_rows: usize,
}

impl BatchBudget {
    /// Whether a batch of `rows` rows whose longest is `longest` tokens fits (a batch of one
    /// always fits).
    pub fn fits(&self, rows: usize, longest: usize) -> bool {
        rows <= 1 || (rows <= self.max_rows && rows * longest <= self.max_tokens)
    }
}

/// Rows `order` (indices, sorted by their length ascending) cut into consecutive batches that fit
/// `budget`, where `cost_length(row)` is the length a row pads its batch to. Rows keep the order
/// given, so a sorted order makes batches of similar lengths.
pub fn pack(order: &[usize], cost_length: impl Fn(usize) -> usize, budget: BatchBudget) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &row in order {
        let length = cost_length(row).max(longest);
        if !current.is_empty() && !budget.fits(current.len() + 1, length) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(cost_length(row));
        current.push(row);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Ops that quantize a tensor with a scale computed at run time over the whole tensor, so that one
/// row's result depends on the other rows of its batch (and on their padding).
const BATCH_COUPLING_OPS: &[&str] = &["DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"];

/// ONNX's element type number for float16.
const FLOAT16: i32 = 10;

/// Why a row's logits in `model` depend on the rows batched beside it, or `None` where every row
/// is computed alone and batches only change speed. Found by the graph's structure, so it holds
/// for any export:
/// - an op that takes one quantization scale over its whole input at run time (int8-dynamic):
///   a neighbour's large activation coarsens every row's quantization;
/// - arithmetic in float16 (float16 weights, or a cast to float16): the engines' float16 kernels
///   order and round a row's sums differently with the batch's shape (tract on mobilebert-tiny:
///   a question's no-answer odds move by up to 0.025 between a batch of one and a padded batch
///   of many, against 1e-5 in float32), enough to flip a near tie.
///
/// Callers run such artifacts one window to a batch, as verify and an app run them.
pub fn batch_coupling(model: &ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    if let Some(node) = graph.node.iter().find(|n| BATCH_COUPLING_OPS.contains(&n.op_type.as_str())) {
        return Some(format!(
            "`{}` ({}) quantizes its input with one scale over the whole batch, so a row's logits depend on the rows beside it",
            node.name, node.op_type
        ));
    }
    let float16_weight =
        graph.initializer.iter().find(|t| t.data_type == FLOAT16).map(|t| format!("weight `{}`", t.name));
    let float16_cast = || {
        graph
            .node
            .iter()
            .find(|n| n.op_type == "Cast" && n.attribute.iter().any(|a| a.name == "to" && a.i == FLOAT16 as i64))
            .map(|n| format!("cast `{}`", n.name))
    };
    float16_weight.or_else(float16_cast).map(|what| {
        format!("it computes in float16 ({what}), whose kernels round a row's sums differently with the batch's shape")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_under_the_padded_budget_and_keep_the_order() {
        let lengths = [10, 12, 30, 31, 100, 400];
        let budget = BatchBudget { max_tokens: 64, max_rows: 8 };
        let batches = pack(&[0, 1, 2, 3, 4, 5], |i| lengths[i], budget);
        assert_eq!(batches, vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]);
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 64, "{b:?}");
        }
        let rows = BatchBudget { max_tokens: 1 << 20, max_rows: 2 };
        assert_eq!(pack(&[0, 1, 2], |i| lengths[i], rows), vec![vec![0, 1], vec![2]]);
        assert!(pack(&[], |i| lengths[i], budget).is_empty());
    }

    #[test]
    fn dynamic_quantization_couples_rows() {
        use tract_onnx::pb::{GraphProto, NodeProto};
        let node = |op: &str| NodeProto { op_type: op.into(), name: format!("{op}_0"), ..Default::default() };
        let model = |ops: &[&str]| ModelProto {
            graph: Some(GraphProto { node: ops.iter().map(|o| node(o)).collect(), ..Default::default() }),
            ..Default::default()
        };
        assert!(batch_coupling(&model(&["MatMul", "Softmax", "QuantizeLinear"])).is_none());
        assert!(batch_coupling(&model(&["MatMul", "DynamicQuantizeLinear"]))
            .unwrap()
            .contains("DynamicQuantizeLinear"));
    }

    #[test]
    fn float16_arithmetic_depends_on_the_batch() {
        use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};
        let float32 = TensorProto { name: "w".into(), data_type: 1, ..Default::default() };
        let float16 = TensorProto { name: "w16".into(), data_type: FLOAT16, ..Default::default() };
        let model = |initializer: Vec<TensorProto>, node: Vec<NodeProto>| ModelProto {
            graph: Some(GraphProto { initializer, node, ..Default::default() }),
            ..Default::default()
        };
        assert!(batch_coupling(&model(vec![float32.clone()], vec![])).is_none());
        assert!(batch_coupling(&model(vec![float32, float16], vec![])).unwrap().contains("`w16`"));
        let cast = |to: i64| NodeProto {
            op_type: "Cast".into(),
            name: "to_half".into(),
            attribute: vec![AttributeProto { name: "to".into(), i: to, ..Default::default() }],
            ..Default::default()
        };
        assert!(batch_coupling(&model(vec![], vec![cast(1)])).is_none());
        assert!(batch_coupling(&model(vec![], vec![cast(FLOAT16 as i64)])).unwrap().contains("float16"));
    }
}
