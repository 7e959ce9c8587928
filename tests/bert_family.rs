//! End-to-end: the BERT family beside MobileBERT. Each architecture's exactness against PyTorch
//! runs with every fixture in tests/convert.rs; here, what is particular to the family.

use std::path::Path;

use crate::common::{fixtures, golden, qaforge, text};

/// The trained fixture is MiniLM-L6 (a BERT) stored in MobileBERT's format. Its weights under
/// BERT's own names convert through the BERT emitter to a graph that answers every question as
/// the MobileBERT conversion's PyTorch reference does. The logits differ a little by design:
/// transformers' MobileBERT builds two LayerNorms with epsilon 1e-5 where BERT uses 1e-12
/// (golden/minilm-l6-squad2/golden/bert-format.json: max |Δ| 0.024 in PyTorch). The twin is
/// another checkpoint than the bundle's, so verify needs --allow-other-checkpoint.
#[test]
fn the_trained_fixture_in_bert_format_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let twin = dir.path().join("minilm-l6-squad2-bert");
    std::fs::create_dir(&twin).unwrap();
    let bytes = std::fs::read(golden().join("minilm-l6-squad2/model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.contains("embedding_transformation"))
        .map(|(name, view)| {
            (name.strip_prefix("mobilebert.").map_or(name.clone(), |rest| format!("bert.{rest}")), view)
        })
        .collect();
    std::fs::write(twin.join("model.safetensors"), safetensors::serialize(renamed, None).unwrap()).unwrap();
    std::fs::write(
        twin.join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertForQuestionAnswering"], "vocab_size": 30522,
            "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    )
    .unwrap();
    let artifact = dir.path().join("bert.onnx");
    let output = qaforge(&["convert", twin.to_str().unwrap(), "-o", artifact.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("BertForQuestionAnswering: 6 layers, hidden 384"), "{}", text(&output));
    let report = dir.path().join("bert.json");
    let output = qaforge(&[
        "verify",
        artifact.to_str().unwrap(),
        "--golden",
        golden().join("minilm-l6-squad2").to_str().unwrap(),
        "--max-abs-diff",
        "0.05",
        "--report",
        report.to_str().unwrap(),
        "--allow-other-checkpoint",
    ]);
    // fp32 tolerances ask for every prediction identical to the reference's.
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["squad"]["identical_predictions"], report["squad"]["questions"], "{report}");
    let max = report["logits"]["max_abs_diff"].as_f64().unwrap();
    assert!(max > 1e-4 && max < 0.05, "the epsilons should move the logits a little: max |Δ| {max}");
}

/// `convert`'s summary names the architecture and the inputs the graph takes: token type ids only
/// where the model uses them, as run_qa.py feeds them.
#[test]
fn the_graph_takes_token_type_ids_only_where_the_model_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, architecture, inputs) in [
        ("bert-tiny", "BertForQuestionAnswering", "input_ids/attention_mask/token_type_ids"),
        ("distilbert-tiny", "DistilBertForQuestionAnswering", "input_ids/attention_mask ["),
        ("roberta-tiny", "RobertaForQuestionAnswering", "input_ids/attention_mask ["),
        ("electra-tiny", "ElectraForQuestionAnswering", "input_ids/attention_mask/token_type_ids"),
    ] {
        assert!(fixtures().contains(&fixture));
        let out = dir.path().join(format!("{fixture}.onnx"));
        let output = qaforge(&["convert", golden().join(fixture).to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert!(output.status.success(), "{fixture}: {}", text(&output));
        let summary = text(&output);
        assert!(summary.contains(&format!("architecture  {architecture}")), "{summary}");
        assert!(summary.contains(&format!("inputs {inputs}")), "{summary}");
        assert!(!summary.contains("unused"), "{fixture}: every tensor is used: {summary}");
    }
}

/// A config naming one family member with another's head, or a model type qaforge does not
/// convert, is refused with the supported list; nothing is written.
#[test]
fn other_architectures_are_refused_with_the_supported_list() {
    let dir = tempfile::tempdir().unwrap();
    for (config, needle) in [
        (r#"{"model_type": "gpt2"}"#, "model_type `gpt2`"),
        (
            r#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"]}"#,
            "architecture `BertForSequenceClassification`",
        ),
        (r#"{"model_type": "albert"}"#, "model_type `albert`"),
    ] {
        let model = dir.path().join("model");
        let _ = std::fs::remove_dir_all(&model);
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), config).unwrap();
        std::fs::copy(golden().join("bert-tiny/model.safetensors"), model.join("model.safetensors")).unwrap();
        let out = dir.path().join("out.onnx");
        let output = qaforge(&["convert", model.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{config}: {}", text(&output));
        let message = text(&output);
        assert!(message.contains(needle) && message.contains("config.json"), "{message}");
        for supported in [
            "MobileBertForQuestionAnswering",
            "BertForQuestionAnswering",
            "DistilBertForQuestionAnswering",
            "RobertaForQuestionAnswering",
            "ElectraForQuestionAnswering",
        ] {
            assert!(message.contains(supported), "{supported} missing: {message}");
        }
        assert!(!Path::new(&out).exists());
    }
}
