//! `model.safetensors` and sharded `model.safetensors.index.json`, memory-mapped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{CheckpointError, Result};
use crate::weights::{checked_numel, map_file, DType, Placement, TensorEntry, Weights};

/// Reads one safetensors file into `weights`. The `safetensors` crate validates the header (its
/// length is bounded, offsets must tile the data exactly, byte counts must match shapes).
pub(crate) fn add_file(weights: &mut Weights, path: &Path) -> Result<()> {
    let map = map_file(path)?;
    let bad = |message: String| CheckpointError::Safetensors { path: path.to_owned(), message };
    let parsed = safetensors::SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
    let base = map.as_ptr() as usize;
    let source = weights.sources.len();
    let mut entries = Vec::new();
    for (name, view) in parsed.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::BOOL => DType::Bool,
            other => return Err(bad(format!("tensor `{name}` has unsupported dtype {other:?}"))),
        };
        let shape = view.shape().to_vec();
        let numel = checked_numel(&shape).ok_or_else(|| bad(format!("tensor `{name}`: shape {shape:?} overflows")))?;
        if numel.checked_mul(dtype.size()) != Some(view.data().len()) {
            return Err(bad(format!("tensor `{name}`: {} bytes for shape {shape:?} of {dtype}", view.data().len())));
        }
        let start = view.data().as_ptr() as usize - base;
        entries.push((name, TensorEntry { dtype, shape, source, placement: Placement::Contiguous { start } }));
    }
    drop(parsed);
    weights.add_source(path, map, entries).map_err(|name| bad(format!("tensor `{name}` appears in more than one file")))
}

/// Reads a sharded checkpoint: the index's `weight_map` names, for each tensor, a file beside it.
pub(crate) fn add_sharded(weights: &mut Weights, index_path: &Path) -> Result<()> {
    let bad = |message: String| CheckpointError::Safetensors { path: index_path.to_owned(), message };
    let bytes = std::fs::read(index_path).map_err(|e| CheckpointError::io(index_path, e))?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    for shard in shards {
        // A shard is a plain file name beside the index: nothing that climbs out of the directory.
        if shard.is_empty() || shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(bad(format!("shard name `{shard}` is not a plain file name")));
        }
        add_file(weights, &dir.join(shard))?;
    }
    for (name, shard) in &index.weight_map {
        match weights.entries.get(name) {
            Some(entry) if weights.sources[entry.source].path.file_name().is_some_and(|f| f == shard.as_str()) => {}
            Some(_) => return Err(bad(format!("tensor `{name}` is not in shard `{shard}` where the index puts it"))),
            None => return Err(bad(format!("tensor `{name}` listed in the index is in no shard"))),
        }
    }
    Ok(())
}
