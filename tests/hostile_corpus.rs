//! The committed corpus of hostile inputs (tests/hostile/, written by make_corpus.py): one test
//! per file, each asserting exit code 2, the file's name and the specific problem in the message,
//! no panic or backtrace, and no output left behind.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{golden, text};

fn corpus(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile").join(file)
}

/// Runs qaforge with RUST_BACKTRACE set, so that a backtrace would show if anything printed one.
fn qaforge(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qaforge")).args(args).env("RUST_BACKTRACE", "1").output().unwrap()
}

fn assert_bad_input(output: &Output, needles: &[&str]) {
    let message = text(output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "expected `{needle}` in:\n{message}");
    }
    for forbidden in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!message.contains(forbidden), "{message}");
    }
}

/// One test per corpus file: `kind` is the corpus folder and names the function that feeds the
/// file to qaforge (`kind(file, needles)`).
macro_rules! cases {
    ($kind:ident; $($test:ident: $file:literal => [$($needle:literal),*];)*) => {$(
        #[test]
        fn $test() {
            $kind(concat!(stringify!($kind), "/", $file), &[$($needle),*]);
        }
    )*};
}

fn safetensors(file: &str, needles: &[&str]) {
    convert_dir(Some((file, "model.safetensors")), None, &[&["model.safetensors"], needles].concat());
}

fn torch(file: &str, needles: &[&str]) {
    convert_dir(Some((file, "pytorch_model.bin")), None, &[&["pytorch_model.bin"], needles].concat());
}

fn config(file: &str, needles: &[&str]) {
    convert_dir(None, Some(file), &[&["config.json"], needles].concat());
}

fn squad(file: &str, needles: &[&str]) {
    let predictions = golden().join("squad/predictions/nlnet-single.json");
    let name = file.rsplit('/').next().unwrap_or(file);
    eval(&corpus(file), &predictions, &[], &[&[name], needles].concat());
}

/// A model directory with the tiny fixture's config.json (or `config`) and `weights` under `name`.
fn convert_dir(weights: Option<(&str, &str)>, config: Option<&str>, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    match config {
        Some(file) => std::fs::copy(corpus(file), model.join("config.json")).unwrap(),
        None => std::fs::copy(golden().join("mobilebert-tiny/config.json"), model.join("config.json")).unwrap(),
    };
    match weights {
        Some((file, name)) => std::fs::copy(corpus(file), model.join(name)).unwrap(),
        None => {
            std::fs::copy(golden().join("mobilebert-tiny/model.safetensors"), model.join("model.safetensors")).unwrap()
        }
    };
    let out = dir.path().join("out.onnx");
    let output = qaforge(&["convert", model.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_bad_input(&output, needles);
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "model").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

cases! { safetensors;
    safetensors_valid_file_loads_and_then_lacks_mobilebert_tensors: "valid-2x2.safetensors" => ["missing tensor `mobilebert.embeddings.word_embeddings.weight`"];
    safetensors_truncated_in_length: "truncated-in-length.safetensors" => ["invalid safetensors file", "header too small"];
    safetensors_truncated_in_header: "truncated-in-header.safetensors" => ["invalid safetensors file", "invalid header length"];
    safetensors_truncated_after_header: "truncated-after-header.safetensors" => ["invalid safetensors file", "file not fully covered"];
    safetensors_truncated_in_data: "truncated-in-data.safetensors" => ["invalid safetensors file", "file not fully covered"];
    safetensors_header_length_beyond_file: "header-length-beyond-file.safetensors" => ["invalid safetensors file", "header too large"];
    safetensors_header_not_json: "header-not-json.safetensors" => ["invalid safetensors file", "invalid JSON in header"];
    safetensors_offsets_out_of_range: "offsets-out-of-range.safetensors" => ["invalid safetensors file", "invalid shape, data type, or offset"];
    safetensors_offsets_overlap: "offsets-overlap.safetensors" => ["invalid safetensors file", "invalid offset for tensor `b`"];
    safetensors_byte_count_mismatch: "byte-count-mismatch.safetensors" => ["invalid safetensors file", "invalid shape, data type, or offset"];
    safetensors_shape_product_overflows: "shape-product-overflows.safetensors" => ["invalid safetensors file", "overflow computing buffer size"];
    safetensors_trillion_elements: "trillion-elements.safetensors" => ["invalid safetensors file", "file not fully covered"];
    safetensors_unknown_dtype: "unknown-dtype.safetensors" => ["invalid safetensors file", "unknown variant `F7`"];
    safetensors_duplicate_keys: "duplicate-keys.safetensors" => ["invalid safetensors file", "invalid offset for tensor `w`"];
}

cases! { torch;
    torch_valid_archive_loads_and_then_lacks_mobilebert_tensors: "valid-2x2.bin" => ["missing tensor `mobilebert.embeddings.word_embeddings.weight`"];
    torch_not_a_zip: "not-a-zip.bin" => ["not a zip archive"];
    torch_truncated_central_directory: "truncated-central-directory.bin" => ["invalid Zip archive"];
    torch_truncated_in_storage: "truncated-in-storage.bin" => ["invalid Zip archive"];
    torch_path_traversal: "path-traversal.bin" => ["../../../etc/cron.d/evil", "leaves the archive"];
    torch_zip_bomb: "zip-bomb.bin" => ["data.pkl", "Compression method not supported"];
    torch_pickle_os_system: "pickle-os-system.bin" => ["posix.system", "not a tensor-rebuild global"];
    torch_pickle_builtins_eval: "pickle-builtins-eval.bin" => ["builtins.eval", "not a tensor-rebuild global"];
    torch_pickle_string_claims_4gib: "pickle-string-claims-4gib.bin" => ["BINUNICODE", "claims 4294967295 bytes"];
    torch_pickle_truncated: "pickle-truncated.bin" => ["data.pkl", "pickle truncated"];
    torch_storage_smaller_than_tensor: "storage-smaller-than-tensor.bin" => ["tensor `w`", "claims 1000 elements"];
    torch_storage_missing: "storage-missing.bin" => ["tensor `w`", "archive/data/7", "not found"];
    torch_compressed_storage: "compressed-storage.bin" => ["tensor `w`", "archive/data/0", "Compression method not supported"];
    torch_view_past_storage: "view-past-storage.bin" => ["tensor `w`", "runs past its storage"];
}

cases! { config;
    config_zero_heads: "zero-heads.json" => ["num_attention_heads = 0 is out of range"];
    config_hidden_not_divisible_by_heads: "hidden-not-divisible-by-heads.json" => ["true hidden size 32 is not divisible by num_attention_heads = 3"];
    config_negative_size: "negative-size.json" => ["intermediate_size = -64 is out of range"];
    config_huge_layers: "huge-layers.json" => ["num_hidden_layers = 1000000000000 is out of range"];
    config_wrong_type: "wrong-type.json" => ["`hidden_size`: invalid type: string \"64\""];
    config_duplicate_keys: "duplicate-keys.json" => ["duplicate key `hidden_size`"];
    config_not_an_object: "not-an-object.json" => ["invalid config: expected a JSON object"];
}

/// `qaforge eval` with a hostile data file (the golden predictions) or hostile predictions.
fn eval(data: &Path, predictions: &Path, extra: &[&str], needles: &[&str]) {
    let mut args = vec!["eval", data.to_str().unwrap(), predictions.to_str().unwrap()];
    args.extend_from_slice(extra);
    assert_bad_input(&qaforge(&args), needles);
}

cases! { squad;
    squad_missing_context: "missing-context.json" => ["not SQuAD JSON: missing field `context`"];
    squad_missing_id: "missing-id.json" => ["not SQuAD JSON: missing field `id`"];
    squad_qas_wrong_type: "qas-wrong-type.json" => ["invalid type: string \"q1\", expected a sequence"];
    squad_answer_start_string: "answer-start-string.json" => ["invalid type: string \"4\", expected i64"];
    squad_answer_outside_context: "answer-outside-context.json" => ["answer `red` is not at character 400"];
    squad_answer_negative_offset: "answer-negative-offset.json" => ["answer `red` is not at character -1"];
    squad_empty_context: "empty-context.json" => ["article `T` has an empty context"];
    squad_duplicate_ids: "duplicate-ids.json" => ["duplicate question id `q1`"];
    squad_no_questions: "no-questions.json" => ["no questions"];
    squad_empty_file: "empty-file.json" => ["not SQuAD JSON: EOF while parsing a value"];
    squad_non_utf8: "non-utf8.json" => ["not SQuAD JSON: invalid unicode code point at line 8"];
    squad_truncated: "truncated.json" => ["not SQuAD JSON: EOF while parsing a string"];
}

#[test]
fn predictions_not_an_object() {
    let file = corpus("predictions/not-an-object.json");
    eval(
        &golden().join("squad/eval.json"),
        &file,
        &[],
        &["not-an-object.json", "expected a JSON object from question id to answer text", "invalid type: sequence"],
    );
}

#[test]
fn predictions_answer_not_text() {
    let file = corpus("predictions/answer-not-text.json");
    eval(&golden().join("squad/eval.json"), &file, &[], &["answer-not-text.json", "invalid type: integer `7`"]);
}

#[test]
fn na_prob_not_a_number() {
    let file = corpus("predictions/na-prob-not-number.json");
    let predictions = golden().join("squad/predictions/nlnet-single.json");
    eval(
        &golden().join("squad/eval.json"),
        &predictions,
        &["--na-prob-file", file.to_str().unwrap()],
        &["na-prob-not-number.json", "invalid type: string \"high\""],
    );
}

/// verify, quantize and answer each refuse a hostile ONNX file by name and write nothing.
fn onnx(file: &str, needles: &[&str]) {
    let path = corpus(file);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let tiny = golden().join("mobilebert-tiny");
    let runs: [Vec<&str>; 3] = [
        vec!["verify", path.to_str().unwrap(), "--golden", tiny.to_str().unwrap()],
        vec!["quantize", path.to_str().unwrap(), "-o", out.to_str().unwrap(), "--precision", "int8-dynamic"],
        vec![
            "answer",
            path.to_str().unwrap(),
            "--tokenizer",
            tiny.to_str().unwrap(),
            "--question",
            "Who?",
            "--context",
            "Nobody.",
        ],
    ];
    for args in runs {
        assert_bad_input(&qaforge(&args), needles);
        assert!(!out.exists());
    }
}

#[test]
fn onnx_garbage() {
    onnx("onnx/garbage.onnx", &["garbage.onnx", "failed to decode Protobuf message"]);
}

#[test]
fn onnx_empty() {
    onnx("onnx/empty.onnx", &["empty.onnx", "graph"]);
}

#[test]
fn onnx_length_claims_2gib() {
    onnx("onnx/length-claims-2gib.onnx", &["length-claims-2gib.onnx", "ModelProto.graph: buffer underflow"]);
}

#[test]
fn onnx_cycle() {
    onnx("onnx/cycle.onnx", &["cycle.onnx", "node `a` (Add) reads `h` before node `b` (Relu) produces it: a cycle"]);
}

#[test]
fn onnx_mixed_types() {
    onnx("onnx/mixed-types.onnx", &["mixed-types.onnx", "node `a` (Add): type parameter T bound to different types: input `x` is tensor(float), input `one` is tensor(int64)"]);
}

#[test]
fn onnx_integer_matmul_weight() {
    onnx(
        "onnx/integer-matmul-weight.onnx",
        &["integer-matmul-weight.onnx", "node `head` (MatMul): type parameter T bound to different types"],
    );
}

#[test]
fn onnx_dangling_input() {
    onnx(
        "onnx/dangling-input.onnx",
        &["dangling-input.onnx", "reads `nowhere`, which no node, initializer or graph input provides"],
    );
}

#[test]
fn onnx_unknown_operator() {
    onnx("onnx/unknown-operator.onnx", &["unknown-operator.onnx", "operator `FooBar`"]);
}

#[test]
fn onnx_opset_outside_what_qaforge_reads() {
    onnx("onnx/opset-7.onnx", &["opset-7.onnx", "opset 7; qaforge reads opsets 13 to 21"]);
}

/// A well-formed graph whose vocabulary is smaller than the tokenizer's ids (tract panicked on the
/// first id past its table): verify, answer and static calibration name the mismatch, exit 2.
#[test]
fn onnx_vocabulary_smaller_than_the_tokenizer() {
    let path = corpus("onnx/vocabulary-of-100.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let tiny = golden().join("mobilebert-tiny");
    let calibration = golden().join("squad/calibration.json");
    let runs: [Vec<&str>; 3] = [
        vec!["verify", path.to_str().unwrap(), "--golden", tiny.to_str().unwrap()],
        vec![
            "answer",
            path.to_str().unwrap(),
            "--tokenizer",
            tiny.to_str().unwrap(),
            "--question",
            "Who lives there?",
            "--context",
            "Nobody lives there.",
        ],
        vec![
            "quantize",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--precision",
            "int8-static",
            "--calibration",
            calibration.to_str().unwrap(),
            "--tokenizer",
            tiny.to_str().unwrap(),
            "--samples",
            "4",
        ],
    ];
    for args in runs {
        assert_bad_input(
            &qaforge(&args),
            &["the table `E` that `input_ids` indexes has 100 rows: the tokenizer does not belong to this model"],
        );
        assert!(!out.exists());
    }
}

/// The documented exit codes: 0 success, 2 bad input or usage (clap's usage errors included); 1
/// (out of tolerance) is exercised by tests/convert.rs on perturbed and wrong models.
#[test]
fn exit_codes_are_0_for_success_and_2_for_usage_errors() {
    let squad = golden().join("squad");
    let ok = qaforge(&[
        "eval",
        squad.join("eval.json").to_str().unwrap(),
        squad.join("predictions/nlnet-single.json").to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    for args in [
        vec!["convert"],
        vec!["frobnicate"],
        vec!["verify", "x.onnx", "--golden"],
        vec!["quantize", "in.onnx", "-o", "out.onnx", "--precision", "int4"],
    ] {
        let output = qaforge(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(!text(&output).contains("panicked"), "{}", text(&output));
    }
    let missing = qaforge(&["convert", "/nonexistent/model", "-o", "/nonexistent/out.onnx"]);
    assert_bad_input(&missing, &["/nonexistent/model/config.json"]);
    // The OS's words once, after the file's name: the library error quotes them in its message and
    // keeps them as its source, and the binary printed both.
    let absent =
        qaforge(&["eval", "/nonexistent/data.json", squad.join("predictions/nlnet-single.json").to_str().unwrap()]);
    assert_bad_input(&absent, &["/nonexistent/data.json: No such file or directory"]);
    assert_eq!(text(&absent).matches("No such file or directory").count(), 1, "{}", text(&absent));
}

/// `answer` with a tokenizer.json from the corpus (the artifact is never opened: the tokenizer
/// fails first).
fn answer_with_tokenizer(file: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(corpus(file), dir.path().join("tokenizer.json")).unwrap();
    let artifact = golden().join("mobilebert-tiny/model.safetensors");
    let output = qaforge(&[
        "answer",
        artifact.to_str().unwrap(),
        "--tokenizer",
        dir.path().to_str().unwrap(),
        "--question",
        "Who?",
        "--context",
        "Nobody.",
    ]);
    assert_bad_input(&output, needles);
}

/// Found by `make fuzz` (target tokenizer): a tokenizer.json whose decoder makes the tokenizers
/// crate panic while reading it (`expect("Helper")` in its deserializer).
#[test]
fn tokenizer_json_whose_decoder_crashes_the_tokenizers_crate() {
    answer_with_tokenizer(
        "tokenizer/decoder-crashes-tokenizers.json",
        &["tokenizer.json", "malformed tokenizer.json", "Helper"],
    );
}

/// Found by `make fuzz` (target tokenizer): a tokenizer.json whose post-processor template names
/// a special token it does not define; the tokenizers crate panics while encoding.
#[test]
fn tokenizer_json_whose_template_crashes_the_tokenizers_crate() {
    answer_with_tokenizer("tokenizer/template-crashes-tokenizers.json", &["tokenizer.json", "malformed tokenizer"]);
}

#[test]
fn onnx_initializer_claims_1e18_floats() {
    onnx(
        "onnx/initializer-claims-1e18-floats.onnx",
        &[
            "initializer-claims-1e18-floats.onnx",
            "tensor `huge`",
            "claim 1000000000000000000 Float values, the file holds 16",
        ],
    );
}

#[test]
fn onnx_external_data_outside_the_folder() {
    onnx(
        "onnx/external-data-outside.onnx",
        &["external-data-outside.onnx", "tensor `weights`", "outside the model's folder"],
    );
}
