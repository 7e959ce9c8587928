//! External data: tensors whose bytes live in a file beside the model (`model.onnx.data`), as
//! torch's dynamo exporter and `onnx.save(..., save_as_external_data=True)` write them.
//!
//! A model names its data files itself, so reading them is reading paths from an untrusted file:
//! a location is read only if it stays inside the model's own folder (relative, no `..`, and its
//! resolved path, symlinks followed, still under the folder's), every region must lie inside its
//! file, and regions may not overlap, so the bytes read in all are bounded by the files' sizes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::pb;
use pb::tensor_proto::DataLocation;

/// Whether a tensor's data is stored outside the model file.
pub(crate) fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty()
}

/// One region a tensor claims: `length` bytes of `file` from `offset`.
struct Region {
    tensor: usize,
    file: PathBuf,
    offset: u64,
    length: Option<u64>,
}

/// Reads every external tensor of `initializers` into its `raw_data` from files inside
/// `model_dir`, and returns the data files read (canonical paths, in first-use order). `Err` is a
/// message naming the tensor and the problem.
pub(crate) fn inline(initializers: &mut [pb::TensorProto], model_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut regions = Vec::new();
    for (index, tensor) in initializers.iter().enumerate().filter(|(_, t)| is_external(t)) {
        let named = |message: String| format!("tensor `{}`: {message}", tensor.name);
        if tensor.data_location != Some(DataLocation::External as i32) {
            return Err(named("it lists external data entries but its data_location is not EXTERNAL".into()));
        }
        if !tensor.raw_data.is_empty() {
            return Err(named("it holds raw data and names external data too".into()));
        }
        let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
        let number = |key: &str| -> Result<Option<u64>, String> {
            entry(key)
                .map(|v| v.parse::<u64>().map_err(|_| named(format!("external data {key} `{v}` is not a byte count"))))
                .transpose()
        };
        let location = entry("location").ok_or_else(|| named("external data without a location".into()))?;
        let file = resolve(location, model_dir).map_err(named)?;
        regions.push(Region { tensor: index, file, offset: number("offset")?.unwrap_or(0), length: number("length")? });
    }
    if regions.is_empty() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut opened: HashMap<PathBuf, (File, u64)> = HashMap::new();
    let mut spans: HashMap<PathBuf, Vec<(u64, u64, usize)>> = HashMap::new();
    for region in &regions {
        let tensor = &initializers[region.tensor];
        let named = |message: String| format!("tensor `{}`: {message}", tensor.name);
        if !opened.contains_key(&region.file) {
            let file = File::open(&region.file).map_err(|e| named(format!("{}: {e}", region.file.display())))?;
            let size = file.metadata().map_err(|e| named(format!("{}: {e}", region.file.display())))?.len();
            opened.insert(region.file.clone(), (file, size));
            files.push(region.file.clone());
        }
        let size = opened[&region.file].1;
        let length = region.length.unwrap_or(size.saturating_sub(region.offset));
        let end = region.offset.checked_add(length).filter(|&end| end <= size);
        let Some(end) = end else {
            return Err(named(format!(
                "external data at offset {} with length {length} runs past the end of {} ({size} bytes)",
                region.offset,
                region.file.display()
            )));
        };
        spans.entry(region.file.clone()).or_default().push((region.offset, end, region.tensor));
    }
    for (file, spans) in &mut spans {
        spans.sort_unstable();
        if let Some(pair) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            let name = |i: usize| initializers[i].name.clone();
            return Err(format!(
                "tensors `{}` and `{}` claim overlapping bytes of {}",
                name(pair[0].2),
                name(pair[1].2),
                file.display()
            ));
        }
    }
    for (file, spans) in spans {
        let (handle, _) = opened.get_mut(&file).expect("opened above");
        for (start, end, index) in spans {
            let tensor = &mut initializers[index];
            let read = |e: std::io::Error| format!("tensor `{}`: reading {}: {e}", tensor.name, file.display());
            let mut bytes = vec![
                0;
                usize::try_from(end - start)
                    .map_err(|_| format!("tensor `{}`: external data too large", tensor.name))?
            ];
            handle.seek(SeekFrom::Start(start)).and_then(|_| handle.read_exact(&mut bytes)).map_err(read)?;
            tensor.raw_data = bytes;
            tensor.external_data.clear();
            tensor.data_location = None;
        }
    }
    Ok(files)
}

/// The data file `location` names, if it lies inside `model_dir`.
fn resolve(location: &str, model_dir: &Path) -> Result<PathBuf, String> {
    let relative = Path::new(location);
    let outside = || {
        format!("external data location `{location}` is outside the model's folder; qaforge reads data files only from beside the model")
    };
    if location.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(outside());
    }
    let dir = model_dir.canonicalize().map_err(|e| format!("{}: {e}", model_dir.display()))?;
    let file = dir
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("external data file {}: {e}", model_dir.join(relative).display()))?;
    if !file.starts_with(&dir) {
        return Err(outside());
    }
    if !file.is_file() {
        return Err(format!("external data location `{location}` is not a file"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_proto::DataType;

    fn external(name: &str, location: &str, offset: Option<u64>, length: Option<u64>) -> pb::TensorProto {
        let mut entries = vec![pb::StringStringEntryProto { key: "location".into(), value: location.into() }];
        entries.extend(offset.map(|o| pb::StringStringEntryProto { key: "offset".into(), value: o.to_string() }));
        entries.extend(length.map(|l| pb::StringStringEntryProto { key: "length".into(), value: l.to_string() }));
        pb::TensorProto {
            name: name.into(),
            dims: vec![2],
            data_type: DataType::Float as i32,
            data_location: Some(DataLocation::External as i32),
            external_data: entries,
            ..Default::default()
        }
    }

    #[test]
    fn data_is_read_from_inside_the_model_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        std::fs::create_dir(&model_dir).unwrap();
        std::fs::write(model_dir.join("m.onnx.data"), (0u8..16).collect::<Vec<_>>()).unwrap();
        std::fs::write(dir.path().join("secret"), [7u8; 8]).unwrap();

        let mut tensors =
            vec![external("a", "m.onnx.data", None, Some(8)), external("b", "./m.onnx.data", Some(8), Some(8))];
        let files = inline(&mut tensors, &model_dir).unwrap();
        assert_eq!(files, vec![model_dir.canonicalize().unwrap().join("m.onnx.data")]);
        assert_eq!(tensors[0].raw_data, (0u8..8).collect::<Vec<_>>());
        assert_eq!(tensors[1].raw_data, (8u8..16).collect::<Vec<_>>());
        assert!(tensors.iter().all(|t| !is_external(t)));

        let err = |tensors: &mut Vec<pb::TensorProto>| inline(tensors, &model_dir).unwrap_err();
        for location in ["../secret", "/etc/passwd", ""] {
            let e = err(&mut vec![external("w", location, None, None)]);
            assert!(e.contains("tensor `w`") && e.contains("outside the model's folder"), "{location}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), model_dir.join("link")).unwrap();
            assert!(err(&mut vec![external("w", "link", None, None)]).contains("outside the model's folder"));
        }
        assert!(err(&mut vec![external("w", "missing.data", None, None)]).contains("missing.data"));
        let e = err(&mut vec![external("w", "m.onnx.data", Some(12), Some(8))]);
        assert!(e.contains("runs past the end") && e.contains("16 bytes"), "{e}");
        let e = err(&mut vec![external("w", "m.onnx.data", Some(u64::MAX), Some(8))]);
        assert!(e.contains("runs past the end"), "{e}");
        let e = err(&mut vec![
            external("a", "m.onnx.data", Some(0), Some(8)),
            external("b", "m.onnx.data", Some(4), Some(8)),
        ]);
        assert!(e.contains("`a` and `b` claim overlapping bytes"), "{e}");
        let mut bad_offset = external("w", "m.onnx.data", None, None);
        bad_offset.external_data.push(pb::StringStringEntryProto { key: "offset".into(), value: "-1".into() });
        assert!(err(&mut vec![bad_offset]).contains("offset `-1` is not a byte count"));
    }
}
