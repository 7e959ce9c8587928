//! Golden bundles end to end: `qaforge golden` (candle reference) against the PyTorch bundles of
//! the shipped fixtures, verification of every precision with a bundle, sharded verification
//! merged to the bit, and the refusals (another checkpoint or tokenizer, bundles that lie).

use std::path::{Path, PathBuf};

use crate::common::{convert, golden, qaforge, text};
use qaforge_verify::Bundle;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qaforge golden <fixture> --data golden/squad/eval.json -o <dir>/<name>` (extra args appended).
fn make_bundle(fixture: &str, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let (model, data) = (golden().join(fixture), golden().join("squad").join("eval.json"));
    let mut args = vec!["golden", s(&model), "--data", s(&data), "-o", s(&out)];
    args.extend_from_slice(extra);
    let output = qaforge(&args);
    assert!(output.status.success(), "qaforge golden {fixture}:\n{}", text(&output));
    assert!(text(&output).contains("reference EM"), "{}", text(&output));
    out
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn candle_bundles_agree_with_pytorchs() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["mobilebert-tiny", "roberta-tiny"] {
        let ours = Bundle::open(&make_bundle(fixture, dir.path(), fixture, &[])).unwrap();
        let theirs = Bundle::open(&golden().join(fixture)).unwrap();
        // One model, one tokenizer, one data file: the manifests name the same things.
        assert_eq!(ours.manifest.model, theirs.manifest.model, "{fixture}");
        assert_eq!(ours.manifest.data.source_sha256, theirs.manifest.data.source_sha256);
        // The Rust tokenizer builds transformers' features exactly, and candle computes PyTorch's logits.
        assert_eq!(ours.features, theirs.features, "{fixture}: features");
        let f = &ours.features;
        let m = f.max_length;
        let mut worst = 0f32;
        for i in 0..f.count {
            for k in i * m..i * m + f.length(i) {
                worst = worst
                    .max((ours.logits.start[k] - theirs.logits.start[k]).abs())
                    .max((ours.logits.end[k] - theirs.logits.end[k]).abs());
            }
        }
        assert!(worst <= 1e-4, "{fixture}: candle vs PyTorch max |Δ| {worst}");
        let (a, b) = (ours.reference_predictions(), theirs.reference_predictions());
        let same = a.iter().filter(|(id, t)| b.get(*id) == Some(t)).count();
        // mobilebert-tiny holds one question decided by exactly tied PyTorch logits.
        assert!(same + 1 >= a.len(), "{fixture}: {same} of {} predictions equal", a.len());
    }
}

#[test]
fn bundles_are_byte_identical_and_limit_keeps_the_first_questions() {
    let dir = tempfile::tempdir().unwrap();
    let one = make_bundle("bert-tiny", dir.path(), "one", &["--limit", "30"]);
    let two = make_bundle("bert-tiny", dir.path(), "two", &["--limit", "30"]);
    for name in [
        "manifest.json",
        "data.json",
        "features.safetensors",
        "features.json",
        "logits.safetensors",
        "predictions.json",
        "metrics.json",
    ] {
        assert_eq!(
            std::fs::read(one.join(name)).unwrap(),
            std::fs::read(two.join(name)).unwrap(),
            "{name} differs between runs"
        );
    }
    let bundle = Bundle::open(&one).unwrap();
    assert_eq!((bundle.data.examples.len(), bundle.manifest.data.limit), (30, Some(30)));
    let full = qaforge_squad::SquadFile::load(&golden().join("squad").join("eval.json")).unwrap();
    let ids: Vec<_> = bundle.data.examples.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, full.examples[..30].iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    // A bundle is replaced in place; anything else is not.
    make_bundle("bert-tiny", dir.path(), "one", &["--limit", "5"]);
    assert_eq!(Bundle::open(&one).unwrap().data.examples.len(), 5);
    let other = dir.path().join("not-a-bundle");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let output = qaforge(&[
        "golden",
        s(&golden().join("bert-tiny")),
        "--data",
        s(&golden().join("squad/eval.json")),
        "-o",
        s(&other),
        "--limit",
        "5",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("refusing to replace it"), "{}", text(&output));
    assert!(other.join("notes.txt").is_file());
}

#[test]
fn every_precision_verifies_against_a_candle_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = make_bundle("mobilebert-tiny", dir.path(), "bundle", &[]);
    let fp32 = convert("mobilebert-tiny", dir.path());
    let calibration = golden().join("squad").join("calibration.json");
    for (precision, extra) in [
        ("fp32", vec![]),
        ("fp16", vec![]),
        ("int8-dynamic", vec![]),
        (
            "int8-static",
            vec![
                "--calibration",
                s(&calibration),
                "--tokenizer",
                s(&golden().join("mobilebert-tiny")),
                "--samples",
                "32",
            ],
        ),
    ] {
        let artifact = if precision == "fp32" {
            fp32.clone()
        } else {
            let out = dir.path().join(format!("{precision}.onnx"));
            let mut args = vec!["quantize", s(&fp32), "-o", s(&out), "--precision", precision];
            args.extend(extra.iter().copied());
            let output = qaforge(&args);
            assert!(output.status.success(), "{precision}: {}", text(&output));
            out
        };
        let report_path = dir.path().join(format!("{precision}.json"));
        let mut args = vec!["verify", s(&artifact), "--golden", s(&bundle), "--report", s(&report_path)];
        // fp16 on a quarter of the bundle: tract runs float16 element-wise ops in software on x86,
        // 15x its fp32 time (see tests/quantize.rs); a shard's verdict is PARTIAL, with the same
        // tolerances applied to its questions.
        if precision == "fp16" {
            args.extend(["--shard", "1/4"]);
        }
        let output = qaforge(&args);
        assert!(output.status.success(), "{precision} against the candle bundle:\n{}", text(&output));
        let r = report(&report_path);
        assert_eq!(r["verdict"], if precision == "fp16" { "PARTIAL" } else { "PASS" });
        assert_eq!(r["failures"].as_array().map(Vec::len), Some(0), "{precision}: {}", r["failures"]);
        assert!(r["reference"].as_str().unwrap().starts_with("qaforge-reference"), "{}", r["reference"]);
    }
}

#[test]
fn sharded_verification_merges_to_the_unsharded_report_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("bert-tiny", dir.path());
    let artifact = dir.path().join("int8.onnx");
    assert!(qaforge(&["quantize", s(&fp32), "-o", s(&artifact), "--precision", "int8-dynamic"]).status.success());
    let bundle = golden().join("bert-tiny");
    let whole = dir.path().join("whole.json");
    let output = qaforge(&["verify", s(&artifact), "--golden", s(&bundle), "--report", s(&whole), "--batch-size", "4"]);
    assert!(output.status.success(), "{}", text(&output));
    for n in [3, 4] {
        let parts: Vec<PathBuf> = (1..=n).map(|k| dir.path().join(format!("part-{k}-of-{n}.json"))).collect();
        for (k, part) in parts.iter().enumerate() {
            let shard = format!("{}/{n}", k + 1);
            let output = qaforge(&[
                "verify",
                s(&artifact),
                "--golden",
                s(&bundle),
                "--shard",
                &shard,
                "--report",
                s(part),
                "--batch-size",
                "4",
            ]);
            assert!(output.status.success(), "shard {shard}: {}", text(&output));
            assert_eq!(report(part)["verdict"], "PARTIAL");
        }
        let merged = dir.path().join(format!("merged-{n}.json"));
        // Any order.
        let mut args = vec!["merge".to_string()];
        args.extend(parts.iter().rev().map(|p| s(p).to_string()));
        args.extend(["--report".to_string(), s(&merged).to_string()]);
        let output = qaforge(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(output.status.success(), "merge of {n}: {}", text(&output));
        let (a, b) = (report(&whole), report(&merged));
        for key in [
            "logits",
            "argmax_agreement",
            "squad",
            "failures",
            "verdict",
            "pass",
            "near_ties",
            "features",
            "data",
            "sha256",
            "precision",
        ] {
            assert_eq!(a[key], b[key], "merged {n} shards: `{key}` differs");
        }
        assert!(b.get("part").is_none());
        // Merging fewer than all shards, or one twice, is refused.
        let output = qaforge(&["merge", s(&parts[0]), s(&parts[1])]);
        assert_eq!(output.status.code(), Some(2));
        assert!(text(&output).contains("missing shard"), "{}", text(&output));
        let output = qaforge(&["merge", s(&parts[0]), s(&parts[0])]);
        assert!(text(&output).contains("given twice"), "{}", text(&output));
    }
    let output = qaforge(&["verify", s(&artifact), "--golden", s(&bundle), "--shard", "5/4"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("1 ≤ K ≤ N"), "{}", text(&output));
}

#[test]
fn verify_refuses_another_checkpoints_or_tokenizers_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bert = convert("bert-tiny", dir.path());
    let output = qaforge(&["verify", s(&bert), "--golden", s(&golden().join("electra-tiny"))]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("converted from checkpoint") && text(&output).contains("--allow-other-checkpoint"),
        "{}",
        text(&output)
    );
    let output =
        qaforge(&["verify", s(&bert), "--golden", s(&golden().join("electra-tiny")), "--allow-other-checkpoint"]);
    assert_ne!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("allowed: the artifact was converted from checkpoint"), "{}", text(&output));

    // The same weights with another tokenizer: a different vocabulary file.
    let copy = dir.path().join("bert-tiny-other-vocab");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(golden().join("bert-tiny")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut vocab = std::fs::read_to_string(copy.join("vocab.txt")).unwrap();
    vocab = vocab.replacen("[unused0]", "[unused-other]", 1);
    std::fs::write(copy.join("vocab.txt"), vocab).unwrap();
    let artifact = dir.path().join("other-vocab.onnx");
    assert!(qaforge(&["convert", s(&copy), "-o", s(&artifact)]).status.success());
    let output = qaforge(&["verify", s(&artifact), "--golden", s(&golden().join("bert-tiny"))]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("the artifact's tokenizer is"), "{}", text(&output));
}

/// A copy of a bundle's own files (none shared), to break.
fn own_copy(dir: &Path) -> PathBuf {
    make_bundle("bert-tiny", dir, "bundle", &["--limit", "12"])
}

fn rewrite_manifest(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// Updates a file's size and sha256 in the manifest after the file was replaced.
fn reseal(bundle: &Path, role: &str, name: &str) {
    let bytes = std::fs::read(bundle.join(name)).unwrap();
    let sha = qaforge_provenance::sha256_hex(&bytes);
    rewrite_manifest(bundle, |m| {
        m["files"][role]["bytes"] = bytes.len().into();
        m["files"][role]["sha256"] = sha.into();
    });
}

#[test]
fn bad_bundles_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("bert-tiny", dir.path());
    let original = own_copy(dir.path());
    let cases: Vec<(&str, Box<dyn Fn(&Path)>, &str)> = vec![
        (
            "no manifest",
            Box::new(|b: &Path| std::fs::remove_file(b.join("manifest.json")).unwrap()),
            "not a golden bundle",
        ),
        (
            "manifest not JSON",
            Box::new(|b: &Path| std::fs::write(b.join("manifest.json"), "{\"format\": ").unwrap()),
            "invalid manifest",
        ),
        (
            "other format",
            Box::new(|b: &Path| rewrite_manifest(b, |m| m["format"] = "qaforge-golden-bundle/9".into())),
            "this qaforge reads",
        ),
        (
            "truncated logits",
            Box::new(|b: &Path| {
                let bytes = std::fs::read(b.join("logits.safetensors")).unwrap();
                std::fs::write(b.join("logits.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
            }),
            "truncated or replaced",
        ),
        (
            "manifest lies about a hash",
            Box::new(|b: &Path| rewrite_manifest(b, |m| m["files"]["predictions"]["sha256"] = "00".repeat(32).into())),
            "the manifest says",
        ),
        (
            "manifest lies about counts",
            Box::new(|b: &Path| rewrite_manifest(b, |m| m["features"] = 9999.into())),
            "says 9999 features",
        ),
        (
            "absolute path",
            Box::new(|b: &Path| rewrite_manifest(b, |m| m["files"]["data"]["path"] = "/etc/passwd".into())),
            "not relative to the bundle",
        ),
        (
            "missing role",
            Box::new(|b: &Path| {
                rewrite_manifest(b, |m| {
                    m["files"].as_object_mut().unwrap().remove("logits");
                })
            }),
            "no `logits` file",
        ),
        (
            "wrong logit shape",
            Box::new(|b: &Path| {
                let bundle = Bundle::open(b).unwrap();
                let n = bundle.features.count - 1;
                qaforge_verify::GoldenLogits { start: vec![0.0; n * 384], end: vec![0.0; n * 384] }
                    .write(&b.join("logits.safetensors"), n, 384)
                    .unwrap();
                reseal(b, "logits", "logits.safetensors");
            }),
            "expected F32",
        ),
        (
            "features of another data file",
            Box::new(|b: &Path| {
                let mut data: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(b.join("data.json")).unwrap()).unwrap();
                data["data"][0]["paragraphs"][0]["qas"][0]["id"] = "someone-else".into();
                std::fs::write(b.join("data.json"), serde_json::to_vec(&data).unwrap()).unwrap();
                reseal(b, "data", "data.json");
            }),
            "belongs to question",
        ),
    ];
    for (what, breaks, needle) in cases {
        let broken = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir(&broken).unwrap();
        for entry in std::fs::read_dir(&original).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
        }
        breaks(&broken);
        let output = qaforge(&["verify", s(&fp32), "--golden", s(&broken)]);
        assert_eq!(output.status.code(), Some(2), "{what}: {}", text(&output));
        assert!(text(&output).contains(needle), "{what}: expected `{needle}` in\n{}", text(&output));
    }
}
