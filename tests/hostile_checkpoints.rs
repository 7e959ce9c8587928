//! Hostile model directories: each gives its own clear error (exit 2), names the file, and leaves
//! no output behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::{golden, qaforge, text};

/// A copy of the tiny fixture's config.json in a fresh directory.
fn model_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(golden().join("mobilebert-tiny/config.json"), dir.join("config.json")).unwrap();
    dir
}

fn tiny_safetensors() -> Vec<u8> {
    std::fs::read(golden().join("mobilebert-tiny/model.safetensors")).unwrap()
}

/// Re-serialises the tiny fixture's tensors after `edit` has changed the list.
fn edited_safetensors(edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let bytes = tiny_safetensors();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Converts `dir` and asserts exit code 2, a message containing every needle, and no output file.
fn assert_refused(dir: &Path, needles: &[&str]) {
    let out = dir.join("out.onnx");
    let output = qaforge(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "expected `{needle}` in:\n{message}");
    }
    assert!(!message.contains("panicked"), "{message}");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".onnx") || n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn truncated_safetensors() {
    let root = tempfile::tempdir().unwrap();
    let bytes = tiny_safetensors();
    for (name, cut) in
        [("in-length", 4), ("in-header", 200), ("in-data", bytes.len() / 2), ("last-byte", bytes.len() - 1)]
    {
        let dir = model_dir(root.path(), name);
        std::fs::write(dir.join("model.safetensors"), &bytes[..cut]).unwrap();
        assert_refused(&dir, &["model.safetensors", "invalid safetensors file"]);
    }
}

#[test]
fn safetensors_header_longer_than_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "header");
    let mut bytes = tiny_safetensors();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    assert_refused(&dir, &["model.safetensors", "invalid safetensors file"]);
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "missing");
    let name = "mobilebert.encoder.layer.2.ffn.1.output.dense.weight";
    std::fs::write(dir.join("model.safetensors"), edited_safetensors(|t| t.retain(|x| x.0 != name))).unwrap();
    assert_refused(&dir, &["missing tensor", name, "[32, 64]"]);

    let dir = model_dir(root.path(), "shape");
    let name = "qa_outputs.weight";
    std::fs::write(
        dir.join("model.safetensors"),
        edited_safetensors(|t| {
            let entry = t.iter_mut().find(|x| x.0 == name).unwrap();
            entry.2 = vec![64, 2];
        }),
    )
    .unwrap();
    assert_refused(&dir, &[name, "shape [64, 2]", "expected [2, 64]"]);
}

#[test]
fn integer_weights_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "dtype");
    let name = "qa_outputs.bias";
    std::fs::write(
        dir.join("model.safetensors"),
        edited_safetensors(|t| {
            let entry = t.iter_mut().find(|x| x.0 == name).unwrap();
            entry.1 = safetensors::Dtype::I32;
        }),
    )
    .unwrap();
    assert_refused(&dir, &[name, "dtype I32"]);
}

#[test]
fn nan_weights_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "nan");
    let name = "mobilebert.encoder.layer.1.attention.self.value.weight";
    std::fs::write(
        dir.join("model.safetensors"),
        edited_safetensors(|t| {
            let entry = t.iter_mut().find(|x| x.0 == name).unwrap();
            entry.3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
    )
    .unwrap();
    assert_refused(&dir, &[name, "non-finite", "flat index 2"]);
    // By flag, the same checkpoint converts with a warning naming the tensor.
    let out = dir.join("out.onnx");
    let output = qaforge(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--allow-non-finite"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("warning: tensor `{name}` holds 1 non-finite value(s)")),
        "{}",
        text(&output)
    );
    assert!(out.exists());
}

#[test]
fn config_out_of_range_and_unknown_models() {
    let root = tempfile::tempdir().unwrap();
    for (name, edit, needle) in [
        ("heads", r#""num_attention_heads": 4"#, "num_attention_heads = 0"),
        // A MobileBERT config relabelled as bert: the architecture no longer fits the model type.
        ("bert", r#""model_type": "mobilebert""#, "architecture `MobileBertForQuestionAnswering` (model_type bert)"),
    ] {
        let dir = model_dir(root.path(), name);
        std::fs::write(dir.join("model.safetensors"), tiny_safetensors()).unwrap();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let replacement = match name {
            "heads" => r#""num_attention_heads": 0"#,
            _ => r#""model_type": "bert""#,
        };
        assert!(config.contains(edit));
        std::fs::write(dir.join("config.json"), config.replace(edit, replacement)).unwrap();
        assert_refused(&dir, &["config.json", needle]);
    }
    let dir = model_dir(root.path(), "garbage");
    std::fs::write(dir.join("config.json"), b"{\"model_type\": ").unwrap();
    assert_refused(&dir, &["config.json", "invalid config"]);
    let dir = model_dir(root.path(), "noweights");
    assert_refused(&dir, &["no weights found"]);
}

/// A torch zip archive with the given members (all stored uncompressed).
fn torch_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
    buffer.into_inner()
}

#[test]
fn pickle_calling_os_system_is_refused_without_running_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "pickle");
    let marker = root.path().join("pwned");
    // protocol 2: GLOBAL posix.system, ("touch <marker>",), REDUCE, STOP
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    pickle.extend((command.len() as u32).to_le_bytes());
    pickle.extend(command.as_bytes());
    pickle.extend(b"q\x01\x85q\x02Rq\x03.");
    std::fs::write(dir.join("pytorch_model.bin"), torch_zip(&[("archive/data.pkl", &pickle)])).unwrap();
    assert_refused(&dir, &["pytorch_model.bin", "posix.system", "not a tensor-rebuild global"]);
    assert!(!marker.exists(), "the pickle ran");
}

#[test]
fn zip_member_escaping_the_archive_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "traversal");
    std::fs::write(
        dir.join("pytorch_model.bin"),
        torch_zip(&[("archive/data.pkl", b"\x80\x02}q\x00."), ("../../etc/evil", b"x")]),
    )
    .unwrap();
    assert_refused(&dir, &["pytorch_model.bin", "leaves the archive"]);
}

#[test]
fn legacy_and_non_zip_torch_files_are_refused_with_advice() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "legacy");
    std::fs::write(dir.join("pytorch_model.bin"), b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert_refused(&dir, &["pytorch_model.bin", "legacy", "torch.save"]);
    let dir = model_dir(root.path(), "garbage");
    std::fs::write(dir.join("pytorch_model.bin"), b"hello").unwrap();
    assert_refused(&dir, &["pytorch_model.bin", "not a zip archive"]);
}

#[test]
fn torch_storage_smaller_than_its_tensor_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), "storage");
    // {"w": _rebuild_tensor_v2(persistent_load(("storage", FloatStorage, "0", "cpu", 1000)), 0, (10, 10), (10, 1), False, OrderedDict())}
    let pickle = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06M\xe8\x03tq\x07QK\x00K\nK\n\x86q\x08K\nK\x01\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";
    std::fs::write(
        dir.join("pytorch_model.bin"),
        torch_zip(&[("archive/data.pkl", pickle), ("archive/data/0", &[0u8; 40])]),
    )
    .unwrap();
    assert_refused(&dir, &["pytorch_model.bin", "tensor `w`", "claims 1000 elements"]);
}

/// Splits the tiny fixture into two safetensors shards plus an index; `edit_index` may change the
/// weight map before it is written.
fn sharded_dir(
    root: &Path,
    name: &str,
    edit_index: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    let dir = model_dir(root, name);
    let bytes = tiny_safetensors();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (k, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        let views: Vec<_> = part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        std::fs::write(dir.join(&file), safetensors::serialize(views, None).unwrap()).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    edit_index(&mut weight_map);
    let index = serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn sharded_safetensors_convert_to_the_same_graph() {
    let root = tempfile::tempdir().unwrap();
    let dir = sharded_dir(root.path(), "sharded", |_| {});
    let sharded = root.path().join("sharded.onnx");
    let output = qaforge(&["convert", dir.to_str().unwrap(), "-o", sharded.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("model-00002-of-00002.safetensors"), "{}", text(&output));
    let whole = crate::common::convert("mobilebert-tiny", root.path());
    // Same nodes and initializers; only the provenance (source files and their hash) differs.
    let (a, b) = (qaforge_onnx::read_model(&sharded).unwrap(), qaforge_onnx::read_model(&whole).unwrap());
    assert!(a.graph == b.graph, "a sharded checkpoint gives a different graph");
}

#[test]
fn broken_shard_indexes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let escaping = sharded_dir(root.path(), "escaping", |map| {
        map.insert("qa_outputs.bias".into(), "../model.safetensors".into());
    });
    assert_refused(&escaping, &["model.safetensors.index.json", "not a plain file name"]);
    let misplaced = sharded_dir(root.path(), "misplaced", |map| {
        map.insert("qa_outputs.bias".into(), "model-00001-of-00002.safetensors".into());
    });
    assert_refused(&misplaced, &["qa_outputs.bias", "is not in shard"]);
    let missing = sharded_dir(root.path(), "missing", |map| {
        map.insert("qa_outputs.bias".into(), "model-00003-of-00003.safetensors".into());
    });
    assert_refused(&missing, &["model-00003-of-00003.safetensors"]);
}
