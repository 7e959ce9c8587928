//! The first step of verification: the artifact's logits over a bundle's features, computed by an
//! engine here ([`compute_logits`]) or read from a file a device wrote ([`crate::read_logits`]).

use std::time::Instant;

use qaforge_provenance::Precision;
use qaforge_runtime::{load_engine, CpuFeatures, EngineChoice, Exactness, Logits};

use crate::artifact::Artifact;
use crate::bundle::Bundle;
use crate::report::Shard;
use crate::VerifyError;

/// The batch size verify runs an artifact of `precision` (graph `model`) at unless told
/// otherwise: 1 for int8-dynamic whose rows are coupled, 8 for the rest. An int8-dynamic artifact
/// with per-tensor activation scales (DynamicQuantizeLinear) quantizes each activation with a
/// scale taken over the whole batch, padding included, so its logits depend on which features
/// share its batch; an app runs one question at a time, and batch 1 gives the logits it will see.
/// Per-token scales ([`qaforge_runtime::batch_coupling`] finds none) and the other precisions
/// compute each feature alone, and batches only make verify faster.
pub fn default_batch_size(precision: Precision, model: &tract_onnx::pb::ModelProto) -> usize {
    match precision {
        Precision::Int8Dynamic if qaforge_runtime::batch_coupling(model).is_some() => 1,
        Precision::Fp32 | Precision::Fp16 | Precision::Int8Dynamic | Precision::Int8Static | Precision::Int4 => 8,
    }
}

/// How verification runs the artifact.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The engine (tract unless asked otherwise).
    pub engine: EngineChoice,
    /// Features per batch (each batch padded to its longest feature); `None`: the artifact's
    /// precision's [`default_batch_size`].
    pub batch_size: Option<usize>,
    /// Cores to use.
    pub cores: usize,
    /// The slice to verify.
    pub shard: Shard,
    /// Compare with a bundle of another checkpoint or tokenizer than the artifact's provenance names.
    pub allow_other_checkpoint: bool,
    /// The graph's inputs for token ids, attention mask and token types, when its names do not say.
    pub input_names: Option<Vec<String>>,
    /// `verify --engine auto`: where `engine` would not compute the artifact exactly on this CPU,
    /// run it in tract instead (see [`qaforge_runtime::choose_engine`]); the report's engine says why.
    pub exact_fallback: bool,
}

/// Logits of a shard's own features (all of them for an unsharded run), in the bundle's feature
/// order, and what computed them.
pub struct ComputedLogits {
    /// The bundle's features they are for.
    pub features: std::ops::Range<usize>,
    /// `[features, max_length]` start and end logits.
    pub logits: Logits,
    /// What computed them (engine, runtime and device), in words.
    pub engine: String,
    /// The CPU features of the machine that computed them.
    pub cpu: String,
    /// Whether that engine computes the artifact's integer products as its target does.
    pub exactness: Exactness,
    /// Wall time of loading the artifact and computing them.
    pub seconds: f64,
    /// Features per batch they were computed at, where known.
    pub batch_size: Option<usize>,
}

/// The first step of verification: runs `artifact` in `run.engine` over the bundle's features
/// (all of them, or `run.shard`'s) and returns the logits of the shard's own features. `progress`
/// gets (features just done, total).
pub fn compute_logits(
    artifact: &Artifact,
    bundle: &Bundle,
    run: &RunOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ComputedLogits, VerifyError> {
    let started = Instant::now();
    let features = &bundle.features;
    let owned = features.range_of_questions(run.shard.questions(bundle.data.examples.len()));
    // The global batches the shard's features fall in: the same batches, padded to the same
    // lengths, as an unsharded run computes.
    let batch = run.batch_size.unwrap_or_else(|| default_batch_size(artifact.precision, &artifact.model)).max(1);
    let computed = (owned.start / batch * batch)..(owned.end.div_ceil(batch) * batch).min(features.count);
    let first_example = features.example_index.get(computed.start).copied().unwrap_or(0);
    let slice = features.select(computed.start, computed.end, first_example);

    let cpu = CpuFeatures::detect();
    let chosen =
        qaforge_runtime::choose_engine(&run.engine, run.exact_fallback, &cpu, &artifact.model, &artifact.engine_bytes);
    let layout = qaforge_runtime::check_inputs(&artifact.model, &artifact.path, run.input_names.as_deref())?;
    qaforge_runtime::check_token_ids(&artifact.model, &layout, &slice, &artifact.path)?;
    let engine =
        load_engine(&chosen.engine, &artifact.model, &artifact.engine_bytes, &artifact.path, run.cores, layout)?;
    let logits =
        engine.run_features(&slice, batch, engine.preferred_threads(run.cores), &|n| progress(n, slice.count))?;
    let m = features.max_length;
    let rows = |v: &[f32]| v[(owned.start - computed.start) * m..(owned.end - computed.start) * m].to_vec();
    Ok(ComputedLogits {
        logits: Logits { start: rows(&logits.start), end: rows(&logits.end) },
        features: owned,
        engine: match chosen.instead_because {
            None => engine.description(),
            Some(why) => {
                format!("{} (--engine auto: ONNX Runtime would not be exact here: {why})", engine.description())
            }
        },
        cpu: cpu.describe(),
        exactness: chosen.exactness,
        seconds: started.elapsed().as_secs_f64(),
        batch_size: Some(batch),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_dynamic_with_per_tensor_scales_is_verified_one_feature_at_a_time() {
        use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};
        let model = |op: &str| ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto { op_type: op.into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(default_batch_size(Precision::Int8Dynamic, &model("DynamicQuantizeLinear")), 1);
        // Per-token scales: ReduceMin/ReduceMax per row, no op taking a scale over the batch.
        assert_eq!(default_batch_size(Precision::Int8Dynamic, &model("ReduceMax")), 8);
        for precision in [Precision::Fp32, Precision::Fp16, Precision::Int8Static, Precision::Int4] {
            assert_eq!(default_batch_size(precision, &model("MatMul")), 8, "{precision}");
        }
    }
}
