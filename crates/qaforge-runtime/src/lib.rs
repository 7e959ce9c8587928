//! Running ONNX QA graphs, batched with dynamic padding over all cores. tract is the engine
//! quantization (calibration, sensitivity) and verification use; ONNX Runtime, the engine phones
//! run, is available behind the `ort` cargo feature so that the default build stays lean.

use std::path::{Path, PathBuf};

use qaforge_squad::Features;

pub mod batching;
pub mod choice;
pub mod integer_kernels;
pub mod kernels;
/// ONNX Runtime sessions, optimized-model saving and model inspection (feature `ort`).
#[cfg(feature = "ort")]
pub mod onnxruntime;
mod tract;

pub use batching::{batch_coupling, pack, BatchBudget};
pub use choice::{choose_engine, engine_exactness, ChosenEngine, EngineRequest, WITH_ONNXRUNTIME};
pub use integer_kernels::{CpuFeatures, Exactness};
#[cfg(feature = "ort")]
pub use onnxruntime::OrtSession;
pub use tract::{onnxruntime_only, TractSession};

/// Whether `bytes` are an ORT-format model (ONNX Runtime Mobile's flatbuffer, file identifier
/// "ORTM" at offset 4), which only ONNX Runtime reads.
pub fn is_ort_format(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ORTM")
}

/// ONNX Runtime's view of an ORT-format model (`bytes`, read from `label`): a graph-less model
/// with its inputs and metadata (see `onnxruntime::model_view`). Only ONNX Runtime reads the
/// format, so any other engine is an error that says so.
pub fn ort_format_view(
    choice: &EngineChoice,
    bytes: &[u8],
    label: &Path,
) -> Result<tract_onnx::pb::ModelProto, RuntimeError> {
    match choice {
        #[cfg(feature = "ort")]
        EngineChoice::OnnxRuntime { library } => onnxruntime::model_view(library, bytes, label),
        #[cfg(not(feature = "ort"))]
        EngineChoice::OnnxRuntime { .. } => {
            let _ = bytes;
            Err(RuntimeError { path: label.to_owned(), message: "this qaforge was built without ONNX Runtime support; rebuild with `cargo build --features ort`".into() })
        }
        EngineChoice::Tract => Err(RuntimeError {
            path: label.to_owned(),
            message: "an ORT-format model (ONNX Runtime Mobile's package) runs in ONNX Runtime only: verify it with --engine ort".into(),
        }),
    }
}

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
pub trait Engine: Send + Sync {
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
    fn run_outputs(
        &self,
        batch: usize,
        len: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<TensorOutputs, RuntimeError>;

    /// Runs one batch given as `[batch, len]` row-major inputs; returns start and end logits.
    fn run_batch(
        &self,
        batch: usize,
        len: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<(Vec<f32>, Vec<f32>), RuntimeError> {
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
    fn run_features(
        &self,
        features: &Features,
        batch_size: usize,
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Logits, RuntimeError> {
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
        for_each_batch(
            features.count,
            batch_size,
            threads,
            || (),
            |_, s, e| {
                let len = length(s, e);
                let gather = |src: &[i64]| gather_rows(features, src, s, e, len);
                done(
                    s,
                    e,
                    len,
                    self.run_batch(
                        e - s,
                        len,
                        gather(&features.input_ids),
                        gather(&features.attention_mask),
                        gather(&features.token_type_ids),
                    )?,
                );
                Ok(())
            },
        )
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
    let batches: Vec<(usize, usize)> =
        (0..count).step_by(batch_size).map(|s| (s, (s + batch_size).min(count))).collect();
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
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect::<Vec<_>>()
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

/// The inputs engines feed, in this order where a graph's names say nothing; graphs of models
/// without token types (DistilBERT, RoBERTa) take the first two.
pub const INPUT_NAMES: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// What one graph input is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// Token ids.
    Ids,
    /// The attention mask (1 for real tokens).
    Mask,
    /// Token type (segment) ids.
    Types,
}

impl InputRole {
    const ALL: [InputRole; 3] = [InputRole::Ids, InputRole::Mask, InputRole::Types];

    /// The names exporters give this input: transformers' (torch.onnx.export, optimum), with
    /// the `:0` suffix tf2onnx adds, and the original BERT's TensorFlow names.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            InputRole::Ids => &["input_ids", "input_ids:0", "input_word_ids", "ids"],
            InputRole::Mask => &["attention_mask", "attention_mask:0", "input_mask", "mask"],
            InputRole::Types => &["token_type_ids", "token_type_ids:0", "input_type_ids", "segment_ids"],
        }
    }

    fn of_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.aliases().iter().any(|a| a.eq_ignore_ascii_case(name)))
    }
}

/// One graph input: what it is fed, and whether as int32 (else int64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FedInput {
    /// Its name in the graph.
    pub name: String,
    /// What it is fed.
    pub role: InputRole,
    /// Whether the graph takes it as int32.
    pub int32: bool,
}

/// The values of one graph input, in the type it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// int64 values.
    I64(Vec<i64>),
    /// int32 values.
    I32(Vec<i32>),
}

/// How a graph's inputs are fed, in graph order: built by [`check_inputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLayout {
    inputs: Vec<FedInput>,
    /// Whether the roles were taken from the inputs' positions (their names said nothing).
    by_position: bool,
}

impl InputLayout {
    /// The name of the input fed `role`, if the graph takes it.
    pub fn input_of(&self, role: InputRole) -> Option<&str> {
        self.inputs.iter().find(|i| i.role == role).map(|i| i.name.as_str())
    }

    /// How the inputs were mapped, for error messages about what they were fed.
    pub fn describe(&self) -> String {
        let role = |r: InputRole| match r {
            InputRole::Ids => "token ids",
            InputRole::Mask => "attention mask",
            InputRole::Types => "token types",
        };
        let fed = self.inputs.iter().map(|i| format!("{} = {}", i.name, role(i.role))).collect::<Vec<_>>().join(", ");
        if self.by_position {
            format!("inputs taken by position ({fed}): if that is not their order, say it with --input-names")
        } else {
            format!("inputs {fed}")
        }
    }

    /// The graph's inputs in order.
    pub fn inputs(&self) -> &[FedInput] {
        &self.inputs
    }

    /// The inputs of one batch in graph order; token ids never exceed int32 (vocabularies are far
    /// smaller), so int32 inputs take them as they are.
    pub fn feeds(&self, ids: Vec<i64>, mask: Vec<i64>, types: Vec<i64>) -> Vec<Feed> {
        let mut values = [Some(ids), Some(mask), Some(types)];
        self.inputs
            .iter()
            .map(|input| {
                let slot = &mut values[input.role as usize];
                let v = slot.take().unwrap_or_default();
                if input.int32 {
                    Feed::I32(v.into_iter().map(|x| x as i32).collect())
                } else {
                    Feed::I64(v)
                }
            })
            .collect()
    }
}

/// Works out how to feed `model`'s inputs: by the names `input_names` gives (token ids, attention
/// mask, token types, in that order), else by the graph's own names where each is a name
/// exporters give one of the three, else by position as [`INPUT_NAMES`] where no known name sits
/// at another role's position. Inputs must be int64 or int32 tensors; anything that cannot be
/// mapped is an error naming the inputs found.
pub fn check_inputs(
    model: &tract_onnx::pb::ModelProto,
    label: &Path,
    input_names: Option<&[String]>,
) -> Result<InputLayout, RuntimeError> {
    use tract_onnx::pb::tensor_proto::DataType;
    let error = |message: String| RuntimeError { path: label.to_owned(), message };
    let Some(graph) = model.graph.as_ref() else { return Err(error("no graph".into())) };
    // Before IR 4, initializers were listed among the inputs too.
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let found =
        || format!("the graph's inputs are {}", if names.is_empty() { "none".to_string() } else { names.join(", ") });
    let mut by_position = false;
    let roles: Vec<InputRole> = match input_names {
        Some(given) => {
            if !(2..=3).contains(&given.len()) {
                return Err(error(format!(
                    "--input-names takes 2 or 3 names (token ids, attention mask[, token types]), {} given",
                    given.len()
                )));
            }
            if let Some(unknown) = given.iter().find(|g| !names.contains(&g.as_str())) {
                return Err(error(format!(
                    "--input-names names `{unknown}`, which is not an input of the graph; {}",
                    found()
                )));
            }
            if given.len() != names.len()
                || names.iter().any(|n| given.iter().filter(|g| g.as_str() == *n).count() != 1)
            {
                return Err(error(format!("--input-names must name every input of the graph once; {}", found())));
            }
            names.iter().map(|n| InputRole::ALL[given.iter().position(|g| g.as_str() == *n).unwrap_or(0)]).collect()
        }
        None => {
            let by_name: Vec<Option<InputRole>> = names.iter().map(|n| InputRole::of_name(n)).collect();
            let distinct = |roles: &[InputRole]| roles.iter().enumerate().all(|(i, r)| !roles[..i].contains(r));
            let named: Option<Vec<InputRole>> = by_name.iter().copied().collect();
            match named {
                Some(roles) if distinct(&roles) && roles.contains(&InputRole::Ids) && roles.contains(&InputRole::Mask) && roles.len() <= 3 => roles,
                // By position, where no name says otherwise (names exporters give for one role
                // at another role's position are a sign the order is not the usual one).
                _ if matches!(names.len(), 2 | 3) && by_name.iter().zip(InputRole::ALL).all(|(named, at)| named.is_none_or(|r| r == at)) => {
                    by_position = true;
                    InputRole::ALL[..names.len()].to_vec()
                }
                _ => {
                    return Err(error(format!(
                        "cannot tell which input is which: {}; qaforge feeds token ids, an attention mask and token types (or the first two), \
                         by the names {} or by position; say which is which with --input-names IDS,MASK[,TYPES]",
                        found(),
                        INPUT_NAMES.join(", ")
                    )))
                }
            }
        }
    };
    let mut layout = Vec::new();
    for (input, role) in inputs.iter().zip(roles) {
        let element = qaforge_onnx::declared_elem_type(input).unwrap_or(DataType::Undefined as i32);
        let int32 = match element {
            e if e == DataType::Int64 as i32 => false,
            e if e == DataType::Int32 as i32 => true,
            _ => return Err(error(format!("input `{}` is not an int64 or int32 tensor (element type {element}); qaforge feeds token ids and masks", input.name))),
        };
        layout.push(FedInput { name: input.name.clone(), role, int32 });
    }
    Ok(InputLayout { inputs: layout, by_position })
}

/// Checks that every token id of `features` indexes a row of the tables the graph looks its
/// token-ids input (as `layout` maps it) up in: Gathers whose indices are that input, whose data
/// is an initializer, perhaps dequantized or cast first. A tokenizer that does not belong to the
/// model, or inputs fed in the wrong order, give ids past a table, which engines answer with
/// garbage, an error or a panic; this names it.
pub fn check_token_ids(
    model: &tract_onnx::pb::ModelProto,
    layout: &InputLayout,
    features: &Features,
    label: &Path,
) -> Result<(), RuntimeError> {
    let Some(graph) = model.graph.as_ref() else { return Ok(()) };
    let initializers: std::collections::HashMap<&str, &tract_onnx::pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let Some(ids) = layout.input_of(InputRole::Ids) else { return Ok(()) };
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
            let n = producer(graph, &tensor)
                .filter(|n| matches!(n.op_type.as_str(), "DequantizeLinear" | "Cast" | "Identity"))?;
            tensor = n.input.first()?.clone();
        }
        None
    };
    let reads_ids = |tensor: &str| {
        tensor == ids
            || producer(graph, tensor)
                .is_some_and(|n| n.op_type == "Cast" && n.input.first().map(String::as_str) == Some(ids))
    };
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
                    "token ids run from {smallest} to {largest}, but the table `{}` that `{ids}` indexes has {rows} rows: the tokenizer does not belong to this model ({})",
                    table.name,
                    layout.describe()
                ),
            });
        }
    }
    Ok(())
}

/// Loads `model` (the decoded `bytes` of `label`) into the chosen engine, its inputs fed as
/// `layout` (from [`check_inputs`]) says. `cores` sizes ONNX Runtime's intra-op thread pool.
pub fn load_engine(
    choice: &EngineChoice,
    model: &tract_onnx::pb::ModelProto,
    bytes: &[u8],
    label: &Path,
    cores: usize,
    layout: InputLayout,
) -> Result<Box<dyn Engine>, RuntimeError> {
    match choice {
        EngineChoice::Tract => {
            let _ = (bytes, cores);
            Ok(Box::new(TractSession::with_layout(model, &label.display().to_string(), layout)?))
        }
        #[cfg(feature = "ort")]
        EngineChoice::OnnxRuntime { library } => {
            Ok(Box::new(OrtSession::from_bytes(library, bytes, label, cores, layout)?))
        }
        #[cfg(not(feature = "ort"))]
        EngineChoice::OnnxRuntime { .. } => Err(RuntimeError {
            path: label.to_owned(),
            message: "this qaforge was built without ONNX Runtime support; rebuild with `cargo build --features ort`"
                .into(),
        }),
    }
}

/// The padded length a batch of features `s..e` runs at: one padding token more than the
/// longest feature. MobileBERT's trigram embedding lets the last real token (`[SEP]`) see the
/// embedding of the token after it, which is `[PAD]` in features padded to max_length (as
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{tensor_proto::DataType, type_proto, GraphProto, ModelProto, TypeProto, ValueInfoProto};

    fn model(inputs: &[(&str, DataType)]) -> ModelProto {
        let input = |(name, ty): &(&str, DataType)| ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: *ty as i32, shape: None })),
            }),
            doc_string: String::new(),
        };
        ModelProto {
            graph: Some(GraphProto { input: inputs.iter().map(input).collect(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_are_mapped_by_name_or_position_before_feeding_them() {
        let roles = |layout: InputLayout| layout.inputs().iter().map(|i| (i.role, i.int32)).collect::<Vec<_>>();
        let check = |inputs: &[(&str, DataType)], names: Option<&[&str]>| {
            let names: Option<Vec<String>> = names.map(|n| n.iter().map(|s| s.to_string()).collect());
            check_inputs(&model(inputs), Path::new("m.onnx"), names.as_deref()).map(roles).map_err(|e| e.to_string())
        };
        let (i64, i32) = (DataType::Int64, DataType::Int32);
        use InputRole::*;
        assert_eq!(
            check(&[("input_ids", i64), ("attention_mask", i64), ("token_type_ids", i64)], None),
            Ok(vec![(Ids, false), (Mask, false), (Types, false)])
        );
        assert_eq!(
            check(&[("a", i64), ("b", i64), ("c", i32)], None),
            Ok(vec![(Ids, false), (Mask, false), (Types, true)]),
            "unknown names go by position"
        );
        assert_eq!(
            check(&[("input_ids", i64), ("token_type_ids", i64), ("attention_mask", i64)], None),
            Ok(vec![(Ids, false), (Types, false), (Mask, false)]),
            "known names in any order"
        );
        assert_eq!(check(&[("segment_ids:0", i32), ("input_mask", i32), ("input_ids:0", i32)], None).err(), Some("m.onnx: cannot tell which input is which: the graph's inputs are segment_ids:0, input_mask, input_ids:0; qaforge feeds token ids, an attention mask and token types (or the first two), by the names input_ids, attention_mask, token_type_ids or by position; say which is which with --input-names IDS,MASK[,TYPES]".into()));
        assert_eq!(
            check(&[("segment_ids", i32), ("input_mask", i32), ("input_ids:0", i32)], None),
            Ok(vec![(Types, true), (Mask, true), (Ids, true)]),
            "TensorFlow BERT names"
        );
        assert_eq!(check(&[("input_ids", i64), ("attention_mask", i64)], None), Ok(vec![(Ids, false), (Mask, false)]));
        let err = check(&[("input_ids", i64), ("token_type_ids", i64)], None).unwrap_err();
        assert!(err.contains("cannot tell which input is which") && err.contains("--input-names"), "{err}");
        assert_eq!(
            check(&[("input_ids", i64), ("mask", i64), ("segments", i64)], None),
            Ok(vec![(Ids, false), (Mask, false), (Types, false)]),
            "known names where position puts them"
        );
        let err = check(&[("x", i64), ("input_ids", i64), ("y", i64)], None).unwrap_err();
        assert!(
            err.contains("x, input_ids, y"),
            "a known name at another role's position is not guessed around: {err}"
        );
        let err = check(&[("input_ids", i64)], None).unwrap_err();
        assert!(err.contains("cannot tell"), "{err}");
        let err = check(
            &[("input_ids", i64), ("attention_mask", i64), ("pixels", DataType::Float)],
            Some(&["input_ids", "attention_mask", "pixels"]),
        )
        .unwrap_err();
        assert!(err.contains("`pixels` is not an int64 or int32 tensor"), "{err}");
        assert_eq!(
            check(&[("x", i64), ("y", i64), ("z", i64)], Some(&["z", "x", "y"])),
            Ok(vec![(Mask, false), (Types, false), (Ids, false)])
        );
        let err = check(&[("x", i64), ("y", i64)], Some(&["x", "w"])).unwrap_err();
        assert!(err.contains("names `w`, which is not an input of the graph; the graph's inputs are x, y"), "{err}");
        let err = check(&[("x", i64), ("y", i64), ("z", i64)], Some(&["x", "y"])).unwrap_err();
        assert!(err.contains("must name every input of the graph once"), "{err}");
        let err = check(&[("x", i64), ("y", i64)], Some(&["x"])).unwrap_err();
        assert!(err.contains("takes 2 or 3 names"), "{err}");
    }

    #[test]
    fn feeds_follow_the_graph_order_and_types() {
        let input = |name: &str, role, int32| FedInput { name: name.into(), role, int32 };
        let layout = InputLayout {
            inputs: vec![
                input("t", InputRole::Types, true),
                input("i", InputRole::Ids, false),
                input("m", InputRole::Mask, false),
            ],
            by_position: false,
        };
        assert_eq!(layout.input_of(InputRole::Ids), Some("i"));
        assert_eq!(
            layout.feeds(vec![5], vec![1], vec![0]),
            vec![Feed::I32(vec![0]), Feed::I64(vec![5]), Feed::I64(vec![1])]
        );
        let two = InputLayout {
            inputs: vec![input("i", InputRole::Ids, false), input("m", InputRole::Mask, false)],
            by_position: true,
        };
        assert_eq!(
            two.feeds(vec![5], vec![1], vec![0]),
            vec![Feed::I64(vec![5]), Feed::I64(vec![1])],
            "token types are dropped where the graph takes none"
        );
    }
}
