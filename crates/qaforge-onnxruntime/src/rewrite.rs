//! What every pass reads and edits: a graph's producers, consumers and constants (initializers
//! and Constant nodes), and a plan of node removals and insertions applied in one go, after
//! which dead nodes and unread initializers are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use qaforge_quantize::graph::{f32_values, GraphIndex, Names};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

/// A graph with its lookup tables, and the edits a pass plans on it.
pub struct Rewrite<'g> {
    /// The graph being rewritten (nodes are edited in place or through the plan).
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

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &NodeProto {
        &self.graph.node[i]
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
        let tract_onnx::pb::type_proto::Value::TensorType(t) = input.r#type.as_ref()?.value.as_ref()?;
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
        self.graph.node[p].attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref())
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
            DataType::Int64 if !raw.is_empty() => Some(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
            DataType::Int64 => Some(t.int64_data.clone()),
            DataType::Int32 if !raw.is_empty() => Some(raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64).collect()),
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

    /// Whether node `i` is planned for removal.
    pub fn is_removed(&self, i: usize) -> bool {
        self.remove.contains(&i)
    }

    /// Plans the removal of nodes.
    pub fn remove(&mut self, nodes: impl IntoIterator<Item = usize>) {
        self.remove.extend(nodes);
    }

    /// Plans `node` to be inserted just before the node at `at` (in the order of calls).
    pub fn insert_before(&mut self, at: usize, node: NodeProto) {
        self.insert_before.entry(at).or_default().push(node);
    }

    /// Adds an initializer under a fresh name based on `base`; returns its name.
    pub fn add_initializer(&mut self, base: &str, mut tensor: TensorProto) -> String {
        let name = self.names.fresh(base);
        tensor.name = name.clone();
        self.graph.initializer.push(tensor);
        name
    }

    /// Applies the plan, then drops nodes whose outputs nobody reads and initializers no node reads.
    pub fn finish(self) {
        let Rewrite { graph, remove, mut insert_before, .. } = self;
        let old = std::mem::take(&mut graph.node);
        for (i, n) in old.into_iter().enumerate() {
            if let Some(nodes) = insert_before.remove(&i) {
                graph.node.extend(nodes);
            }
            if !remove.contains(&i) {
                graph.node.push(n);
            }
        }
        eliminate_dead_nodes(graph);
    }
}

/// Whether a node is in the default ONNX domain.
pub fn is_default_domain(node: &NodeProto) -> bool {
    node.domain.is_empty() || node.domain == "ai.onnx"
}

/// Drops nodes none of whose outputs is read (or a graph output), repeatedly, then initializers
/// nothing reads.
pub fn eliminate_dead_nodes(graph: &mut GraphProto) {
    let outputs: BTreeSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    loop {
        let mut read: HashMap<&str, ()> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                read.insert(i.as_str(), ());
            }
        }
        let dead: Vec<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.output.iter().all(|o| o.is_empty() || (!read.contains_key(o.as_str()) && !outputs.contains(o))))
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            break;
        }
        let dead: BTreeSet<usize> = dead.into_iter().collect();
        let old = std::mem::take(&mut graph.node);
        graph.node = old.into_iter().enumerate().filter(|(i, _)| !dead.contains(i)).map(|(_, n)| n).collect();
    }
    let read: BTreeSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let keep: Vec<bool> = graph.initializer.iter().map(|t| read.contains(t.name.as_str()) || outputs.contains(&t.name)).collect();
    let mut keep = keep.into_iter();
    graph.initializer.retain(|_| keep.next().unwrap_or(true));
}
