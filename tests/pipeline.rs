//! The workflows called as a library (qaforge-pipeline and verify's two steps), where a test needs
//! their behaviour rather than the binary's text: outcomes agree with the files written, product
//! rules refuse with their reason, and judging refuses logits that are not the bundle's.

use crate::common::golden;
use qaforge_pipeline::{ConvertRequest, Flavour, PipelineError, QuantizeRequest};
use qaforge_quantize::{CalibrationMethod, Precision, QuantizeOptions, Target, WeightOptions};

fn options(precision: Precision) -> QuantizeOptions {
    QuantizeOptions {
        precision,
        exclude: vec![],
        float_activations: vec![],
        int8_qa_head: false,
        target: Target::Arm64,
        weights: WeightOptions::default(),
        method: CalibrationMethod::MinMax,
        activation_scales: qaforge_quantize::ActivationScales::Tensor,
        batch_size: 2,
        threads: 1,
        input_names: None,
        calibration_engine: qaforge_runtime::EngineChoice::Tract,
        calibration_fallback: None,
        int4: Default::default(),
    }
}

fn sha256(path: &std::path::Path) -> String {
    qaforge_provenance::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn convert_quantize_and_verify_in_two_steps() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = dir.path().join("fp32.onnx");
    let convert = ConvertRequest {
        model_dir: golden().join("mobilebert-tiny"),
        output: fp32.clone(),
        emit: qaforge_onnx::EmitOptions::default(),
        flavour: Flavour::Portable,
    };
    let converted = qaforge_pipeline::convert(&convert).unwrap();
    assert_eq!(converted.sha256, sha256(&fp32));
    assert_eq!(converted.bytes, std::fs::metadata(&fp32).unwrap().len());
    assert!(converted.warnings.is_empty(), "{:?}", converted.warnings);

    let int8 = dir.path().join("int8.onnx");
    let request = QuantizeRequest {
        input: fp32,
        output: int8.clone(),
        options: options(Precision::Int8Dynamic),
        calibration: None,
        tokenizer: None,
        samples: 0,
        search: None,
        smooth: false,
        flavour: Flavour::Portable,
    };
    let quantized = qaforge_pipeline::quantize(&request, &|_, _| {}).unwrap();
    assert_eq!(quantized.sha256, sha256(&int8));
    assert!(quantized.sizes.1 < quantized.sizes.0, "{:?}", quantized.sizes);
    assert!(
        quantized.summary.kept_float.values().any(|r| *r == qaforge_quantize::KeptFloat::QaHead),
        "{:?}",
        quantized.summary.kept_float
    );

    // Verify's two steps, as a caller with logits from elsewhere uses them.
    let bundle = qaforge_verify::Bundle::open(&golden().join("mobilebert-tiny")).unwrap();
    let run = qaforge_verify::RunOptions {
        engine: qaforge_runtime::EngineChoice::Tract,
        batch_size: Some(8),
        cores: 2,
        shard: qaforge_verify::Shard::WHOLE,
        allow_other_checkpoint: false,
        input_names: None,
        exact_fallback: false,
    };
    let artifact = qaforge_verify::Artifact::open(&int8, &bundle, &run.engine, false).unwrap();
    assert_eq!(artifact.precision, Precision::Int8Dynamic);
    let computed = qaforge_verify::compute_logits(&artifact, &bundle, &run, &|_, _| {}).unwrap();
    assert_eq!(computed.features, 0..bundle.features.count);
    let mut truncated = qaforge_verify::ComputedLogits {
        features: computed.features.clone(),
        logits: computed.logits.clone(),
        engine: computed.engine.clone(),
        cpu: computed.cpu.clone(),
        exactness: computed.exactness.clone(),
        seconds: 0.0,
        batch_size: computed.batch_size,
    };
    let report = qaforge_verify::judge(&artifact, &bundle, run.shard, computed, Default::default()).unwrap();
    assert!(report.pass, "{:?}", report.failures);
    assert_eq!(report.run.tolerances, qaforge_verify::Tolerances::for_precision(Precision::Int8Dynamic));
    // Logits one feature short are not this bundle's: refused, naming the counts.
    truncated.logits.start.truncate(truncated.logits.start.len() - bundle.features.max_length);
    let refused = qaforge_verify::judge(&artifact, &bundle, run.shard, truncated, Default::default()).unwrap_err();
    assert!(refused.to_string().contains("start and"), "{refused}");
}

#[test]
fn product_rules_refuse_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let request = |precision, flavour| QuantizeRequest {
        input: dir.path().join("missing.onnx"),
        output: dir.path().join("out.onnx"),
        options: options(precision),
        calibration: None,
        tokenizer: None,
        samples: 8,
        search: None,
        smooth: false,
        flavour,
    };
    let refuse = |r: QuantizeRequest| match qaforge_pipeline::quantize(&r, &|_, _| {}) {
        Err(PipelineError::Request(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refuse(request(Precision::Fp16, Flavour::OnnxRuntime("libonnxruntime.so".into())))
        .contains("--for onnxruntime is for the int8 modes"));
    assert!(refuse(request(Precision::Fp32, Flavour::Portable)).contains("fp32 is what quantize reads"));
    // int8-static without calibration data is refused before anything is read or written.
    let fp32 = crate::common::convert("mobilebert-tiny", dir.path());
    let mut r = request(Precision::Int8Static, Flavour::Portable);
    r.input = fp32;
    assert!(refuse(r).contains("int8-static needs --calibration"));
    // Scale migration prepares int8 products, and measures activations to do it.
    let mut r = request(Precision::Fp16, Flavour::Portable);
    r.smooth = true;
    assert!(refuse(r).contains("--smooth prepares int8 products"));
    let mut r = request(Precision::Int8Dynamic, Flavour::Portable);
    r.input = dir.path().join("mobilebert-tiny.onnx");
    r.smooth = true;
    assert!(refuse(r).contains("--smooth needs --calibration"));
    assert!(!dir.path().join("out.onnx").exists());
}

#[test]
fn artifacts_without_metadata_are_judged_at_the_precision_their_operators_show() {
    // ONNX Runtime's quantize_dynamic/quantize_static write no qaforge metadata: qaforge's own
    // artifacts with their metadata stripped stand in for them here (make test verifies ONNX
    // Runtime's real outputs in tests/exports.sh). Of qaforge's fp32 artifact they write its
    // metadata, copied: `qaforge.precision = fp32` on a quantized graph, which must not be
    // believed (the same artifacts carrying the fp32 file's metadata stand in for those).
    let dir = tempfile::tempdir().unwrap();
    let fp32 = crate::common::convert("mobilebert-tiny", dir.path());
    let fp32_metadata = qaforge_onnx::read_model(&fp32).unwrap().metadata_props;
    let bundle_dir = golden().join("mobilebert-tiny");
    for (precision, flags) in [
        ("int8-dynamic", vec![]),
        (
            "int8-static",
            vec![
                "--calibration",
                "golden/squad/calibration.json",
                "--samples",
                "16",
                "--tokenizer",
                "golden/mobilebert-tiny",
            ],
        ),
        ("fp16", vec![]),
    ] {
        let out = dir.path().join(format!("{precision}.onnx"));
        let mut args = vec!["quantize", fp32.to_str().unwrap(), "-o", out.to_str().unwrap(), "--precision", precision];
        args.extend(flags);
        let run = crate::common::qaforge(&args);
        assert!(run.status.success(), "{}", crate::common::text(&run));
        let mut model = qaforge_onnx::read_model(&out).unwrap();
        model.metadata_props.clear();
        let bare = dir.path().join(format!("{precision}.bare.onnx"));
        std::fs::write(&bare, qaforge_onnx::encode(&model)).unwrap();
        let report = dir.path().join(format!("{precision}.json"));
        let mut args = vec![
            "verify",
            bare.to_str().unwrap(),
            "--golden",
            bundle_dir.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        // fp16 on a quarter of the bundle: tract runs float16 element-wise ops in software on x86
        // (15x its fp32 time, see tests/quantize.rs); what is checked here is the inferred precision.
        if precision == "fp16" {
            args.extend(["--shard", "1/4"]);
        }
        let run = crate::common::qaforge(&args);
        assert!(run.status.success(), "{precision}: {}", crate::common::text(&run));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(json["precision"], precision);
        assert!(
            json["precision_source"].as_str().unwrap().starts_with("inferred from its operators"),
            "{}",
            json["precision_source"]
        );
        // Judged as fp32 on request, an int8 artifact misses fp32's max |Δ| and FAILs.
        if precision != "fp16" {
            let run = crate::common::qaforge(&[
                "verify",
                bare.to_str().unwrap(),
                "--golden",
                bundle_dir.to_str().unwrap(),
                "--precision",
                "fp32",
            ]);
            assert_eq!(run.status.code(), Some(1), "{}", crate::common::text(&run));
        }
        // And quantize refuses to quantize it again.
        refused_as_quantized(&bare, precision);

        // The same graph with the fp32 file's metadata copied onto it: judged, and refused as
        // quantize's input, at the precision its operators show, and the report says the key
        // was contradicted (a quarter of the bundle: what is checked is the precision).
        model.metadata_props = fp32_metadata.clone();
        let copied = dir.path().join(format!("{precision}.copied-metadata.onnx"));
        std::fs::write(&copied, qaforge_onnx::encode(&model)).unwrap();
        let report = dir.path().join(format!("{precision}.copied-metadata.json"));
        let run = crate::common::qaforge(&[
            "verify",
            copied.to_str().unwrap(),
            "--golden",
            bundle_dir.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--shard",
            "1/4",
        ]);
        assert!(run.status.success(), "{precision}: {}", crate::common::text(&run));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(json["precision"], precision);
        let source = json["precision_source"].as_str().unwrap();
        assert!(
            source.starts_with("inferred from its operators")
                && source.contains("says fp32, which its operators contradict"),
            "{source}"
        );
        refused_as_quantized(&copied, precision);
    }
}

/// `quantize` refuses `artifact` as its input (exit 2, nothing written), naming the precision its
/// operators show.
fn refused_as_quantized(artifact: &std::path::Path, precision: &str) {
    let out = artifact.with_extension("again.onnx");
    let again = crate::common::qaforge(&[
        "quantize",
        artifact.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--precision",
        "int8-dynamic",
    ]);
    let text = crate::common::text(&again);
    assert_eq!(again.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("the input is already {precision} (inferred from its operators")), "{text}");
    assert!(!out.exists(), "{}", out.display());
}
