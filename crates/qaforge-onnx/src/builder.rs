//! A small typed builder over ONNX's protobuf messages (tract's prost types).
//!
//! Nodes get readable, unique names that carry the layer index (`layer.3.ffn.1.intermediate`), and
//! each node's single output is named after the node, so quantization passes can find and exclude
//! nodes by name and op type.

use std::collections::BTreeSet;

use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size such as `batch` or `sequence`.
    Symbol(&'static str),
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// A single integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A single float.
    Float(f32),
}

/// Builds one ONNX graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: BTreeSet<String>,
}

pub(crate) fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Symbol(s) => dimension::Value::DimParam((*s).to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
    match value {
        Attr::Int(i) => {
            a.r#type = AttributeType::Int as i32;
            a.i = i;
        }
        Attr::Ints(ints) => {
            a.r#type = AttributeType::Ints as i32;
            a.ints = ints;
        }
        Attr::Float(f) => {
            a.r#type = AttributeType::Float as i32;
            a.f = f;
        }
    }
    a
}

fn raw_tensor(name: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    crate::edit::raw_tensor(name, &dims, data_type, raw_data)
}

/// A float32 tensor message from row-major values.
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    raw_tensor(name, dims, DataType::Float, bytes)
}

/// An int64 tensor message from row-major values.
pub fn i64_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    raw_tensor(name, dims, DataType::Int64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn claim(&mut self, name: &str) -> String {
        assert!(self.names.insert(name.to_string()), "duplicate graph name `{name}`: a bug in the emitter");
        name.to_string()
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) -> String {
        let name = self.claim(name);
        self.inputs.push(value_info(&name, elem_type, dims));
        name
    }

    /// Declares an existing value as a graph output.
    pub fn output(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem_type, dims));
    }

    /// Adds a float32 initializer and returns its name.
    pub fn f32_initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.claim(name);
        self.initializers.push(f32_tensor(&name, dims, values));
        name
    }

    /// Adds an int64 initializer, or reuses the one of that name (constants shared by layers).
    pub fn i64_constant(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        if self.names.contains(name) {
            return name.to_string();
        }
        let name = self.claim(name);
        self.initializers.push(i64_tensor(&name, dims, values));
        name
    }

    /// Adds an int32 initializer, or reuses the one of that name.
    pub fn i32_constant(&mut self, name: &str, dims: &[usize], values: &[i32]) -> String {
        if self.names.contains(name) {
            return name.to_string();
        }
        let name = self.claim(name);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(raw_tensor(&name, dims, DataType::Int32, bytes));
        name
    }

    /// Adds a float32 scalar constant, or reuses the one of that name.
    pub fn f32_scalar(&mut self, name: &str, value: f32) -> String {
        if self.names.contains(name) {
            return name.to_string();
        }
        self.f32_initializer(name, &[], &[value])
    }

    /// Adds a node with one output named after the node; returns that output.
    pub fn node(&mut self, op_type: &str, name: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let name = self.claim(name);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op_type.to_string(),
            domain: String::new(),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            doc_string: String::new(),
        });
        name
    }

    /// Finishes the graph into a model of the given opset, with `metadata` as metadata_props.
    pub fn finish(self, graph_name: &str, opset: i64, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            // IR version 8 goes with opsets 17 to 18; 9 with 19 to 20; 10 with 21.
            ir_version: match opset {
                ..=18 => 8,
                19..=20 => 9,
                _ => 10,
            },
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
            producer_name: "qaforge".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: graph_name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
            ..Default::default()
        }
    }
}
