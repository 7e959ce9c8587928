//! End-to-end: `qaforge answer --batch` answers a file of questions as verify judges them: its
//! predictions are the reference's (post-processed over real tokens, as verify does) where verify
//! finds them identical (fp32), and where an artifact's rows are coupled (int8-dynamic) they are
//! verify's own, question for question. The look-ahead and the batch budget change neither the
//! answers (but for the fixture's exact ties) nor their order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{convert, golden, qaforge, text};

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `answer --batch` of eval.json into `out`, with `extra` options; the predictions.
fn batch(artifact: &Path, out: &Path, extra: &[&str]) -> BTreeMap<String, String> {
    let mut args =
        vec!["answer", artifact.to_str().unwrap(), "--tokenizer", "", "--batch", "", "-o", out.to_str().unwrap()];
    let (tokenizer, data) = (golden().join("mobilebert-tiny"), golden().join("squad/eval.json"));
    args[3] = tokenizer.to_str().unwrap();
    args[5] = data.to_str().unwrap();
    args.extend(extra);
    let output = qaforge(&args);
    assert!(output.status.success(), "{}", text(&output));
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        summary.contains("answered 251 questions") && summary.contains("padding") && summary.contains("questions/s"),
        "{summary}"
    );
    serde_json::from_value(read_json(out)).unwrap()
}

/// verify's report of `artifact` against mobilebert-tiny's bundle.
fn verify(artifact: &Path, report: &Path) -> serde_json::Value {
    let output = qaforge(&[
        "verify",
        artifact.to_str().unwrap(),
        "--golden",
        golden().join("mobilebert-tiny").to_str().unwrap(),
        "--engine",
        "tract",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    read_json(report)
}

/// The reference's predictions over real tokens only, as verify post-processes them, with each
/// question's decision margin.
fn reference() -> BTreeMap<String, qaforge_squad::Prediction> {
    let squad = qaforge_squad::SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    let features = crate::common::fixture_features("mobilebert-tiny");
    let logits = qaforge_verify::GoldenLogits::load(&golden().join("mobilebert-tiny"), &features).unwrap();
    qaforge_squad::predict_all(&squad, &features, &logits.start, &logits.end, &Default::default(), true)
}

/// Questions whose reference decision is within 1e-3 of going another way: the fixture's random
/// weights give exact ties (5ad23fded7d075001a4288ff), which float rounding of another batch
/// shape may decide either way. verify excuses the same (its near ties).
fn near_ties(reference: &BTreeMap<String, qaforge_squad::Prediction>) -> Vec<&String> {
    reference.iter().filter(|(_, p)| p.margin < 1e-3).map(|(id, _)| id).collect()
}

#[test]
fn batch_predictions_are_verify_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("mobilebert-tiny", dir.path());
    let reference = reference();
    let ties = near_ties(&reference);

    // fp32: the reference's predictions, but for verify's near ties and the fixture's exact ties.
    let report = verify(&fp32, &dir.path().join("fp32.report.json"));
    let verify_ties: Vec<String> = serde_json::from_value(report["near_ties"].clone()).unwrap();
    let got = batch(
        &fp32,
        &dir.path().join("fp32.predictions.json"),
        &["--null-odds", dir.path().join("fp32.null-odds.json").to_str().unwrap()],
    );
    assert_eq!(got.len(), reference.len());
    for (id, want) in &reference {
        assert!(
            got[id] == want.text || verify_ties.contains(id) || ties.contains(&id),
            "{id}: {:?} against the reference's {:?}",
            got[id],
            want.text
        );
    }
    // The no-answer odds are the ones eval reads: its best threshold from them.
    let output = qaforge(&[
        "eval",
        golden().join("squad/eval.json").to_str().unwrap(),
        dir.path().join("fp32.predictions.json").to_str().unwrap(),
        "--na-prob-file",
        dir.path().join("fp32.null-odds.json").to_str().unwrap(),
    ]);
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("best_f1"),
        "{}",
        text(&output)
    );

    // int8-dynamic: each window alone, as verify runs it: the questions that differ from the
    // reference are exactly verify's.
    let int8 = dir.path().join("int8-dynamic.onnx");
    let output =
        qaforge(&["quantize", fp32.to_str().unwrap(), "-o", int8.to_str().unwrap(), "--precision", "int8-dynamic"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = verify(&int8, &dir.path().join("int8.report.json"));
    let got = batch(&int8, &dir.path().join("int8.predictions.json"), &[]);
    let differing: Vec<&String> =
        reference.iter().filter(|(id, want)| got[*id] != want.text).map(|(id, _)| id).collect();
    let identical = report["squad"]["identical_predictions"].as_u64().unwrap() as usize;
    assert_eq!(
        reference.len() - differing.len(),
        identical,
        "answer --batch and verify disagree on how many predictions are the reference's"
    );
    let verify_differing: Vec<String> = serde_json::from_value(report["squad"]["differing"].clone()).unwrap();
    for id in verify_differing {
        assert!(differing.contains(&&id), "{id} differs in verify, not in answer --batch");
    }
}

#[test]
fn neither_the_lookahead_nor_the_budget_changes_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("mobilebert-tiny", dir.path());
    let (small, large) = (dir.path().join("small.json"), dir.path().join("large.json"));
    let alone = batch(&fp32, &small, &["--lookahead", "1", "--max-batch-tokens", "1"]);
    let together = batch(&fp32, &large, &["--lookahead", "1000", "--max-batch-tokens", "100000"]);
    let reference = reference();
    let ties = near_ties(&reference);
    for (id, text) in &alone {
        assert!(together[id] == *text || ties.contains(&id), "{id}: {text:?} alone, {:?} in batches", together[id]);
    }
    // In file order, one question a line.
    let squad = qaforge_squad::SquadFile::load(&golden().join("squad/eval.json")).unwrap();
    let written = String::from_utf8(std::fs::read(&large).unwrap()).unwrap();
    let ids: Vec<String> = written
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .map(|l| l[..l.find('"').unwrap()].to_string())
        .collect();
    assert_eq!(ids, squad.examples.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
}

#[test]
fn json_lines_are_answered_and_bad_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("mobilebert-tiny", dir.path());
    let lines = dir.path().join("questions.jsonl");
    std::fs::write(&lines, "{\"id\": \"q2\", \"question\": \"Where did Bob go?\", \"context\": \"Bob went home after the game.\"}\n{\"id\": \"q1\", \"question\": \"Who won?\", \"context\": \"The red team won the game.\"}\n").unwrap();
    let out = dir.path().join("out.json");
    let output = qaforge(&[
        "answer",
        fp32.to_str().unwrap(),
        "--tokenizer",
        golden().join("mobilebert-tiny").to_str().unwrap(),
        "--batch",
        lines.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    // --json: the summary for machines, loading timed apart from answering.
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((summary["questions"].as_u64(), summary["windows"].as_u64()), (Some(2), Some(2)), "{summary}");
    let (seconds, load) = (summary["seconds"].as_f64().unwrap(), summary["load_seconds"].as_f64().unwrap());
    assert!(load > 0.0 && load < seconds, "{summary}");
    let rate = summary["questions_per_second"].as_f64().unwrap();
    assert!((rate - 2.0 / (seconds - load)).abs() <= 1e-6 * rate, "{summary}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.find("\"q2\"").unwrap() < written.find("\"q1\"").unwrap(), "file order: {written}");
    let answers: BTreeMap<String, String> = serde_json::from_str(&written).unwrap();
    for (id, question, context) in
        [("q2", "Where did Bob go?", "Bob went home after the game."), ("q1", "Who won?", "The red team won the game.")]
    {
        let alone = qaforge(&[
            "answer",
            fp32.to_str().unwrap(),
            "--tokenizer",
            golden().join("mobilebert-tiny").to_str().unwrap(),
            "--question",
            question,
            "--context",
            context,
            "--json",
        ]);
        let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
        assert_eq!(answers[id], alone["text"].as_str().unwrap(), "{id}");
    }
    std::fs::write(&lines, "{\"id\": \"q1\", \"question\": \"Who?\", \"context\": \"Ann.\"}\n{\"id\": \"q1\", \"question\": \"Who?\", \"context\": \"Ann.\"}\n").unwrap();
    let output = qaforge(&[
        "answer",
        fp32.to_str().unwrap(),
        "--tokenizer",
        golden().join("mobilebert-tiny").to_str().unwrap(),
        "--batch",
        lines.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("questions.jsonl: line 2: duplicate question id `q1`"), "{}", text(&output));
}
