//! The second step of verification: logits judged against the bundle's reference (statistics,
//! SQuAD scores against the gold answers and the reference's predictions, the tolerances), which
//! gives the [`Report`]; [`crate::merge`] assembles its shards' reports with the same code.

use std::collections::BTreeMap;

use qaforge_squad::{agreement, evaluate, predict_all, Features, PostprocessOptions, SquadFile};

use crate::artifact::Artifact;
use crate::bundle::Bundle;
use crate::compute::ComputedLogits;
use crate::golden::GoldenLogits;
use crate::report::{Report, RunHeader, SquadScores, Verdict};
use crate::report::{Shard, ShardPart};
use crate::stats::{FeatureAgreement, LogitStats};
use crate::tolerances::{ToleranceOverrides, Tolerances};
use crate::VerifyError;
use qaforge_runtime::Exactness;

/// The second step of verification: judges `computed` (the logits of `shard`'s features, from an
/// engine run or from elsewhere) against the bundle with the artifact's precision's default
/// tolerances and `overrides` in place. A shard of several gives a partial report for [`merge`](crate::merge).
pub fn judge(
    artifact: &Artifact,
    bundle: &Bundle,
    shard: Shard,
    computed: ComputedLogits,
    overrides: ToleranceOverrides,
) -> Result<Report, VerifyError> {
    let (data, features, reference) = (&bundle.data, &bundle.features, &bundle.logits);
    let questions = shard.questions(data.examples.len());
    let owned = features.range_of_questions(questions.clone());
    let m = features.max_length;
    if computed.features != owned
        || computed.logits.start.len() != owned.len() * m
        || computed.logits.end.len() != owned.len() * m
    {
        return Err(VerifyError::Mismatch(format!(
            "logits for features {}..{} ({} start and {} end values) given for shard {}/{}, whose features are {}..{} ({} values each)",
            computed.features.start,
            computed.features.end,
            computed.logits.start.len(),
            computed.logits.end.len(),
            shard.index + 1,
            shard.count,
            owned.start,
            owned.end,
            owned.len() * m
        )));
    }
    // Both sides, cut to the shard's own features.
    let mine = computed.logits;
    let theirs = GoldenLogits {
        start: reference.start[owned.start * m..owned.end * m].to_vec(),
        end: reference.end[owned.start * m..owned.end * m].to_vec(),
    };
    let own_features = features.select(owned.start, owned.end, questions.start);
    let own_data = data.questions(questions.clone());
    let feature_agreements: Vec<FeatureAgreement> =
        (0..own_features.count).map(|i| FeatureAgreement::of(&own_features, i, &mine, &theirs)).collect();
    // Both sides are post-processed the same way over real tokens only: dynamic padding does not
    // compute padding positions, which run_qa.py lets compete for n-best slots.
    let predict = |start: &[f32], end: &[f32]| {
        predict_all(&own_data, &own_features, start, end, &PostprocessOptions::default(), true)
    };
    let texts = |predicted: &BTreeMap<String, qaforge_squad::Prediction>| -> BTreeMap<String, String> {
        predicted.iter().map(|(id, p)| (id.clone(), p.text.clone())).collect()
    };
    let (predicted, reference_predicted) = (predict(&mine.start, &mine.end), predict(&theirs.start, &theirs.end));
    let differing_margins = reference_predicted
        .iter()
        .filter(|(id, p)| predicted.get(*id).map(|q| &q.text) != Some(&p.text))
        .map(|(id, p)| (id.clone(), p.margin.to_bits()))
        .collect();
    let part = ShardPart {
        shard,
        bundle_manifest_sha256: bundle.manifest_sha256.clone(),
        questions: (questions.start, questions.end),
        features: (owned.start, owned.end),
        feature_agreements,
        predictions: texts(&predicted),
        reference_predictions: texts(&reference_predicted),
        differing_margins,
    };
    let (precision, precision_source) = match overrides.precision {
        Some(p) => (p, "given by --precision".to_string()),
        None => (artifact.precision, artifact.precision_source.clone()),
    };
    let header = RunHeader {
        artifact: artifact.path.clone(),
        size_bytes: artifact.size_bytes,
        sha256: artifact.sha256.clone(),
        precision,
        precision_source,
        metadata: artifact.metadata.clone(),
        golden: bundle.dir.clone(),
        reference: bundle.manifest.reference.clone(),
        provenance: artifact.provenance.clone(),
        engine: computed.engine,
        cpu: computed.cpu,
        engine_exact: computed.exactness == Exactness::Exact,
        engine_note: match computed.exactness {
            Exactness::Exact => None,
            Exactness::Inexact { reason } => Some(reason),
        },
        seconds: computed.seconds,
        batch_size: computed.batch_size,
        tolerances: Tolerances::for_precision(precision).with(overrides),
    };
    if shard.count == 1 {
        Ok(assemble(
            header,
            data,
            features,
            part.feature_agreements,
            part.predictions,
            part.reference_predictions,
            &part.differing_margins,
            None,
        ))
    } else {
        let scope_summary = format!(
            "questions {}..{} of {}: {}",
            questions.start + 1,
            questions.end,
            data.examples.len(),
            own_data.summary()
        );
        let mut report = assemble(
            header,
            &own_data,
            &own_features,
            part.feature_agreements.clone(),
            part.predictions.clone(),
            part.reference_predictions.clone(),
            &part.differing_margins,
            Some(scope_summary),
        );
        report.part = Some(part);
        report.pass = false;
        report.verdict = if report.run.engine_exact { Verdict::Partial } else { Verdict::NotVerified };
        report.table_row = report.markdown_row();
        Ok(report)
    }
}

/// The report of a run over `data` and its `features`: statistics, scores, failures and verdict.
/// `scope` describes a shard's slice instead of the whole data.
pub(crate) fn assemble(
    run: RunHeader,
    data: &SquadFile,
    features: &Features,
    agreements: Vec<FeatureAgreement>,
    predictions: BTreeMap<String, String>,
    reference_predictions: BTreeMap<String, String>,
    differing_margins: &BTreeMap<String, u32>,
    scope: Option<String>,
) -> Report {
    let stats = LogitStats::fold(&agreements);
    let agree = agreements.iter().filter(|a| a.argmax_agrees).count();
    let artifact_metrics = evaluate(data, &predictions);
    let reference_metrics = evaluate(data, &reference_predictions);
    let (agreement_exact, agreement_f1, identical) = agreement(&predictions, &reference_predictions);
    let differing: Vec<&String> = reference_predictions
        .iter()
        .filter(|(id, want)| predictions.get(*id) != Some(want))
        .map(|(id, _)| id)
        .collect();
    let squad = SquadScores {
        f1_drop: reference_metrics.f1 - artifact_metrics.f1,
        artifact: artifact_metrics,
        reference: reference_metrics,
        agreement_exact,
        agreement_f1,
        identical_predictions: identical,
        questions: reference_predictions.len(),
        differing: differing.iter().take(20).map(|id| id.to_string()).collect(),
    };

    let tolerances = run.tolerances;
    let mut failures = Vec::new();
    if stats.non_finite > 0 {
        let bad = agreements.iter().position(|a| a.non_finite > 0).unwrap_or(0);
        failures.push(format!(
            "{} non-finite logits (NaN or Inf), first in feature {bad} (question {})",
            stats.non_finite,
            features.example_ids.get(bad).map_or("?", String::as_str)
        ));
    }
    if let Some(t) = tolerances.max_abs_diff {
        if stats.max_abs_diff > t {
            failures.push(format!("max |Δ| {:.3e} > {t:.1e}", stats.max_abs_diff));
        }
    }
    if let Some(t) = tolerances.min_cosine {
        if stats.cosine.is_nan() || stats.cosine < t {
            failures.push(format!("logit cosine {:.6} < {t}", stats.cosine));
        }
    }
    // A float32 artifact reproduces the reference's decisions except where the reference itself
    // is within rounding of deciding otherwise: a prediction whose reference margin is at most 4 ×
    // the observed max |Δ| (exact ties of a random fixture, another float implementation) is a
    // near tie, reported and excused; any other difference fails.
    let near_tie = |id: &String| {
        differing_margins.get(id).is_some_and(|&bits| f64::from(f32::from_bits(bits)) <= 4.0 * stats.max_abs_diff)
    };
    let near_ties: Vec<String> = differing.iter().filter(|id| near_tie(id)).map(|id| id.to_string()).collect();
    let decided = differing.iter().filter(|id| !near_tie(id)).count();
    if tolerances.identical_predictions && decided > 0 {
        failures.push(format!(
            "{decided} of {} predictions differ from the reference beyond rounding (e.g. {})",
            squad.questions,
            differing.iter().find(|id| !near_tie(id)).map_or("", |id| id.as_str())
        ));
    }
    if let Some(t) = tolerances.max_f1_drop {
        if squad.f1_drop.is_nan() || squad.f1_drop > t {
            failures.push(format!(
                "F1 {:.2} is {:.2} points below the reference's {:.2} (tolerance {t})",
                squad.artifact.f1, squad.f1_drop, squad.reference.f1
            ));
        }
    }
    if let Some(t) = tolerances.min_agreement_f1 {
        if squad.agreement_f1.is_nan() || squad.agreement_f1 < t {
            failures.push(format!(
                "agreement F1 with the reference's predictions {:.2} < {t} ({} of {} predictions identical)",
                squad.agreement_f1, squad.identical_predictions, squad.questions
            ));
        }
    }
    let verdict = if !run.engine_exact {
        Verdict::NotVerified
    } else if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let mut report = Report {
        pass: verdict == Verdict::Pass,
        run,
        data: scope.unwrap_or_else(|| data.summary()),
        features: features.count,
        logits: stats,
        argmax_agreement: agree as f64 / agreements.len().max(1) as f64,
        squad,
        verdict,
        failures,
        table_row: String::new(),
        near_ties,
        part: None,
    };
    report.table_row = report.markdown_row();
    report
}
