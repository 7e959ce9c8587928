//! `qaforge eval` gives the official SQuAD v2 numbers (computed by golden/generate.py's restatement
//! of evaluate-v2.0.py) for three public systems and for each fixture's reference predictions.

mod common;

use common::{golden, qaforge, text, FIXTURES};

fn assert_same_metrics(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: keys");
    for (key, value) in want {
        assert_eq!(&got[key], value, "{what}: {key}");
    }
}

#[test]
fn public_systems_score_as_with_the_official_script() {
    let squad = golden().join("squad");
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(squad.join("predictions/metrics.json")).unwrap()).unwrap();
    for system in ["bert-large-single", "nlnet-single", "bidaf-sa-elmo"] {
        let output = qaforge(&["eval", squad.join("eval.json").to_str().unwrap(), squad.join(format!("predictions/{system}.json")).to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output));
        let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_same_metrics(&got, &want[system], system);
    }
}

#[test]
fn fixture_reference_predictions_score_as_in_the_goldens() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let golden_dir = golden().join(fixture).join("golden");
        let predictions: serde_json::Value = serde_json::from_slice(&std::fs::read(golden_dir.join("predictions.json")).unwrap()).unwrap();
        let file = dir.path().join(format!("{fixture}.json"));
        std::fs::write(&file, predictions["predictions"].to_string()).unwrap();
        let out_file = dir.path().join(format!("{fixture}.metrics.json"));
        let output = qaforge(&["eval", golden().join("squad/eval.json").to_str().unwrap(), file.to_str().unwrap(), "--out-file", out_file.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output));
        let want: serde_json::Value = serde_json::from_slice(&std::fs::read(golden_dir.join("metrics.json")).unwrap()).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
        assert_same_metrics(&got, &want, fixture);
    }
}

#[test]
fn malformed_inputs_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"data\": [{\"paragraphs\": 7}]}").unwrap();
    let output = qaforge(&["eval", bad.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("bad.json") && text(&output).contains("not SQuAD JSON"), "{}", text(&output));
    let preds = dir.path().join("preds.json");
    std::fs::write(&preds, b"[1, 2]").unwrap();
    let output = qaforge(&["eval", golden().join("squad/eval.json").to_str().unwrap(), preds.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("preds.json"), "{}", text(&output));
}
