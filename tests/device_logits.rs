//! `qaforge verify --logits`: logits computed elsewhere are judged like an engine's, and logits
//! that are not the bundle's or the artifact's are refused (exit 2) naming the problem.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{convert, golden, qaforge, text};

/// Writes `start`/`end` logits as safetensors with `metadata`, `dtype` F32 unless asked otherwise.
fn write_logits(
    path: &Path,
    shape: [usize; 2],
    start: &[f32],
    end: &[f32],
    metadata: HashMap<String, String>,
    as_f64: bool,
) {
    let (start, end): (Vec<u8>, Vec<u8>) = if as_f64 {
        (
            start.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
            end.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
        )
    } else {
        (start.iter().flat_map(|v| v.to_le_bytes()).collect(), end.iter().flat_map(|v| v.to_le_bytes()).collect())
    };
    let dtype = if as_f64 { safetensors::Dtype::F64 } else { safetensors::Dtype::F32 };
    let view = |data| safetensors::tensor::TensorView::new(dtype, shape.to_vec(), data).unwrap();
    let bytes =
        safetensors::serialize(vec![("start_logits", view(&start)), ("end_logits", view(&end))], Some(metadata))
            .unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn logits_from_elsewhere_are_judged_and_foreign_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = convert("mobilebert-tiny", dir.path());
    let bundle_dir = golden().join("mobilebert-tiny");
    let bundle = qaforge_verify::Bundle::open(&bundle_dir).unwrap();
    let run = qaforge_verify::RunOptions {
        engine: qaforge_runtime::EngineChoice::Tract,
        batch_size: Some(8),
        cores: 2,
        shard: qaforge_verify::Shard::WHOLE,
        allow_other_checkpoint: false,
        input_names: None,
        exact_fallback: false,
    };
    let artifact = qaforge_verify::Artifact::open(&fp32, &bundle, &run.engine, false).unwrap();
    let computed = qaforge_verify::compute_logits(&artifact, &bundle, &run, &|_, _| {}).unwrap();
    let (start, end) = (computed.logits.start, computed.logits.end);
    let shape = [bundle.features.count, bundle.features.max_length];
    let features_sha256 = bundle.manifest.files["features"].sha256.clone();
    let metadata = |features: &str, artifact_sha: &str| -> HashMap<String, String> {
        [
            ("qaforge.logits.features_sha256", features),
            ("qaforge.logits.artifact_sha256", artifact_sha),
            ("qaforge.logits.runtime", "test runtime 1.0"),
            ("qaforge.logits.device", "test device"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let good = metadata(&features_sha256, &artifact.sha256);
    let verify = |logits: &Path| {
        qaforge(&[
            "verify",
            fp32.to_str().unwrap(),
            "--golden",
            bundle_dir.to_str().unwrap(),
            "--logits",
            logits.to_str().unwrap(),
        ])
    };

    let path = dir.path().join("good.safetensors");
    write_logits(&path, shape, &start, &end, good.clone(), false);
    let out = verify(&path);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("test runtime 1.0") && text(&out).contains("test device") && text(&out).contains("PASS"),
        "{}",
        text(&out)
    );

    // Logits far from the reference FAIL (exit 1), as an engine's would.
    let shifted: Vec<f32> = start.iter().enumerate().map(|(i, v)| v + (i % 7) as f32).collect();
    write_logits(&path, shape, &shifted, &end, good.clone(), false);
    assert_eq!(verify(&path).status.code(), Some(1), "{}", text(&verify(&path)));

    let refusals: Vec<(&str, Box<dyn Fn(&Path)>, &str)> = vec![
        (
            "one feature short",
            Box::new(|p: &Path| {
                write_logits(p, [shape[0] - 1, shape[1]], &start[shape[1]..], &end[shape[1]..], good.clone(), false)
            }),
            "must be [289, 384]",
        ),
        ("float64", Box::new(|p: &Path| write_logits(p, shape, &start, &end, good.clone(), true)), "expected float32"),
        (
            "a NaN",
            Box::new(|p: &Path| {
                let mut s = start.clone();
                s[5 * shape[1] + 3] = f32::NAN;
                write_logits(p, shape, &s, &end, good.clone(), false)
            }),
            "non-finite value(s) (NaN or Inf), the first in feature 5",
        ),
        (
            "another bundle's features",
            Box::new(|p: &Path| {
                write_logits(p, shape, &start, &end, metadata(&"0".repeat(64), &artifact.sha256), false)
            }),
            "logits of another bundle",
        ),
        (
            "another artifact",
            Box::new(|p: &Path| {
                write_logits(p, shape, &start, &end, metadata(&features_sha256, &"1".repeat(64)), false)
            }),
            "computed by the artifact 1111",
        ),
        (
            "not safetensors",
            Box::new(|p: &Path| std::fs::write(p, b"not a tensor file").unwrap()),
            "not a safetensors file",
        ),
    ];
    for (what, write, expected) in refusals {
        write(&path);
        let out = verify(&path);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(text(&out).contains(expected) && text(&out).contains("good.safetensors"), "{what}: {}", text(&out));
    }
}
