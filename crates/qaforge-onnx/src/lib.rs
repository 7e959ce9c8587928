//! ONNX graph emission for qaforge.
//!
//! ONNX messages are tract-onnx's prost types (`tract_onnx::pb`, re-exported as [`pb`]): the same
//! types the verifying runtime parses, prost-based, with no code generation step in our build.
//! (The onnx-protobuf crate is rust-protobuf pinned to an old release, and generating our own
//! types with prost-build + protox would add a build step for the same messages.)
//!
//! [`builder`] is a small typed graph builder; `blocks` holds what every architecture is built
//! from; each architecture's QA forward pass is a module of its own (`mobilebert`, `bert` for
//! the BERT family), chosen by [`emit`]; [`write_atomically`] writes artifacts so that an error
//! or a kill never leaves a partial file.

mod bert;
mod blocks;
pub mod builder;
pub mod edit;
mod external;
mod mobilebert;
mod precision;
mod types;

pub use precision::{artifact_precision, infer_precision};
pub use types::{check_types, declared_elem_type, element_types};

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

pub use blocks::{EmitOptions, Emitted, ATTENTION_MASK_VALUE, DEFAULT_OPSET, SUPPORTED_OPSETS};
use qaforge_provenance::{keys, Precision};
pub use tract_onnx::pb;

/// Emits the QA graph of `checkpoint`, whatever its architecture, at `options.opset`, with
/// `metadata` as metadata_props.
pub fn emit(
    checkpoint: &qaforge_checkpoint::Checkpoint,
    options: EmitOptions,
    metadata: Vec<(String, String)>,
) -> Result<Emitted, EmitError> {
    if !SUPPORTED_OPSETS.contains(&options.opset) {
        return Err(EmitError::Opset(options.opset));
    }
    match &checkpoint.config {
        qaforge_checkpoint::ModelConfig::MobileBert(config) => mobilebert::emit(checkpoint, config, options, metadata),
        qaforge_checkpoint::ModelConfig::Bert(config) => bert::emit(checkpoint, config, options, metadata),
    }
}

/// Errors of graph emission and artifact I/O.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The checkpoint could not be read or does not fit its config.
    #[error(transparent)]
    Checkpoint(#[from] qaforge_checkpoint::CheckpointError),
    /// The requested opset is outside what the emitter produces.
    #[error("opset {0} is not supported; qaforge emits opsets {start} to {end}", start = SUPPORTED_OPSETS.start(), end = SUPPORTED_OPSETS.end())]
    Opset(i64),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid ONNX model.
    #[error("{path}: not a valid ONNX model: {message}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Checks a graph qaforge is about to write as it checks the graphs it reads (opset, operators,
/// topological order, type constraints), and serialises it: an artifact that ONNX Runtime would
/// refuse to load is an error naming the node, never a file. `path` names the output in errors.
pub fn encode_checked(model: &pb::ModelProto, path: &Path) -> Result<Vec<u8>, EmitError> {
    let invalid = |message: String| EmitError::InvalidModel {
        path: path.to_owned(),
        message: format!("the graph to be written is invalid, nothing was written: {message}"),
    };
    check_graph(model).map_err(invalid)?;
    check_types(model).map_err(invalid)?;
    Ok(encode(model))
}

/// Serialises a model. prost encodes fields in tag order and repeated fields in order, so the
/// same model gives the same bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads an ONNX model file (and its external data files, from inside its folder).
pub fn read_model(path: &Path) -> Result<pb::ModelProto, EmitError> {
    let bytes = std::fs::read(path).map_err(|source| EmitError::Io { path: path.to_owned(), source })?;
    decode_model(&bytes, path)
}

/// Decodes the bytes of the ONNX model file `path`, which names it in errors. Every initializer
/// (and Constant node value) must hold exactly the data its dims and type claim: passes read
/// tensors by their dims, so a claim the bytes do not back is refused here, before any work,
/// instead of being passed through or read past. Initializers stored as external data are read
/// into the model from files inside `path`'s folder (see [`decode_model_with_data`]).
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<pb::ModelProto, EmitError> {
    decode_model_with_data(bytes, path).map(|(model, _)| model)
}

/// [`decode_model`], also returning the external data files it read (canonical paths, in order
/// of first use; empty for a self-contained model). The model returned holds their bytes inline,
/// so that engines given its encoding need no files beside it.
pub fn decode_model_with_data(bytes: &[u8], path: &Path) -> Result<(pb::ModelProto, Vec<PathBuf>), EmitError> {
    let invalid = |message: String| EmitError::InvalidModel { path: path.to_owned(), message };
    let mut model = pb::ModelProto::decode(bytes).map_err(|e| invalid(e.to_string()))?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(invalid("no graph".into()));
    };
    let data_files = external::inline(&mut graph.initializer, folder_of(path)).map_err(invalid)?;
    let constants = graph.node.iter().flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()));
    for tensor in graph.initializer.iter().chain(constants) {
        check_tensor_data(tensor).map_err(|message| invalid(format!("tensor `{}`: {message}", tensor.name)))?;
    }
    check_graph(&model).map_err(invalid)?;
    types::check_types(&model).map_err(invalid)?;
    Ok((model, data_files))
}

/// ONNX opsets (default domain) of the graphs qaforge reads: per-axis QuantizeLinear needs 13; 21
/// is the newest tract runs.
pub const READABLE_OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// The opsets of qaforge's own ONNX Runtime flavour (its metadata says so), which may hold ONNX
/// `Attention` (opset 23) and is run by ONNX Runtime only.
pub const FLAVOUR_OPSETS: std::ops::RangeInclusive<i64> = 13..=23;

/// The version of the default ONNX domain `model` imports, if it declares one.
pub fn default_opset(model: &pb::ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version)
}

/// Whether `model`'s metadata says it is qaforge's ONNX Runtime flavour (`--for onnxruntime`).
pub fn is_onnxruntime_flavour(model: &pb::ModelProto) -> bool {
    model.metadata_props.iter().any(|p| p.key == qaforge_provenance::keys::FLAVOUR && p.value == "onnxruntime")
}

/// The structure every pass relies on, checked before any work: an opset qaforge handles, every
/// default-domain operator one its engines run, and nodes in topological order with every input
/// provided (ONNX requires the order; a cycle or a dangling input breaks it, and the passes'
/// walks over producers assume it).
fn check_graph(model: &pb::ModelProto) -> Result<(), String> {
    let default_domain = |d: &str| d.is_empty() || d == "ai.onnx";
    let flavoured = is_onnxruntime_flavour(model);
    match default_opset(model) {
        Some(v) if READABLE_OPSETS.contains(&v) || (flavoured && FLAVOUR_OPSETS.contains(&v)) => {}
        Some(v) => {
            return Err(format!(
                "opset {v}; qaforge reads opsets {} to {} (re-export with one of them)",
                READABLE_OPSETS.start(),
                READABLE_OPSETS.end()
            ))
        }
        None => return Err("no ONNX opset is declared (opset_import has no default domain)".into()),
    }
    let Some(graph) = model.graph.as_ref() else { return Err("no graph".into()) };
    let registry = tract_onnx::onnx().op_register;
    let mut available: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    available.extend(graph.input.iter().map(|i| i.name.as_str()));
    let label = |i: usize, node: &pb::NodeProto| {
        if node.name.is_empty() {
            format!("#{i} ({})", node.op_type)
        } else {
            format!("`{}` ({})", node.name, node.op_type)
        }
    };
    let produced_later: std::collections::HashMap<&str, String> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), label(i, n))))
        .collect();
    for (i, node) in graph.node.iter().enumerate() {
        let label = label(i, node);
        // ONNX Attention (opset 23) is the flavour's, for ONNX Runtime, which verify runs it in.
        let flavour_op = flavoured && node.op_type == "Attention";
        if default_domain(&node.domain) && !registry.0.contains_key(&node.op_type) && !flavour_op {
            return Err(format!(
                "node {label}: operator `{}` is not an ONNX operator qaforge's engines run",
                node.op_type
            ));
        }
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !available.contains(input.as_str()) {
                return Err(match produced_later.get(input.as_str()) {
                    Some(producer) => format!("node {label} reads `{input}` before node {producer} produces it: a cycle, or nodes out of topological order"),
                    None => format!("node {label} reads `{input}`, which no node, initializer or graph input provides"),
                });
            }
        }
        available.extend(node.output.iter().map(|o| o.as_str()));
    }
    if let Some(output) = graph.output.iter().find(|o| !available.contains(o.name.as_str())) {
        return Err(format!("graph output `{}` is produced by no node", output.name));
    }
    Ok(())
}

/// Bytes per element of the ONNX data types whose raw data qaforge can size; `None` for strings
/// and unknown types.
fn element_size(data_type: i32) -> Option<usize> {
    use pb::tensor_proto::DataType as T;
    let t = T::try_from(data_type).ok()?;
    Some(match t {
        T::Uint8 | T::Int8 | T::Bool => 1,
        T::Uint16 | T::Int16 | T::Float16 | T::Bfloat16 => 2,
        T::Float | T::Int32 | T::Uint32 => 4,
        T::Double | T::Int64 | T::Uint64 | T::Complex64 => 8,
        T::Complex128 => 16,
        _ => return None,
    })
}

/// Whether a tensor's stored data matches its dims and type (element counts overflow-checked).
fn check_tensor_data(t: &pb::TensorProto) -> Result<(), String> {
    use pb::tensor_proto::DataType as T;
    if external::is_external(t) {
        // Initializers' external data is inlined before this check; a Constant's value is not.
        return Err(
            "a Constant node's value is stored outside the model file; only initializers may use external data".into(),
        );
    }
    let count = t.dims.iter().try_fold(1u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
    let count = count.ok_or_else(|| format!("dims {:?} are negative or their product overflows", t.dims))?;
    let data_type = T::try_from(t.data_type).map_err(|_| format!("unknown data type {}", t.data_type))?;
    if data_type == T::Undefined {
        return Err("undefined data type".into());
    }
    let held = |n: usize, what: &str| -> Result<(), String> {
        if n as u64 == count {
            Ok(())
        } else {
            Err(format!("dims {:?} claim {count} {data_type:?} values, the file holds {n} ({what})", t.dims))
        }
    };
    if !t.raw_data.is_empty() && matches!(data_type, T::Int4 | T::Uint4) {
        // 4-bit types pack two values per byte, the first in the low nibble (what ONNX Runtime's
        // quantizers write for block-quantized embedding tables).
        let bytes = count.div_ceil(2);
        return if t.raw_data.len() as u64 == bytes {
            Ok(())
        } else {
            Err(format!("dims {:?} claim {count} {data_type:?} values ({bytes} bytes packed two per byte), the file holds {} bytes of raw data", t.dims, t.raw_data.len()))
        };
    }
    if !t.raw_data.is_empty() {
        let size =
            element_size(t.data_type).ok_or_else(|| format!("{data_type:?} values cannot be stored as raw data"))?;
        if !t.raw_data.len().is_multiple_of(size) {
            return Err(format!(
                "{} bytes of raw data are not a whole number of {size}-byte {data_type:?} values",
                t.raw_data.len()
            ));
        }
        return held(t.raw_data.len() / size, "raw data");
    }
    match data_type {
        T::Float => held(t.float_data.len(), "float_data"),
        T::Complex64 => held(t.float_data.len() / 2, "float_data"),
        T::Int32 | T::Int16 | T::Int8 | T::Uint16 | T::Uint8 | T::Bool | T::Float16 | T::Bfloat16 => {
            held(t.int32_data.len(), "int32_data")
        }
        T::Int64 => held(t.int64_data.len(), "int64_data"),
        T::Double => held(t.double_data.len(), "double_data"),
        T::Complex128 => held(t.double_data.len() / 2, "double_data"),
        T::Uint32 | T::Uint64 => held(t.uint64_data.len(), "uint64_data"),
        T::String => held(t.string_data.len(), "string_data"),
        _ => held(0, "no data field for this type"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, flushed to disk and
/// then renamed over the target: readers see the old file or the new one, never a partial one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EmitError> {
    let io = |source| EmitError::Io { path: path.to_owned(), source };
    let mut file =
        tempfile::Builder::new().prefix(".qaforge-").suffix(".partial").tempfile_in(folder_of(path)).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The folder a file is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Hex SHA-256 over the checkpoint's config.json and weight files, in that order: the provenance
/// recorded in every artifact.
pub fn source_sha256(checkpoint: &qaforge_checkpoint::Checkpoint) -> Result<String, EmitError> {
    checkpoint.source_sha256().map_err(EmitError::from)
}

/// Emits the QA graph of `checkpoint` with the provenance every fp32 artifact records in its
/// metadata_props (stage, precision, source sha256 and format). The source files are hashed on a
/// second thread while the graph is emitted (hashing ~100 MB is a sixth of a full-size convert).
pub fn convert(checkpoint: &qaforge_checkpoint::Checkpoint, options: EmitOptions) -> Result<Emitted, EmitError> {
    let (hash, emitted) = std::thread::scope(|scope| {
        let hash = scope.spawn(|| source_sha256(checkpoint));
        let emitted = emit(checkpoint, options, Vec::new());
        (hash.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), emitted)
    });
    let mut emitted = emitted?;
    let mut metadata = vec![
        (keys::STAGE, "convert".to_string()),
        (keys::PRECISION, Precision::Fp32.as_str().to_string()),
        (keys::SOURCE_SHA256, hash?),
        (keys::SOURCE_FORMAT, checkpoint.format.to_string()),
    ];
    // The tokenizer the model was trained with, when the directory has one: verify compares it
    // with a golden bundle's.
    if let Some(tokenizer) = qaforge_checkpoint::tokenizer_sha256(&checkpoint.dir)? {
        metadata.push((keys::TOKENIZER_SHA256, tokenizer));
    }
    emitted.model.metadata_props =
        metadata.into_iter().map(|(key, value)| pb::StringStringEntryProto { key: key.to_string(), value }).collect();
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with(tensor: pb::TensorProto) -> Vec<u8> {
        encode(&pb::ModelProto {
            graph: Some(pb::GraphProto { initializer: vec![tensor], ..Default::default() }),
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            ..Default::default()
        })
    }

    fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn graphs_must_be_ordered_complete_and_of_known_operators_and_opsets() {
        let model = |nodes: Vec<pb::NodeProto>, opset: i64| {
            let input = pb::ValueInfoProto { name: "x".into(), ..Default::default() };
            let output = pb::ValueInfoProto { name: "y".into(), ..Default::default() };
            let graph = pb::GraphProto { node: nodes, input: vec![input], output: vec![output], ..Default::default() };
            let model = pb::ModelProto {
                graph: Some(graph),
                opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }],
                ..Default::default()
            };
            decode_model(&encode(&model), Path::new("m.onnx")).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(model(vec![node("a", "Relu", &["x"], "h"), node("b", "Relu", &["h"], "y")], 17).is_ok());
        let err = model(vec![node("a", "Add", &["x", "y"], "h"), node("b", "Relu", &["h"], "y")], 17).unwrap_err();
        assert!(
            err.contains("m.onnx")
                && err.contains("node `a` (Add) reads `y` before node `b` (Relu) produces it: a cycle"),
            "{err}"
        );
        let err = model(vec![node("a", "Add", &["x", "nowhere"], "y")], 17).unwrap_err();
        assert!(err.contains("reads `nowhere`, which no node, initializer or graph input provides"), "{err}");
        let err = model(vec![node("a", "FooBar", &["x"], "y")], 17).unwrap_err();
        assert!(err.contains("operator `FooBar`"), "{err}");
        let err = model(vec![node("a", "Relu", &["x"], "h")], 17).unwrap_err();
        assert!(err.contains("graph output `y` is produced by no node"), "{err}");
        for opset in [7, 99] {
            let err = model(vec![node("a", "Relu", &["x"], "y")], opset).unwrap_err();
            assert!(err.contains(&format!("opset {opset}; qaforge reads opsets 13 to 21")), "{err}");
        }
        let custom = pb::NodeProto { domain: crate::edit::MS_DOMAIN.into(), ..node("a", "FusedMatMul", &["x"], "y") };
        assert!(model(vec![custom], 17).is_ok(), "other domains are the engines' business");
    }

    fn tensor(dims: &[i64], data_type: pb::tensor_proto::DataType) -> pb::TensorProto {
        pb::TensorProto { name: "w".into(), dims: dims.to_vec(), data_type: data_type as i32, ..Default::default() }
    }

    #[test]
    fn initializers_must_hold_what_their_dims_claim() {
        use pb::tensor_proto::DataType as T;
        let decode = |t: pb::TensorProto| {
            decode_model(&model_with(t), Path::new("m.onnx")).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(decode(pb::TensorProto { raw_data: vec![0; 24], ..tensor(&[2, 3], T::Float) }).is_ok());
        assert!(decode(pb::TensorProto { raw_data: vec![0; 20], ..tensor(&[2, 3], T::Float) }).is_err());
        assert!(decode(pb::TensorProto { raw_data: vec![0; 24], ..tensor(&[2, 3], T::Float16) }).is_err());
        assert!(decode(pb::TensorProto { raw_data: vec![0; 12], ..tensor(&[2, 3], T::Float16) }).is_ok());
        assert!(decode(pb::TensorProto { float_data: vec![0.0; 6], ..tensor(&[2, 3], T::Float) }).is_ok());
        assert!(decode(pb::TensorProto { int64_data: vec![1], ..tensor(&[], T::Int64) }).is_ok());
        let err =
            decode(pb::TensorProto { raw_data: vec![0; 64], ..tensor(&[1_000_000_000, 1_000_000_000], T::Float) })
                .unwrap_err();
        assert!(
            err.contains("m.onnx")
                && err.contains("tensor `w`")
                && err.contains("claim 1000000000000000000 Float values, the file holds 16"),
            "{err}"
        );
        let err = decode(pb::TensorProto { raw_data: vec![0; 8], ..tensor(&[i64::MAX, 4], T::Float) }).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        let err = decode(pb::TensorProto { raw_data: vec![0; 8], ..tensor(&[-2], T::Float) }).unwrap_err();
        assert!(err.contains("negative"), "{err}");
        let err = decode(pb::TensorProto { data_type: 99, ..tensor(&[1], T::Float) }).unwrap_err();
        assert!(err.contains("unknown data type 99"), "{err}");
        let external = pb::TensorProto {
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "../../etc/passwd".into(),
            }],
            ..tensor(&[4], T::Float)
        };
        let err = decode(external).unwrap_err();
        assert!(
            err.contains("m.onnx") && err.contains("tensor `w`") && err.contains("outside the model's folder"),
            "{err}"
        );
        assert!(decode(pb::TensorProto { raw_data: vec![0; 7], ..tensor(&[2], T::Float) })
            .unwrap_err()
            .contains("whole number"));
        // 4-bit values, two per byte (ONNX Runtime's quantized embedding tables): 3 × 5 of them in 8 bytes.
        assert!(decode(pb::TensorProto { raw_data: vec![0; 8], ..tensor(&[3, 5], T::Uint4) }).is_ok());
        assert!(decode(pb::TensorProto { raw_data: vec![0; 2], ..tensor(&[4], T::Int4) }).is_ok());
        let err = decode(pb::TensorProto { raw_data: vec![0; 15], ..tensor(&[3, 5], T::Uint4) }).unwrap_err();
        assert!(err.contains("8 bytes packed two per byte") && err.contains("holds 15 bytes"), "{err}");
    }
}
