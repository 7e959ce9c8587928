//! Running ONNX QA graphs, batched with dynamic padding over all cores. tract is the engine
//! quantization (calibration, sensitivity) and verification use; ONNX Runtime, the engine phones
//! run, is available behind the `ort` cargo feature so that the default build stays lean.

use std::path::{Path, PathBuf};

use qaforge_squad::Features;

pub mod integer_kernels;
#[cfg(feature = "ort")]
mod onnxruntime;
mod tract;

#[cfg(feature = "ort")]
pub use onnxruntime::OrtSession;
pub use tract::TractSession;

/// An engine could not load or run a graph.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuntimeError {
    /// The artifact (or a description of the in-memory graph).
    pub path: PathBuf,
    /// The engine's error chain.
    pub message: String,
}

/// Every output of one run as f32 values, each with its shape.
pub type TensorOutputs = Vec<(Vec<usize>, Vec<f32>)>;

/// Start and end logits of a set of features, each `[count, max_length]` (padding positions of
/// dynamically padded batches are left at zero).
#[derive(Debug, Clone)]
pub struct Logits {
    /// Start logits.
    pub start: Vec<f32>,
    /// End logits.
    pub end: Vec<f32>,
}

/// An inference engine holding one loaded artifact with inputs `input_ids`, `attention_mask`,
/// and `token_type_ids` where the graph takes them (`[batch, sequence]`, int64).
pub trait Engine: Sync {
    /// The artifact, for error messages.
    fn label(&self) -> &Path;

    /// The engine and its version, as reports print it.
    fn description(&self) -> String;

    /// How many batches to run at once on `cores` cores: tract runs each batch on one thread, so
    /// batches go in parallel; engines that parallelise inside a run say 1.
    fn preferred_threads(&self, cores: usize) -> usize {
        cores
    }

    /// Runs one batch given as `[batch, len]` row-major inputs and returns every output.
    fn run_outputs(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<TensorOutputs, RuntimeError>;

    /// Runs one batch given as `[batch, len]` row-major inputs; returns start and end logits.
    fn run_batch(&self, batch: usize, len: usize, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Result<(Vec<f32>, Vec<f32>), RuntimeError> {
        let error = |message: String| RuntimeError { path: self.label().to_owned(), message };
        let mut outputs = self.run_outputs(batch, len, ids, mask, types)?;
        if outputs.len() != 2 {
            return Err(error(format!("expected 2 outputs, got {}", outputs.len())));
        }
        for (shape, _) in &outputs {
            if shape[..] != [batch, len] {
                return Err(error(format!("output shape {shape:?}, expected [{batch}, {len}]")));
            }
        }
        let (_, end) = outputs.pop().unwrap_or_default();
        let (_, start) = outputs.pop().unwrap_or_default();
        Ok((start, end))
    }

    /// Runs every feature, `batch_size` at a time, each batch padded only to its longest feature,
    /// batches spread over `threads` threads. `progress` is called with the number of features done.
    fn run_features(&self, features: &Features, batch_size: usize, threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<Logits, RuntimeError> {
        let m = features.max_length;
        let mut start = vec![0f32; features.count * m];
        let mut end = vec![0f32; features.count * m];
        let results = std::sync::Mutex::new(Vec::new());
        let padded = |s: usize, e: usize| padded_length(features, s, e);
        self.run_batches(features, batch_size, threads, &padded, &|s, e, len, out| {
            results.lock().unwrap_or_else(|p| p.into_inner()).push((s, e, len, out));
            progress(e - s);
        })?;
        for (s, e, len, (bs, be)) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            for (row, i) in (s..e).enumerate() {
                start[i * m..i * m + len].copy_from_slice(&bs[row * len..(row + 1) * len]);
                end[i * m..i * m + len].copy_from_slice(&be[row * len..(row + 1) * len]);
            }
        }
        Ok(Logits { start, end })
    }

    /// Runs every feature in batches of `batch_size`, each at the length `length(s, e)` gives,
    /// spread over `threads` threads; `done(s, e, length, (start, end))` receives each batch's
    /// logits. Stops at the first error.
    fn run_batches(
        &self,
        features: &Features,
        batch_size: usize,
        threads: usize,
        length: &(dyn Fn(usize, usize) -> usize + Sync),
        done: &(dyn Fn(usize, usize, usize, (Vec<f32>, Vec<f32>)) + Sync),
    ) -> Result<(), RuntimeError> {
        for_each_batch(features.count, batch_size, threads, || (), |_, s, e| {
            let len = length(s, e);
            let gather = |src: &[i64]| gather_rows(features, src, s, e, len);
            done(s, e, len, self.run_batch(e - s, len, gather(&features.input_ids), gather(&features.attention_mask), gather(&features.token_type_ids))?);
            Ok(())
        })
        .map(|_| ())
    }
}

/// The thread pool behind [`Engine::run_batches`] and calibration: splits features `0..count`
/// into batches of `batch_size` and works through them on `threads` threads, each thread with
/// its own state from `init`; `work(state, s, e)` handles features `s..e`. A thread stops at its
/// first error, and the first error is returned; otherwise the states, in thread order.
pub fn for_each_batch<A: Send, E: Send>(
    count: usize,
    batch_size: usize,
    threads: usize,
    init: impl Fn() -> A + Sync,
    work: impl Fn(&mut A, usize, usize) -> Result<(), E> + Sync,
) -> Result<Vec<A>, E> {
    let batch_size = batch_size.max(1);
    let batches: Vec<(usize, usize)> = (0..count).step_by(batch_size).map(|s| (s, (s + batch_size).min(count))).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None);
    let states = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    while let Some(&(s, e)) = batches.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        if let Err(err) = work(&mut state, s, e) {
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(err);
                            break;
                        }
                    }
                    state
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect::<Vec<_>>()
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(err) => Err(err),
        None => Ok(states),
    }
}

/// Which engine runs an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineChoice {
    /// tract (always built in).
    Tract,
    /// ONNX Runtime loaded from this shared library (needs the `ort` feature).
    OnnxRuntime {
        /// libonnxruntime.so (or .dylib / .dll).
        library: PathBuf,
    },
}

/// The inputs engines feed, by position, in this order; graphs of models without token types
/// (DistilBERT, RoBERTa) take the first two.
pub const INPUT_NAMES: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// Which of [`INPUT_NAMES`] a graph takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// input_ids, attention_mask, token_type_ids.
    WithTokenTypes,
    /// input_ids, attention_mask.
    WithoutTokenTypes,
}

impl InputLayout {
    /// The layout of a graph with `count` inputs, if engines can feed it.
    pub fn of_count(count: usize) -> Option<Self> {
        match count {
            3 => Some(InputLayout::WithTokenTypes),
            2 => Some(InputLayout::WithoutTokenTypes),
            _ => None,
        }
    }

    /// The inputs of one batch in feed order: `types` is dropped where the graph takes none.
    pub fn feeds(self, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Vec<Vec<i64>> {
        match self {
            InputLayout::WithTokenTypes => vec![ids, mask, types],
            InputLayout::WithoutTokenTypes => vec![ids, mask],
        }
    }
}

/// Checks that `model` takes what the engines feed it: two or three integer inputs, fed by
/// position as [`INPUT_NAMES`]. Inputs under other names are taken by position; a standard name
/// at another position would be fed the wrong tensor, so it is refused with the order found.
pub fn check_inputs(model: &tract_onnx::pb::ModelProto, label: &Path) -> Result<InputLayout, RuntimeError> {
    use tract_onnx::pb::{tensor_proto::DataType, type_proto::Value};
    let error = |message: String| RuntimeError { path: label.to_owned(), message };
    let Some(graph) = model.graph.as_ref() else { return Err(error("no graph".into())) };
    // Before IR 4, initializers were listed among the inputs too.
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let Some(layout) = InputLayout::of_count(inputs.len()) else {
        return Err(error(format!(
            "the graph has {} input(s) ({}); qaforge feeds 3 by position: {} (or the first two, for models without token types)",
            inputs.len(),
            names.join(", "),
            INPUT_NAMES.join(", ")
        )));
    };
    for input in &inputs {
        let element = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) => t.elem_type,
            _ => DataType::Undefined as i32,
        };
        if ![DataType::Int64 as i32, DataType::Int32 as i32].contains(&element) {
            return Err(error(format!("input `{}` is not an integer tensor (element type {element}); qaforge feeds token ids and masks", input.name)));
        }
    }
    let fed = &INPUT_NAMES[..names.len()];
    if names.iter().zip(fed).any(|(name, want)| INPUT_NAMES.contains(name) && name != want) {
        return Err(error(format!(
            "the graph's inputs are in the order {}; qaforge feeds {} by position: re-export with the inputs in that order",
            names.join(", "),
            fed.join(", ")
        )));
    }
    Ok(layout)
}

/// Checks that every token id of `features` indexes a row of the tables the graph looks
/// `input_ids` up in (Gathers whose indices are the first input, whose data is an initializer,
/// perhaps dequantized or cast first). A tokenizer that does not belong to the model gives ids
/// past its vocabulary, which engines answer with garbage, an error or a panic; this names it.
pub fn check_token_ids(model: &tract_onnx::pb::ModelProto, features: &Features, label: &Path) -> Result<(), RuntimeError> {
    let Some(graph) = model.graph.as_ref() else { return Ok(()) };
    let initializers: std::collections::HashMap<&str, &tract_onnx::pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let Some(ids) = graph.input.iter().map(|i| i.name.as_str()).find(|n| !initializers.contains_key(n)) else { return Ok(()) };
    fn producer<'g>(graph: &'g tract_onnx::pb::GraphProto, tensor: &str) -> Option<&'g tract_onnx::pb::NodeProto> {
        graph.node.iter().find(|n| n.output.iter().any(|o| o == tensor))
    }
    // Follows a tensor back through ops that keep its rows (DequantizeLinear, Cast, Identity).
    let origin = |start: &str| -> Option<&tract_onnx::pb::TensorProto> {
        let mut tensor = start.to_string();
        for _ in 0..8 {
            if let Some(t) = initializers.get(tensor.as_str()) {
                return Some(*t);
            }
            let n = producer(graph, &tensor).filter(|n| matches!(n.op_type.as_str(), "DequantizeLinear" | "Cast" | "Identity"))?;
            tensor = n.input.first()?.clone();
        }
        None
    };
    let reads_ids = |tensor: &str| tensor == ids || producer(graph, tensor).is_some_and(|n| n.op_type == "Cast" && n.input.first().map(String::as_str) == Some(ids));
    let tables = graph.node.iter().filter(|n| n.op_type == "Gather" && n.input.len() == 2 && reads_ids(&n.input[1]));
    let largest = features.input_ids.iter().copied().max().unwrap_or(0);
    let smallest = features.input_ids.iter().copied().min().unwrap_or(0);
    for gather in tables {
        let Some(table) = origin(&gather.input[0]) else { continue };
        let rows = table.dims.first().copied().unwrap_or(0);
        if largest >= rows || smallest < 0 {
            return Err(RuntimeError {
                path: label.to_owned(),
                message: format!(
                    "token ids run from {smallest} to {largest}, but the table `{}` that `{ids}` indexes has {rows} rows: the tokenizer does not belong to this model",
                    table.name
                ),
            });
        }
    }
    Ok(())
}

/// Loads `model` (the decoded `bytes` of `label`) into the chosen engine. `cores` sizes ONNX
/// Runtime's intra-op thread pool.
pub fn load_engine(choice: &EngineChoice, model: &tract_onnx::pb::ModelProto, bytes: &[u8], label: &Path, cores: usize) -> Result<Box<dyn Engine>, RuntimeError> {
    match choice {
        // TractSession::from_proto checks the inputs itself (calibration and answer build one directly).
        EngineChoice::Tract => {
            let _ = (bytes, cores);
            Ok(Box::new(TractSession::from_proto(model, &label.display().to_string())?))
        }
        #[cfg(feature = "ort")]
        EngineChoice::OnnxRuntime { library } => {
            let layout = check_inputs(model, label)?;
            Ok(Box::new(OrtSession::from_bytes(library, bytes, label, cores, layout)?))
        }
        #[cfg(not(feature = "ort"))]
        EngineChoice::OnnxRuntime { .. } => Err(RuntimeError {
            path: label.to_owned(),
            message: "this qaforge was built without ONNX Runtime support; rebuild with `cargo build --features ort`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{tensor_proto::DataType, type_proto, GraphProto, ModelProto, TypeProto, ValueInfoProto};

    fn model(inputs: &[(&str, DataType)]) -> ModelProto {
        let input = |(name, ty): &(&str, DataType)| ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto { denotation: String::new(), value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: *ty as i32, shape: None })) }),
            doc_string: String::new(),
        };
        ModelProto { graph: Some(GraphProto { input: inputs.iter().map(input).collect(), ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn inputs_are_checked_before_feeding_them_by_position() {
        let check = |inputs: &[(&str, DataType)]| check_inputs(&model(inputs), Path::new("m.onnx")).map_err(|e| e.to_string());
        let i64 = DataType::Int64;
        assert_eq!(check(&[("input_ids", i64), ("attention_mask", i64), ("token_type_ids", i64)]), Ok(InputLayout::WithTokenTypes));
        assert_eq!(check(&[("ids", i64), ("mask", i64), ("segments", DataType::Int32)]), Ok(InputLayout::WithTokenTypes), "other names go by position");
        let err = check(&[("input_ids", i64), ("token_type_ids", i64), ("attention_mask", i64)]).unwrap_err();
        assert!(err.contains("m.onnx") && err.contains("in the order input_ids, token_type_ids, attention_mask"), "{err}");
        assert_eq!(check(&[("input_ids", i64), ("attention_mask", i64)]), Ok(InputLayout::WithoutTokenTypes));
        let err = check(&[("input_ids", i64), ("token_type_ids", i64)]).unwrap_err();
        assert!(err.contains("qaforge feeds input_ids, attention_mask by position"), "{err}");
        let err = check(&[("input_ids", i64)]).unwrap_err();
        assert!(err.contains("1 input(s)"), "{err}");
        let err = check(&[("input_ids", i64), ("attention_mask", i64), ("pixels", DataType::Float)]).unwrap_err();
        assert!(err.contains("`pixels` is not an integer tensor"), "{err}");
    }
}

/// The padded length a batch of features `s..e` runs at: one padding token more than the
/// longest feature. MobileBERT's trigram embedding lets the last real token ([SEP]) see the
/// embedding of the token after it, which is [PAD] in features padded to max_length (as
/// run_qa.py pads them) and zero when a batch is cut exactly at its longest feature.
pub fn padded_length(features: &Features, s: usize, e: usize) -> usize {
    let longest = (s..e).map(|i| features.length(i)).max().unwrap_or(1).max(1);
    (longest + 1).min(features.max_length)
}

/// Rows `s..e` of a `[count, max_length]` input, cut to `len` columns.
pub fn gather_rows(features: &Features, src: &[i64], s: usize, e: usize, len: usize) -> Vec<i64> {
    let m = features.max_length;
    (s..e).flat_map(|i| src[i * m..i * m + len].iter().copied()).collect()
}
