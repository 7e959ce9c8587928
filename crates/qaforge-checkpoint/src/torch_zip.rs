//! `pytorch_model.bin` / `.pt` in torch's zip format (torch >= 1.6).
//!
//! The pickle VM is candle-core's (`candle_core::pickle::Stack`), which builds a tree of objects
//! and never imports or calls anything. On that tree qaforge then enforces an allow-list of
//! globals (the tensor-rebuild functions and storage classes) and decodes the tensor-rebuild
//! arguments itself, with bounds checks, instead of candle's `into_tensor_info` (which indexes
//! tuples without checking their length). Tensor bytes are read in place from the mapped archive:
//! torch stores them uncompressed.

use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};

use crate::error::{CheckpointError, Result};
use crate::weights::{checked_numel, map_file, DType, Placement, TensorEntry, Weights};

/// The only globals a state-dict pickle may reference.
const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// Walks a pickle's opcodes without running them and checks that every length-prefixed argument
/// fits in the bytes that remain. Hand-written because candle's VM allocates a string or bytes
/// argument at its claimed length before reading it (a 5-byte BINUNICODE8 can ask for 2^64 bytes,
/// a BINUNICODE for 4 GiB): such claims are refused here, so no allocation exceeds the pickle's
/// own size (itself capped at [`MAX_PICKLE_BYTES`]). Unknown opcodes are refused too.
fn check_pickle_lengths(pickle: &[u8]) -> std::result::Result<(), String> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize, what: &str| -> std::result::Result<usize, String> {
        let start = *at;
        match start.checked_add(n) {
            Some(end) if end <= pickle.len() => {
                *at = end;
                Ok(start)
            }
            _ => Err(format!("pickle truncated in the argument of {what} at byte {}", start.saturating_sub(1))),
        }
    };
    let uint = |bytes: &[u8]| bytes.iter().rev().fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    while at < pickle.len() {
        let op = pickle[at];
        let position = at;
        at += 1;
        let fixed = match op {
            // No argument.
            b'}' | b']' | b')' | b'(' | b'N' | 0x88 | 0x89 | b't' | 0x85 | 0x86 | 0x87 | b'R' | b's' | b'u' | b'a'
            | b'e' | b'b' | b'Q' | 0x81 | b'0' | b'1' | b'2' | b'l' | b'd' | 0x94 | 0x93 | 0x8f | 0x90 | 0x91
            | 0x92 | 0x97 | 0x98 => Some(0),
            b'.' => return Ok(()),
            // Fixed-size arguments.
            0x80 | b'q' | b'h' | b'K' | 0x82 => Some(1),
            b'M' | 0x83 => Some(2),
            b'r' | b'j' | b'J' | 0x84 => Some(4),
            b'G' | 0x95 => Some(8),
            _ => None,
        };
        if let Some(n) = fixed {
            take(&mut at, n, "an opcode")?;
            continue;
        }
        // Length-prefixed arguments: (bytes of the length, opcode name).
        let prefixed = match op {
            0x8a => Some((1, "LONG1")),
            0x8b => Some((4, "LONG4")),
            b'X' => Some((4, "BINUNICODE")),
            0x8c => Some((1, "SHORT_BINUNICODE")),
            0x8d => Some((8, "BINUNICODE8")),
            b'T' => Some((4, "BINSTRING")),
            b'U' => Some((1, "SHORT_BINSTRING")),
            b'B' => Some((4, "BINBYTES")),
            b'C' => Some((1, "SHORT_BINBYTES")),
            0x8e => Some((8, "BINBYTES8")),
            0x96 => Some((8, "BYTEARRAY8")),
            _ => None,
        };
        if let Some((width, name)) = prefixed {
            let start = take(&mut at, width, name)?;
            let claimed = uint(&pickle[start..start + width]);
            let remaining = (pickle.len() - at) as u128;
            if claimed > remaining {
                return Err(format!(
                    "pickle opcode {name} at byte {position} claims {claimed} bytes but only {remaining} remain"
                ));
            }
            at += claimed as usize;
            continue;
        }
        // Newline-terminated text arguments (GLOBAL has two lines).
        let lines = match op {
            b'c' => 2,
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'p' | b'g' => 1,
            _ => return Err(format!("unknown pickle opcode 0x{op:02x} at byte {position}")),
        };
        for _ in 0..lines {
            let end = pickle[at..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| format!("pickle truncated in a text argument at byte {position}"))?;
            at += end + 1;
        }
    }
    Err("pickle ends without STOP".into())
}

/// data.pkl of a state dict is small (names and tuples); anything larger is refused before reading.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

pub(crate) fn add_file(weights: &mut Weights, path: &Path) -> Result<()> {
    let bad = |message: String| CheckpointError::Torch { path: path.to_owned(), message };
    let map = map_file(path)?;
    if !map.starts_with(b"PK\x03\x04") {
        if map.first() == Some(&0x80) {
            return Err(bad("legacy (pre-1.6, non-zip) torch serialization is not read; re-save it with \
                `torch.save(torch.load(path), path)` under torch >= 1.6, or convert it to safetensors"
                .into()));
        }
        return Err(bad("not a zip archive (torch >= 1.6 checkpoints are zip files)".into()));
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(&map[..])).map_err(|e| bad(format!("zip: {e}")))?;

    // Every member name must stay inside the archive's own folder; find the one data.pkl.
    let mut pickle_index = None;
    for i in 0..archive.len() {
        let member = archive.by_index_raw(i).map_err(|e| bad(format!("zip member {i}: {e}")))?;
        let name = member.name().to_owned();
        if name.starts_with('/') || name.starts_with('\\') || name.split(['/', '\\']).any(|part| part == "..") {
            return Err(bad(format!("zip member `{name}` has a path that leaves the archive")));
        }
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            if pickle_index.is_some() {
                return Err(bad("more than one data.pkl in the archive".into()));
            }
            pickle_index = Some((i, name));
        }
    }
    let (pickle_index, pickle_name) = pickle_index.ok_or_else(|| bad("no data.pkl in the archive".into()))?;
    let prefix = pickle_name.strip_suffix("data.pkl").unwrap_or_default().to_owned();

    let pickle = {
        let member = archive.by_index(pickle_index).map_err(|e| bad(format!("{pickle_name}: {e}")))?;
        if member.size() > MAX_PICKLE_BYTES {
            return Err(bad(format!("{pickle_name} claims {} bytes (limit {MAX_PICKLE_BYTES})", member.size())));
        }
        let mut bytes = Vec::new();
        member.take(MAX_PICKLE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| bad(format!("{pickle_name}: {e}")))?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(bad(format!("{pickle_name} inflates past {MAX_PICKLE_BYTES} bytes")));
        }
        bytes
    };
    check_pickle_lengths(&pickle).map_err(|message| bad(format!("{pickle_name}: {message}")))?;
    let mut stack = Stack::empty();
    stack.read_loop(&mut Cursor::new(&pickle)).map_err(|e| bad(format!("{pickle_name}: {}", first_line(&e))))?;
    let root = stack.finalize().map_err(|e| bad(format!("{pickle_name}: {}", first_line(&e))))?;
    check_globals(&root).map_err(|(module, class)| {
        bad(format!(
            "{pickle_name} references `{module}.{class}`, which is not a tensor-rebuild global; refusing to load it"
        ))
    })?;

    let items = state_dict_items(root).ok_or_else(|| bad(format!("{pickle_name} does not hold a state dict")))?;
    let source = weights.sources.len();
    let mut entries = Vec::new();
    for (key, value) in items {
        let Object::Unicode(name) = key else { continue };
        let Some(rebuild) = tensor_rebuild(value) else { continue };
        let rebuild = rebuild.map_err(|message| bad(format!("tensor `{name}`: {message}")))?;
        let member_name = format!("{prefix}data/{}", rebuild.storage_key);
        let member =
            archive.by_name(&member_name).map_err(|e| bad(format!("tensor `{name}`: storage `{member_name}`: {e}")))?;
        if member.compression() != zip::CompressionMethod::Stored {
            return Err(bad(format!(
                "tensor `{name}`: storage `{member_name}` is compressed; torch stores tensors uncompressed"
            )));
        }
        let storage_start =
            member.data_start().ok_or_else(|| bad(format!("storage `{member_name}`: no data offset")))? as usize;
        let storage_bytes = member.size() as usize;
        if storage_start.checked_add(storage_bytes).is_none_or(|end| end > map.len()) {
            return Err(bad(format!("storage `{member_name}` runs past the end of the file")));
        }
        let esize = rebuild.dtype.size();
        if rebuild.storage_elements.checked_mul(esize).is_none_or(|b| b > storage_bytes) {
            return Err(bad(format!(
                "tensor `{name}`: storage `{member_name}` claims {} elements of {} but holds {storage_bytes} bytes",
                rebuild.storage_elements, rebuild.dtype
            )));
        }
        let numel = checked_numel(&rebuild.shape)
            .ok_or_else(|| bad(format!("tensor `{name}`: shape {:?} overflows", rebuild.shape)))?;
        // Highest element the view touches, which must lie inside the storage.
        let extent = if numel == 0 {
            Some(0)
        } else {
            rebuild
                .shape
                .iter()
                .zip(&rebuild.strides)
                .try_fold(rebuild.offset, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)))
        };
        if extent.is_none_or(|last| numel > 0 && last >= rebuild.storage_elements) {
            return Err(bad(format!(
                "tensor `{name}`: shape {:?} at offset {} with strides {:?} runs past its storage of {} elements",
                rebuild.shape, rebuild.offset, rebuild.strides, rebuild.storage_elements
            )));
        }
        let placement = if rebuild.strides == row_major_strides(&rebuild.shape) || numel <= 1 {
            Placement::Contiguous { start: storage_start + rebuild.offset * esize }
        } else {
            Placement::Strided { storage_start, start: rebuild.offset, strides: rebuild.strides }
        };
        entries.push((name, TensorEntry { dtype: rebuild.dtype, shape: rebuild.shape, source, placement }));
    }
    drop(archive);
    weights.add_source(path, map, entries).map_err(|name| bad(format!("tensor `{name}` appears twice")))
}

/// candle's errors carry a backtrace when RUST_BACKTRACE is set; users get the message alone.
fn first_line(error: &candle_core::Error) -> String {
    error.to_string().lines().next().unwrap_or_default().to_string()
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1].saturating_mul(shape[axis + 1]);
    }
    strides
}

/// Walks the whole object tree; returns the first global outside the allow-list.
fn check_globals(root: &Object) -> std::result::Result<(), (String, String)> {
    let mut pending = vec![root];
    while let Some(object) = pending.pop() {
        match object {
            Object::Class { module_name, class_name }
                if !ALLOWED_GLOBALS.iter().any(|(m, c)| m == module_name && c == class_name) =>
            {
                return Err((module_name.clone(), class_name.clone()));
            }
            Object::Tuple(items) | Object::List(items) => pending.extend(items),
            Object::Dict(pairs) => pending.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
            Object::Reduce { callable, args } | Object::Build { callable, args } => {
                pending.push(callable);
                pending.push(args);
            }
            Object::PersistentLoad(inner) => pending.push(inner),
            _ => {}
        }
    }
    Ok(())
}

/// The (name, value) pairs of the state dict: the root dict itself, or its `state_dict` entry
/// when the checkpoint wraps one (`{"state_dict": ..., "epoch": ...}`).
fn state_dict_items(root: Object) -> Option<Vec<(Object, Object)>> {
    let Object::Dict(pairs) = root else { return None };
    let has_tensors = pairs.iter().any(|(_, v)| matches!(v, Object::Reduce { .. }));
    if has_tensors {
        return Some(pairs);
    }
    pairs.into_iter().find_map(|(k, v)| match (k, v) {
        (Object::Unicode(k), Object::Dict(inner)) if k == "state_dict" || k == "model" => Some(inner),
        _ => None,
    })
}

/// The decoded arguments of `torch._utils._rebuild_tensor_v2`.
struct Rebuild {
    storage_key: String,
    dtype: DType,
    storage_elements: usize,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// `None` when `value` is not a tensor at all (state dicts may hold other entries); an error
/// message when it is one whose arguments are malformed.
fn tensor_rebuild(value: Object) -> Option<std::result::Result<Rebuild, String>> {
    let Object::Reduce { callable, args } = value else { return None };
    let (module, class) = match callable.as_ref() {
        Object::Class { module_name, class_name } => (module_name.as_str(), class_name.as_str()),
        _ => return None,
    };
    match (module, class) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(rebuild_tensor_args(*args)),
        ("torch._utils", "_rebuild_parameter") => match *args {
            Object::Tuple(mut items) if !items.is_empty() => tensor_rebuild(items.swap_remove(0)),
            _ => Some(Err("malformed _rebuild_parameter arguments".into())),
        },
        _ => None,
    }
}

fn as_usize(object: &Object) -> Option<usize> {
    match object {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

fn usize_tuple(object: &Object) -> Option<Vec<usize>> {
    match object {
        Object::Tuple(items) | Object::List(items) => items.iter().map(as_usize).collect(),
        _ => None,
    }
}

// Arguments: (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]),
// storage = persistent_load(("storage", StorageClass, key, location, numel)).
fn rebuild_tensor_args(args: Object) -> std::result::Result<Rebuild, String> {
    let Object::Tuple(items) = args else { return Err("_rebuild_tensor_v2 arguments are not a tuple".into()) };
    if items.len() < 4 {
        return Err(format!("_rebuild_tensor_v2 takes at least 4 arguments, found {}", items.len()));
    }
    let Object::PersistentLoad(storage) = &items[0] else { return Err("storage is not a persistent id".into()) };
    let Object::Tuple(storage) = storage.as_ref() else { return Err("storage id is not a tuple".into()) };
    if storage.len() != 5 {
        return Err(format!("storage id has {} fields, expected 5", storage.len()));
    }
    let dtype = match &storage[1] {
        Object::Class { class_name, .. } => match class_name.as_str() {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            other => return Err(format!("unsupported storage type {other}")),
        },
        _ => return Err("storage type is not a class".into()),
    };
    let storage_key = match &storage[2] {
        Object::Unicode(key) if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            key.clone()
        }
        _ => return Err("storage key is not a plain name".into()),
    };
    let storage_elements = as_usize(&storage[4]).ok_or("storage size is not a non-negative integer")?;
    let offset = as_usize(&items[1]).ok_or("storage offset is not a non-negative integer")?;
    let shape = usize_tuple(&items[2]).ok_or("size is not a tuple of non-negative integers")?;
    let strides = usize_tuple(&items[3]).ok_or("stride is not a tuple of non-negative integers")?;
    if shape.len() != strides.len() {
        return Err(format!("size {shape:?} and stride {strides:?} differ in rank"));
    }
    Ok(Rebuild { storage_key, dtype, storage_elements, offset, shape, strides })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_length_claims_beyond_the_data_are_refused() {
        // BINUNICODE claiming 4 GiB - 1, then three bytes.
        let claim = b"\x80\x02X\xff\xff\xff\xffabc.";
        assert!(check_pickle_lengths(claim)
            .unwrap_err()
            .contains("BINUNICODE at byte 2 claims 4294967295 bytes but only 4 remain"));
        // BINUNICODE8 claiming 2^64 - 1.
        let claim = b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff.";
        assert!(check_pickle_lengths(claim).unwrap_err().contains("BINUNICODE8"));
        assert!(check_pickle_lengths(b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01.").is_ok());
        assert!(check_pickle_lengths(b"\x80\x02\xffN.").unwrap_err().contains("unknown pickle opcode 0xff"));
        assert!(check_pickle_lengths(b"\x80\x02ctorch\nFloat").unwrap_err().contains("truncated"));
        assert!(check_pickle_lengths(b"\x80\x02}").unwrap_err().contains("without STOP"));
    }
}
