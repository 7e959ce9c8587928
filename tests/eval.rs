//! `qaforge eval` gives the official SQuAD v2 numbers (computed by golden/generate.py's restatement
//! of evaluate-v2.0.py) for three public systems and for each fixture's reference predictions.

use crate::common::{golden, golden_fixtures, qaforge, text};

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
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(squad.join("predictions/metrics.json")).unwrap()).unwrap();
    for system in ["bert-large-single", "nlnet-single", "bidaf-sa-elmo"] {
        let output = qaforge(&[
            "eval",
            squad.join("eval.json").to_str().unwrap(),
            squad.join(format!("predictions/{system}.json")).to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", text(&output));
        let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_same_metrics(&got, &want[system], system);
    }
}

#[test]
fn fixture_reference_predictions_score_as_in_the_goldens() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in golden_fixtures() {
        let golden_dir = golden().join(fixture).join("golden");
        let predictions: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden_dir.join("predictions.json")).unwrap()).unwrap();
        let file = dir.path().join(format!("{fixture}.json"));
        std::fs::write(&file, predictions["predictions"].to_string()).unwrap();
        let out_file = dir.path().join(format!("{fixture}.metrics.json"));
        let output = qaforge(&[
            "eval",
            golden().join("squad/eval.json").to_str().unwrap(),
            file.to_str().unwrap(),
            "--out-file",
            out_file.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", text(&output));
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden_dir.join("metrics.json")).unwrap()).unwrap();
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

/// The no-answer probability flags against golden/squad_v2_eval.py (the official script restated):
/// each fixture's PyTorch null_odds at thresholds 1.0 and -2.0, and a tie-heavy probability file
/// for a public system, whose best threshold depends on Python's stable sort keeping file order.
#[test]
fn no_answer_probabilities_give_the_official_best_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let eval_json = golden().join("squad/eval.json");
    let mut cases = Vec::new();
    for fixture in golden_fixtures() {
        let golden_dir = golden().join(fixture).join("golden");
        let predictions: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden_dir.join("predictions.json")).unwrap()).unwrap();
        let preds = dir.path().join(format!("{fixture}.json"));
        let null_odds = dir.path().join(format!("{fixture}.null_odds.json"));
        std::fs::write(&preds, predictions["predictions"].to_string()).unwrap();
        // The null_odds object is cut from the file's text so that its key order (which the
        // threshold search depends on) is kept; serde_json's map would sort it.
        let raw = std::fs::read_to_string(golden_dir.join("predictions.json")).unwrap();
        let start = raw.find("\"null_odds\"").unwrap();
        let object = &raw[start + raw[start..].find('{').unwrap()..raw.rfind('}').unwrap()];
        std::fs::write(&null_odds, object).unwrap();
        cases.push((preds, null_odds, golden_dir.join("metrics-na-probs.json")));
    }
    let predictions = golden().join("squad/predictions");
    cases.push((
        predictions.join("bert-large-single.json"),
        predictions.join("bert-large-single.na-probs.json"),
        predictions.join("bert-large-single.na-probs.metrics.json"),
    ));
    for (preds, na_probs, want) in cases {
        let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&want).unwrap()).unwrap();
        for (key, want) in want.as_object().unwrap() {
            let thresh = key.strip_prefix("thresh=").unwrap();
            let args = [
                "eval",
                eval_json.to_str().unwrap(),
                preds.to_str().unwrap(),
                "--na-prob-file",
                na_probs.to_str().unwrap(),
                "--na-prob-thresh",
                thresh,
            ];
            let output = qaforge(&args);
            assert!(output.status.success(), "{}", text(&output));
            let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_same_metrics(&got, want, &format!("{} at {key}", preds.display()));
        }
    }
}

#[test]
fn eval_summarises_the_data_on_stderr_and_refuses_foreign_predictions() {
    let squad = golden().join("squad");
    let output = qaforge(&[
        "eval",
        squad.join("eval.json").to_str().unwrap(),
        squad.join("predictions/nlnet-single.json").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("18 articles") && stderr.contains("251 questions (131 answerable, 120 unanswerable)"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, br#"{"not-a-question": "x"}"#).unwrap();
    let output = qaforge(&["eval", squad.join("eval.json").to_str().unwrap(), foreign.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("foreign.json: none of its 1 predictions"), "{}", text(&output));
}

#[test]
fn a_probability_file_missing_a_question_is_refused_by_name() {
    let squad = golden().join("squad");
    let dir = tempfile::tempdir().unwrap();
    let na = dir.path().join("na.json");
    std::fs::write(&na, br#"{"56ddde6b9a695914005b9628": 0.5}"#).unwrap();
    let output = qaforge(&[
        "eval",
        squad.join("eval.json").to_str().unwrap(),
        squad.join("predictions/nlnet-single.json").to_str().unwrap(),
        "--na-prob-file",
        na.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("na.json: no no-answer probability for question"), "{}", text(&output));
    std::fs::write(&na, br#"{"56ddde6b9a695914005b9628": "high"}"#).unwrap();
    let output = qaforge(&[
        "eval",
        squad.join("eval.json").to_str().unwrap(),
        squad.join("predictions/nlnet-single.json").to_str().unwrap(),
        "--na-prob-file",
        na.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("na.json: expected a JSON object from question id to no-answer probability"),
        "{}",
        text(&output)
    );
}

/// A reader that goes away (`qaforge eval ... | head -c 0`) ends qaforge quietly, as it ends other
/// Unix tools, instead of a panic in println!.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let squad = golden().join("squad");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qaforge"))
        .args([
            "eval",
            squad.join("eval.json").to_str().unwrap(),
            squad.join("predictions/nlnet-single.json").to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}
