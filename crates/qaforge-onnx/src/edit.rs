//! The one graph editor every pass uses (fp16, int8, the ONNX Runtime flavour): reading a graph
//! (initializers and constants by name, producers and consumers, typed attributes, the nodes of
//! one op) and editing it through a plan of node removals and insertions applied in one go.
//!
//! Passes find the roles they rewrite by structure, never by name, so they serve any exporter's
//! graph; this module gives them the lookups and the splicing, and nothing model-specific.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto,
};

/// A graph that cannot be read as a pass needs it (the message names the tensor or node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GraphError(pub String);

/// Float32 values of a tensor, from raw_data or float_data.
pub fn f32_values(t: &TensorProto) -> Result<Vec<f32>, GraphError> {
    if t.data_type != DataType::Float as i32 {
        return Err(GraphError(format!("initializer `{}` is not float32", t.name)));
    }
    let count = element_count(t)?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != count {
        return Err(GraphError(format!(
            "initializer `{}` holds {} values for dims {:?}",
            t.name,
            values.len(),
            t.dims
        )));
    }
    Ok(values)
}

/// Number of elements the dims of `t` claim (checked for overflow and negative dims).
pub fn element_count(t: &TensorProto) -> Result<usize, GraphError> {
    t.dims
        .iter()
        .try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
        .ok_or_else(|| GraphError(format!("initializer `{}` has invalid dims {:?}", t.name, t.dims)))
}

/// A tensor message with raw little-endian data.
pub fn raw_tensor(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

/// A node of one op (default domain) with the given inputs and outputs, named `name`.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
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

/// A list-of-integers attribute.
pub fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float attribute.
pub fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}

/// The attribute `name` of `node`, if present.
pub fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The value of the integer attribute `name` of `node`.
pub fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).map(|a| a.i)
}

/// The value of the float attribute `name` of `node`.
pub fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    attribute(node, name).map(|a| a.f)
}

/// The values of the integer-list attribute `name` of `node`.
pub fn ints_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attribute(node, name).map(|a| a.ints.as_slice())
}

/// The tensor of the attribute `name` of `node` (a Constant's `value`).
pub fn tensor_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a TensorProto> {
    attribute(node, name).and_then(|a| a.t.as_ref())
}

/// Whether a node is in the default ONNX domain.
pub fn is_default_domain(node: &NodeProto) -> bool {
    node.domain.is_empty() || node.domain == "ai.onnx"
}

/// Positions of the nodes of op `op` in the default domain, in graph order.
pub fn nodes_of<'g>(graph: &'g GraphProto, op: &'g str) -> impl Iterator<Item = usize> + 'g {
    graph.node.iter().enumerate().filter(move |(_, n)| n.op_type == op && is_default_domain(n)).map(|(i, _)| i)
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

/// What [`Rewrite::finish`] drops once a pass has rewritten its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Initializers no node reads (the float originals of weights a pass stored otherwise).
    Initializers,
    /// Nodes none of whose outputs is read, repeatedly, then initializers no node reads (fusions
    /// leave the nodes they replaced behind).
    DeadNodes,
}

/// The domain of ONNX Runtime's contrib operators (com.microsoft: MatMulNBits,
/// GatherBlockQuantized, the fused ops of the ONNX Runtime flavour).
pub const MS_DOMAIN: &str = "com.microsoft";

/// Declares `domain` at `version` in the model's opset imports, unless it is declared already.
pub fn import_opset(model: &mut crate::pb::ModelProto, domain: &str, version: i64) {
    if !model.opset_import.iter().any(|o| o.domain == domain) {
        model.opset_import.push(crate::pb::OperatorSetIdProto { domain: domain.into(), version });
    }
}

/// A graph with its lookup tables, and the edits a pass plans on it. Nodes may also be edited in
/// place through [`Rewrite::graph`] (their inputs rewired, attributes changed); removals and
/// insertions wait for [`Rewrite::finish`] or [`Rewrite::apply`], so positions stay valid while
/// a pass walks the graph.
pub struct Rewrite<'g> {
    /// The graph being rewritten.
    pub graph: &'g mut GraphProto,
    index: GraphIndex,
    /// Fresh names.
    pub names: Names,
    remove: BTreeSet<usize>,
    insert_before: BTreeMap<usize, Vec<NodeProto>>,
}

impl<'g> Rewrite<'g> {
    /// Indexes `graph` for one pass.
    pub fn new(graph: &'g mut GraphProto) -> Self {
        let index = GraphIndex::new(graph);
        let names = Names::of(graph);
        Rewrite { graph, index, names, remove: BTreeSet::new(), insert_before: BTreeMap::new() }
    }

    /// The lookup tables, as they were when the pass began.
    pub fn index(&self) -> &GraphIndex {
        &self.index
    }

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &NodeProto {
        &self.graph.node[i]
    }

    /// Runs `rewrite` on every node of op `ops` (default domain) not yet planned for removal, in
    /// graph order; returns how many calls rewrote (returned true). A node removed by an earlier
    /// call of the same pass is skipped when reached: the loop-and-guard every pass opens with.
    pub fn each_live<E>(
        &mut self,
        ops: &[&str],
        mut rewrite: impl FnMut(&mut Self, usize) -> Result<bool, E>,
    ) -> Result<usize, E> {
        let mut count = 0;
        for i in 0..self.graph.node.len() {
            let n = &self.graph.node[i];
            if self.remove.contains(&i) || !ops.contains(&n.op_type.as_str()) || !is_default_domain(n) {
                continue;
            }
            if rewrite(self, i)? {
                count += 1;
            }
        }
        Ok(count)
    }

    /// The position of the node producing `tensor`, if a live node does.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.index.producer.get(tensor).copied().filter(|p| !self.remove.contains(p))
    }

    /// The node producing `tensor` if its op is `op` (default domain).
    pub fn producer_op(&self, tensor: &str, op: &str) -> Option<usize> {
        self.producer(tensor).filter(|&p| self.graph.node[p].op_type == op && is_default_domain(&self.graph.node[p]))
    }

    /// Positions of the nodes reading `tensor`.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.index.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    /// Whether `tensor` is read by exactly the node `reader` and is no graph output.
    pub fn only_read_by(&self, tensor: &str, reader: usize) -> bool {
        self.consumers(tensor) == [reader] && !self.index.outputs.contains(tensor)
    }

    /// Whether `tensor` is a graph output.
    pub fn is_graph_output(&self, tensor: &str) -> bool {
        self.index.outputs.contains(tensor)
    }

    /// The element type of the graph input named `name`.
    pub fn input_elem_type(&self, name: &str) -> Option<i32> {
        let input = self.graph.input.iter().find(|i| i.name == name)?;
        let crate::pb::type_proto::Value::TensorType(t) = input.r#type.as_ref()?.value.as_ref()?;
        Some(t.elem_type)
    }

    /// The initializer named `tensor`.
    pub fn initializer(&self, tensor: &str) -> Option<&TensorProto> {
        self.index.initializers.get(tensor).map(|&i| &self.graph.initializer[i])
    }

    /// The constant value of `tensor`: an initializer, or the `value` of a Constant node.
    pub fn constant(&self, tensor: &str) -> Option<&TensorProto> {
        if let Some(t) = self.initializer(tensor) {
            return Some(t);
        }
        let p = self.producer_op(tensor, "Constant")?;
        tensor_attr(&self.graph.node[p], "value")
    }

    /// Float32 values and dims of a constant.
    pub fn f32_constant(&self, tensor: &str) -> Option<(Vec<f32>, Vec<i64>)> {
        let t = self.constant(tensor)?;
        Some((f32_values(t).ok()?, t.dims.clone()))
    }

    /// The single float32 value of a constant holding one element (any rank).
    pub fn f32_scalar(&self, tensor: &str) -> Option<f32> {
        let (values, _) = self.f32_constant(tensor)?;
        (values.len() == 1).then(|| values[0])
    }

    /// Integer values of an int64 or int32 constant.
    pub fn int_constant(&self, tensor: &str) -> Option<Vec<i64>> {
        let t = self.constant(tensor)?;
        let raw = &t.raw_data;
        match DataType::try_from(t.data_type).ok()? {
            DataType::Int64 if !raw.is_empty() => {
                Some(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
            }
            DataType::Int64 => Some(t.int64_data.clone()),
            DataType::Int32 if !raw.is_empty() => {
                Some(raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64).collect())
            }
            DataType::Int32 => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
            _ => None,
        }
    }

    /// A float32 vector constant of exactly `len` values (rank 1).
    pub fn f32_vector(&self, tensor: &str, len: Option<usize>) -> Option<Vec<f32>> {
        let (values, dims) = self.f32_constant(tensor)?;
        (dims.len() == 1 && len.is_none_or(|n| values.len() == n)).then_some(values)
    }

    /// A float32 matrix initializer: (values, rows, cols).
    pub fn f32_matrix(&self, tensor: &str) -> Option<(Vec<f32>, usize, usize)> {
        let t = self.initializer(tensor)?;
        if t.dims.len() != 2 || t.data_type != DataType::Float as i32 {
            return None;
        }
        Some((f32_values(t).ok()?, usize::try_from(t.dims[0]).ok()?, usize::try_from(t.dims[1]).ok()?))
    }

    /// The other input of a two-input node, given one of them.
    pub fn other_input(&self, node: usize, one: &str) -> Option<String> {
        let n = &self.graph.node[node];
        match n.input.as_slice() {
            [a, b] if a == one => Some(b.clone()),
            [a, b] if b == one => Some(a.clone()),
            _ => None,
        }
    }

    /// Plans the removal of nodes.
    pub fn remove(&mut self, nodes: impl IntoIterator<Item = usize>) {
        self.remove.extend(nodes);
    }

    /// Plans `node` to be inserted just before the node at `at` (in the order of calls).
    pub fn insert_before(&mut self, at: usize, node: NodeProto) {
        self.insert_before.entry(at).or_default().push(node);
    }

    /// Plans `nodes` to take the place of the node at `at`, after whatever was planned before it.
    pub fn replace(&mut self, at: usize, nodes: impl IntoIterator<Item = NodeProto>) {
        self.insert_before.entry(at).or_default().extend(nodes);
        self.remove.insert(at);
    }

    /// Adds an initializer under a fresh name based on `base`; returns its name.
    pub fn add_initializer(&mut self, base: &str, mut tensor: TensorProto) -> String {
        let name = self.names.fresh(base);
        tensor.name = name.clone();
        self.graph.initializer.push(tensor);
        name
    }

    /// Applies the plan: planned nodes inserted, planned removals removed; nothing else changes
    /// (for a view of a graph that is run, not written).
    pub fn apply(mut self) {
        self.splice();
    }

    /// Ends a pass over a graph that will be written: applies the plan, drops what `prune` says
    /// nothing reads any more, and clears `value_info` (the shapes and types recorded for
    /// intermediate tensors, which the pass may have made stale).
    pub fn finish(mut self, prune: Prune) {
        self.splice();
        match prune {
            Prune::Initializers => drop_unread_initializers(self.graph),
            Prune::DeadNodes => eliminate_dead_nodes(self.graph),
        }
        self.graph.value_info.clear();
    }

    fn splice(&mut self) {
        let (remove, mut insert_before) = (std::mem::take(&mut self.remove), std::mem::take(&mut self.insert_before));
        let old = std::mem::take(&mut self.graph.node);
        self.graph.node.reserve(old.len());
        for (i, n) in old.into_iter().enumerate() {
            if let Some(nodes) = insert_before.remove(&i) {
                self.graph.node.extend(nodes);
            }
            if !remove.contains(&i) {
                self.graph.node.push(n);
            }
        }
    }
}

/// Drops nodes none of whose outputs is read (or a graph output), repeatedly, then initializers
/// nothing reads.
pub fn eliminate_dead_nodes(graph: &mut GraphProto) {
    let outputs: BTreeSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    loop {
        let read: BTreeSet<&str> =
            graph.node.iter().flat_map(|n| n.input.iter().filter(|i| !i.is_empty()).map(String::as_str)).collect();
        let dead: BTreeSet<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.output.iter().all(|o| o.is_empty() || (!read.contains(o.as_str()) && !outputs.contains(o)))
            })
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            break;
        }
        let old = std::mem::take(&mut graph.node);
        graph.node = old.into_iter().enumerate().filter(|(i, _)| !dead.contains(i)).map(|(_, n)| n).collect();
    }
    drop_unread_initializers(graph);
}

/// Drops initializers that no node reads and that are no graph output.
pub fn drop_unread_initializers(graph: &mut GraphProto) {
    let read: BTreeSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let outputs: BTreeSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let keep: Vec<bool> =
        graph.initializer.iter().map(|t| read.contains(t.name.as_str()) || outputs.contains(t.name.as_str())).collect();
    let mut keep = keep.into_iter();
    graph.initializer.retain(|_| keep.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(nodes: Vec<NodeProto>, output: &str) -> GraphProto {
        GraphProto {
            node: nodes,
            output: vec![crate::pb::ValueInfoProto { name: output.into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn plans_apply_in_one_go_and_dead_nodes_go() {
        let mut g = graph(
            vec![
                node("Relu", "a", &["x"], &["a"], vec![]),
                node("Neg", "b", &["a"], &["b"], vec![]),
                node("Abs", "dead", &["a"], &["unread"], vec![]),
            ],
            "b",
        );
        g.initializer.push(raw_tensor("unused", &[1], DataType::Float, vec![0; 4]));
        let mut rw = Rewrite::new(&mut g);
        let rewrites = rw
            .each_live(&["Neg"], |rw, i| {
                let fresh = rw.names.fresh("a");
                rw.replace(i, [node("Sigmoid", &fresh, &["a"], &["b"], vec![])]);
                Ok::<_, GraphError>(true)
            })
            .unwrap();
        assert_eq!(rewrites, 1);
        rw.finish(Prune::DeadNodes);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Sigmoid"]);
        assert_eq!(g.node[1].name, "a.2", "fresh names avoid every existing name");
        assert!(g.initializer.is_empty());
    }

    #[test]
    fn apply_keeps_what_the_plan_does_not_touch() {
        let mut g = graph(
            vec![node("Relu", "a", &["x"], &["a"], vec![]), node("Abs", "dead", &["a"], &["unread"], vec![])],
            "a",
        );
        let mut rw = Rewrite::new(&mut g);
        rw.insert_before(0, node("Identity", "first", &["x"], &["y"], vec![]));
        rw.apply();
        assert_eq!(g.node.len(), 3);
        assert_eq!(g.node[0].name, "first");
    }

    #[test]
    fn typed_attributes_and_nodes_of_one_op() {
        let mut n =
            node("Softmax", "s", &["x"], &["y"], vec![int_attribute("axis", -1), float_attribute("epsilon", 0.5)]);
        assert_eq!(int_attr(&n, "axis"), Some(-1));
        assert_eq!(float_attr(&n, "epsilon"), Some(0.5));
        assert_eq!(int_attr(&n, "missing"), None);
        let g = graph(
            vec![n.clone(), node("Relu", "r", &["y"], &["z"], vec![]), {
                n.domain = MS_DOMAIN.into();
                n
            }],
            "z",
        );
        assert_eq!(nodes_of(&g, "Softmax").collect::<Vec<_>>(), [0], "other domains are not the default op");
    }

    #[test]
    fn values_are_checked_against_their_dims() {
        let t = raw_tensor("w", &[2, 2], DataType::Float, vec![0; 12]);
        assert_eq!(f32_values(&t).unwrap_err().0, "initializer `w` holds 3 values for dims [2, 2]");
        assert!(element_count(&raw_tensor("w", &[-1], DataType::Float, vec![])).is_err());
    }
}
