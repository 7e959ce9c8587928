//! End-to-end: `qaforge package --format web` writes a site the page can use: the artifact
//! unchanged, the model's tokenizer (the same tokenizer, also for models that have only vocab.txt),
//! the graph's inputs and outputs by role, and the runtime files; bad requests are refused without
//! writing. The page itself runs in tests/web.sh (Node.js and headless Chromium, make test).

use std::path::{Path, PathBuf};

use crate::common::{convert, fixture_features, fixtures, golden, qaforge, text};

/// The files a site copies from the npm packages, with stand-in contents: this test checks what
/// qaforge writes; tests/web.sh runs the real packages.
fn stand_in_node_modules(dir: &Path) -> PathBuf {
    let root = dir.join("node_modules");
    for (package, files) in [
        (
            "onnxruntime-web",
            &["dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm"][..],
        ),
        ("@huggingface/tokenizers", &["dist/tokenizers.min.mjs", "LICENSE"][..]),
    ] {
        for file in files {
            let path = root.join(package).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("stand-in for {package}/{file}")).unwrap();
        }
        std::fs::write(root.join(package).join("package.json"), r#"{"version": "0.0.1-test", "license": "MIT"}"#)
            .unwrap();
    }
    root
}

fn package_web(artifact: &Path, tokenizer: &Path, out: &Path, node_modules: &Path) -> std::process::Output {
    qaforge(&[
        "package",
        artifact.to_str().unwrap(),
        "--format",
        "web",
        "-o",
        out.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--web-runtime",
        node_modules.to_str().unwrap(),
    ])
}

#[test]
fn every_fixture_gets_a_site_with_its_own_tokenizer_and_graph_roles() {
    let dir = tempfile::tempdir().unwrap();
    let node_modules = stand_in_node_modules(dir.path());
    for fixture in fixtures() {
        let artifact = convert(fixture, dir.path());
        let site = dir.path().join(format!("site-{fixture}"));
        let output = package_web(&artifact, &golden().join(fixture), &site, &node_modules);
        assert!(output.status.success(), "{fixture}: {}", text(&output));
        for file in [
            "index.html",
            "app.js",
            "qa.js",
            "style.css",
            "qaforge-site.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "THIRD-PARTY.txt",
            "ort/ort.wasm.min.mjs",
            "ort/ort-wasm-simd-threaded.wasm",
            "tokenizers/tokenizers.min.mjs",
        ] {
            assert!(site.join(file).is_file(), "{fixture}: no {file}");
        }
        assert_eq!(
            std::fs::read(site.join("model.onnx")).unwrap(),
            std::fs::read(&artifact).unwrap(),
            "{fixture}: the artifact is copied unchanged"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(site.join("qaforge-site.json")).unwrap()).unwrap();
        let roles: Vec<&str> =
            config["model"]["inputs"].as_array().unwrap().iter().map(|i| i["role"].as_str().unwrap()).collect();
        // DistilBERT and RoBERTa take no token types.
        let expected: &[&str] = if matches!(fixture, "distilbert-tiny" | "roberta-tiny") {
            &["ids", "mask"]
        } else {
            &["ids", "mask", "types"]
        };
        assert_eq!(roles, expected, "{fixture}");
        assert_eq!(config["model"]["outputs"]["start"], "start_logits", "{fixture}");
        assert_eq!(config["options"]["maxLength"], 384, "{fixture}");
        // The site's tokenizer.json is the model's tokenizer: written from vocab.txt where the model
        // has no tokenizer.json, it gives the golden features exactly.
        let reloaded = dir.path().join(format!("tokenizer-{fixture}"));
        std::fs::create_dir(&reloaded).unwrap();
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(site.join(file), reloaded.join(file)).unwrap();
        }
        let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(&reloaded).unwrap();
        let squad = qaforge_squad::SquadFile::load(&golden().join("squad/eval.json")).unwrap();
        let features = tokenizer.features(&squad.examples, &qaforge_squad::FeatureOptions::default()).unwrap();
        let want = fixture_features(fixture);
        assert!(
            features.input_ids == want.input_ids
                && features.offsets == want.offsets
                && features.token_type_ids == want.token_type_ids,
            "{fixture}: the site's tokenizer.json gives other features"
        );
        // What the page needs: a plain static folder a web server may read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&site).unwrap().permissions().mode() & 0o755,
                0o755,
                "{fixture}: the site folder is not world-readable"
            );
        }
    }
}

#[test]
fn bad_requests_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let node_modules = stand_in_node_modules(dir.path());
    let artifact = convert("mobilebert-tiny", dir.path());
    let tokenizer = golden().join("mobilebert-tiny");
    let site = dir.path().join("site");

    let no_tokenizer = qaforge(&[
        "package",
        artifact.to_str().unwrap(),
        "--format",
        "web",
        "-o",
        site.to_str().unwrap(),
        "--web-runtime",
        node_modules.to_str().unwrap(),
    ]);
    assert_eq!(no_tokenizer.status.code(), Some(2), "{}", text(&no_tokenizer));
    assert!(text(&no_tokenizer).contains("--tokenizer"), "{}", text(&no_tokenizer));

    // Options of the other format are usage errors, not silently ignored.
    let with_config = qaforge(&[
        "package",
        artifact.to_str().unwrap(),
        "--format",
        "web",
        "-o",
        site.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--web-runtime",
        node_modules.to_str().unwrap(),
        "--operators-config",
        dir.path().join("ops.config").to_str().unwrap(),
    ]);
    assert_eq!(with_config.status.code(), Some(2), "{}", text(&with_config));
    assert!(text(&with_config).contains("--operators-config is for --format ort"), "{}", text(&with_config));
    let ort_with_tokenizer = qaforge(&[
        "package",
        artifact.to_str().unwrap(),
        "--format",
        "ort",
        "-o",
        dir.path().join("m.ort").to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    assert_eq!(ort_with_tokenizer.status.code(), Some(2), "{}", text(&ort_with_tokenizer));
    assert!(text(&ort_with_tokenizer).contains("--tokenizer is for --format web"), "{}", text(&ort_with_tokenizer));
    assert!(!site.exists() && !dir.path().join("m.ort").exists());

    let no_runtime = package_web(&artifact, &tokenizer, &site, &dir.path().join("nowhere"));
    assert_eq!(no_runtime.status.code(), Some(2));
    assert!(text(&no_runtime).contains("npm ci --prefix web"), "{}", text(&no_runtime));

    let not_onnx = dir.path().join("not.onnx");
    std::fs::write(&not_onnx, b"\x00\x01 this is not a protobuf").unwrap();
    let refused = package_web(&not_onnx, &tokenizer, &site, &node_modules);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).contains("not.onnx"), "{}", text(&refused));
    assert!(!site.exists(), "a refused request wrote {}", site.display());

    // A folder of the user's own is never replaced; an earlier site is.
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("notes.txt"), "mine").unwrap();
    let foreign = package_web(&artifact, &tokenizer, &site, &node_modules);
    assert_eq!(foreign.status.code(), Some(2));
    assert!(text(&foreign).contains("not an empty folder"), "{}", text(&foreign));
    assert_eq!(std::fs::read_to_string(site.join("notes.txt")).unwrap(), "mine");
    std::fs::remove_dir_all(&site).unwrap();
    assert!(package_web(&artifact, &tokenizer, &site, &node_modules).status.success());
    assert!(package_web(&artifact, &tokenizer, &site, &node_modules).status.success(), "an earlier site is replaced");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".qaforge-site-"))
        .collect();
    assert!(leftovers.is_empty(), "staging folders left behind");
}
