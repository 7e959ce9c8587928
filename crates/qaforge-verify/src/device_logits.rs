//! Logits computed elsewhere (a phone, an emulator, a browser, a device farm): the second source
//! of verify's first step. A runner on the device (tools/run_on_device.py, or an app) writes
//! `start_logits` and `end_logits`, float32 `[features, max_length]` in the order of the bundle's
//! features.safetensors, and records in the file's metadata what it computed them from (the
//! features' and the artifact's sha256), the runtime and the device. Anything that does not fit
//! the bundle and the artifact being verified is refused, naming the problem.

use std::collections::HashMap;
use std::path::Path;

use qaforge_provenance::keys;
use qaforge_runtime::{Exactness, Logits};
use safetensors::{Dtype, SafeTensors};

use crate::artifact::Artifact;
use crate::bundle::Bundle;
use crate::compute::ComputedLogits;
use crate::report::Shard;
use crate::VerifyError;

fn refused(path: &Path, message: impl Into<String>) -> VerifyError {
    VerifyError::Logits { path: path.to_owned(), message: message.into() }
}

/// Reads the logits file `path` for `artifact` on `bundle`, checks it, and returns the logits of
/// `shard`'s features. `runtime` names the runtime and device when the file does not (or
/// replaces what it says).
pub fn read_logits(
    path: &Path,
    bundle: &Bundle,
    artifact: &Artifact,
    shard: Shard,
    runtime: Option<&str>,
) -> Result<ComputedLogits, VerifyError> {
    let bytes = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_owned(), source })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| refused(path, format!("not a safetensors file: {e}")))?;
    let metadata: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| refused(path, format!("not a safetensors file: {e}")))?;
    let features = &bundle.features;
    let (count, m) = (features.count, features.max_length);
    let read = |name: &str| -> Result<Vec<f32>, VerifyError> {
        let view = tensors.tensor(name).map_err(|_| {
            refused(path, format!("no tensor `{name}` (a logits file holds start_logits and end_logits)"))
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(refused(path, format!("`{name}` is {:?}, expected float32", view.dtype())));
        }
        if view.shape() != [count, m] {
            return Err(refused(
                path,
                format!("`{name}` has shape {:?}; the bundle {} has {count} features of {m} tokens, so logits must be [{count}, {m}] in the order of its features.safetensors", view.shape(), bundle.dir.display()),
            ));
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            let how_many = values.iter().filter(|v| !v.is_finite()).count();
            return Err(refused(
                path,
                format!(
                    "`{name}` holds {how_many} non-finite value(s) (NaN or Inf), the first in feature {} (question {})",
                    bad / m,
                    features.example_ids.get(bad / m).map_or("?", String::as_str)
                ),
            ));
        }
        Ok(values)
    };
    let (start, end) = (read("start_logits")?, read("end_logits")?);
    if let (Some(theirs), Some(ours)) =
        (metadata.get(keys::LOGITS_FEATURES_SHA256), bundle.manifest.files.get("features"))
    {
        if *theirs != ours.sha256 {
            return Err(refused(
                path,
                format!(
                    "computed from features {theirs}, but the bundle {} holds features {}: logits of another bundle",
                    bundle.dir.display(),
                    ours.sha256
                ),
            ));
        }
    }
    if let Some(theirs) = metadata.get(keys::LOGITS_ARTIFACT_SHA256) {
        if *theirs != artifact.sha256 {
            return Err(refused(
                path,
                format!("computed by the artifact {theirs}, not by {} ({})", artifact.path.display(), artifact.sha256),
            ));
        }
    }
    let owned = features.range_of_questions(shard.questions(bundle.data.examples.len()));
    let rows = |v: &[f32]| v[owned.start * m..owned.end * m].to_vec();
    let runtime = runtime
        .map(str::to_string)
        .or_else(|| metadata.get(keys::LOGITS_RUNTIME).cloned())
        .unwrap_or_else(|| "a runtime the logits file does not name (give --runtime)".into());
    Ok(ComputedLogits {
        logits: Logits { start: rows(&start), end: rows(&end) },
        features: owned,
        // The batch size is the report's own field (from qaforge.logits.batch_size), said once.
        engine: format!(
            "{runtime}; logits from {} (sha256 {})",
            path.display(),
            qaforge_provenance::sha256_hex(&bytes)
        ),
        cpu: metadata
            .get(keys::LOGITS_DEVICE)
            .cloned()
            .unwrap_or_else(|| "a device the logits file does not name".into()),
        // The figures are the device's own: there is no other engine whose exactness to doubt.
        exactness: Exactness::Exact,
        seconds: 0.0,
        batch_size: metadata.get(keys::LOGITS_BATCH_SIZE).and_then(|b| b.parse().ok()),
    })
}
