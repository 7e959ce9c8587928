//! A read-only view of every tensor in a checkpoint, whatever file format holds it.
//!
//! Files stay memory-mapped; a tensor is only turned into float32 (through `half` for f16/bf16)
//! when the emitter asks for it, with its shape and finiteness checked at that point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{CheckpointError, Result};

/// Element types found in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE float64.
    F64,
    /// int64 (e.g. `embeddings.position_ids`).
    I64,
    /// int32.
    I32,
    /// uint8.
    U8,
    /// bool.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether values of this dtype convert to float32 weights.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Where a tensor's elements lie inside a mapped file.
#[derive(Debug, Clone)]
pub(crate) enum Placement {
    /// Row-major and contiguous from this byte offset.
    Contiguous { start: usize },
    /// A strided view into a storage (torch checkpoints may hold views): `start` and `strides` in
    /// elements, relative to the storage that begins at byte `storage_start`.
    Strided { storage_start: usize, start: usize, strides: Vec<usize> },
}

/// One tensor's metadata.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    pub(crate) source: usize,
    pub(crate) placement: Placement,
}

impl TensorEntry {
    /// Number of elements (the caller has checked that the product does not overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A mapped weights file.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) map: Mmap,
}

/// Every tensor of a checkpoint, by name.
#[derive(Debug, Default)]
pub struct Weights {
    pub(crate) sources: Vec<Source>,
    pub(crate) entries: BTreeMap<String, TensorEntry>,
}

/// Number of elements of `shape`, or `None` when the product overflows.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Maps a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // SAFETY: the map is read-only and private to this process; a file truncated underneath us by
    // another process could fault, which is the documented limit of every mmap-based loader.
    unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))
}

impl Weights {
    /// Adds a mapped file and its tensors; on a name already present, returns that name.
    pub(crate) fn add_source(
        &mut self,
        path: &Path,
        map: Mmap,
        entries: Vec<(String, TensorEntry)>,
    ) -> std::result::Result<(), String> {
        for (name, entry) in entries {
            if self.entries.insert(name.clone(), entry).is_some() {
                return Err(name);
            }
        }
        self.sources.push(Source { path: path.to_owned(), map });
        Ok(())
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Metadata of one tensor.
    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The files the tensors come from.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources.iter().map(|s| s.path.as_path())
    }

    /// The file holding `name` (or the first file when the tensor is absent), for messages.
    pub fn path_of(&self, name: &str) -> PathBuf {
        let index = self.entries.get(name).map_or(0, |e| e.source);
        self.sources.get(index).map(|s| s.path.clone()).unwrap_or_default()
    }

    /// The entry of `name`, checked to exist, to have the `expected` shape and a float dtype.
    pub fn checked_entry(&self, name: &str, expected: &[usize]) -> Result<&TensorEntry> {
        let entry = self.entries.get(name).ok_or_else(|| CheckpointError::MissingTensor {
            path: self.path_of(name),
            name: name.into(),
            expected: expected.to_vec(),
        })?;
        let path = &self.sources[entry.source].path;
        if entry.shape != expected {
            return Err(CheckpointError::ShapeMismatch {
                path: path.clone(),
                name: name.into(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        if !entry.dtype.is_float() {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.clone(),
                name: name.into(),
                dtype: entry.dtype.to_string(),
            });
        }
        Ok(entry)
    }

    /// The tensor `name` as float32, checked against `expected` shape and for NaN/Inf.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (values, non_finite) = self.f32_counting_non_finite(name, expected)?;
        match non_finite {
            Some((count, first)) => {
                Err(CheckpointError::NonFinite { path: self.path_of(name), name: name.into(), count, first })
            }
            None => Ok(values),
        }
    }

    /// The tensor `name` as float32, checked against `expected` shape, with the number of NaN/Inf
    /// values and the first one's flat index (for callers that warn instead of refusing).
    pub fn f32_counting_non_finite(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<(Vec<f32>, Option<(usize, usize)>)> {
        let entry = self.checked_entry(name, expected)?;
        let values = self.decode(entry);
        let mut non_finite = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
        let found = non_finite.next().map(|(first, _)| (1 + non_finite.count(), first));
        Ok((values, found))
    }

    /// Decodes a float tensor whose byte range the loader has already checked against the file.
    fn decode(&self, entry: &TensorEntry) -> Vec<f32> {
        let map = &self.sources[entry.source].map;
        let size = entry.dtype.size();
        let element = |at: usize| -> f32 {
            let b = &map[at..at + size];
            match entry.dtype {
                DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
                _ => unreachable!("decode is only called for float dtypes"),
            }
        };
        match &entry.placement {
            Placement::Contiguous { start } => (0..entry.numel()).map(|i| element(start + i * size)).collect(),
            Placement::Strided { storage_start, start, strides } => {
                let mut out = Vec::with_capacity(entry.numel());
                let mut index = vec![0usize; entry.shape.len()];
                for _ in 0..entry.numel() {
                    let offset = start + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
                    out.push(element(storage_start + offset * size));
                    for axis in (0..index.len()).rev() {
                        index[axis] += 1;
                        if index[axis] < entry.shape[axis] {
                            break;
                        }
                        index[axis] = 0;
                    }
                }
                out
            }
        }
    }
}
