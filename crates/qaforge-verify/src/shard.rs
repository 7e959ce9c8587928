//! Verification split over CI jobs: [`merge`] combines the partial reports of the shards (a
//! [`Shard`] of the bundle's questions each, its [`ShardPart`](crate::ShardPart) in the report) into the report one
//! unsharded run gives.

use std::collections::BTreeMap;

use crate::bundle::Bundle;
use crate::judge::assemble;
use crate::report::{Report, Shard};
use crate::VerifyError;

/// Combines the partial reports of shards 1..N of one run (any order) into the report the
/// unsharded run gives: the same features' agreements folded in the same order and the same
/// predictions scored on the same data, so every figure is equal to the bit (`seconds` is the
/// shards' sum).
pub fn merge(parts: &[Report], bundle: &Bundle) -> Result<Report, VerifyError> {
    let mismatch = |message: String| VerifyError::Mismatch(message);
    let first = parts.first().ok_or_else(|| mismatch("no partial reports to merge".into()))?;
    let count = first
        .part
        .as_ref()
        .ok_or_else(|| {
            mismatch(format!(
                "{}: not a partial report (verify --shard K/N writes those)",
                first.run.artifact.display()
            ))
        })?
        .shard
        .count;
    let mut by_index: Vec<Option<&Report>> = vec![None; count];
    for report in parts {
        let part = report.part.as_ref().ok_or_else(|| {
            mismatch(format!(
                "{}: a report without shard data (verify --shard K/N writes partial reports)",
                report.run.artifact.display()
            ))
        })?;
        if part.shard.count != count {
            return Err(mismatch(format!(
                "shard {}/{} among shards of {count}",
                part.shard.index + 1,
                part.shard.count
            )));
        }
        if report.run.sha256 != first.run.sha256 {
            return Err(mismatch(format!(
                "shard {} verified artifact {}, shard {} artifact {}",
                part.shard.index + 1,
                report.run.sha256,
                first.part.as_ref().map_or(0, |p| p.shard.index + 1),
                first.run.sha256
            )));
        }
        if part.bundle_manifest_sha256 != bundle.manifest_sha256 {
            return Err(mismatch(format!(
                "shard {} was verified against another bundle (manifest {}) than {} (manifest {})",
                part.shard.index + 1,
                part.bundle_manifest_sha256,
                bundle.dir.display(),
                bundle.manifest_sha256
            )));
        }
        if report.run.engine != first.run.engine || report.run.tolerances != first.run.tolerances {
            return Err(mismatch(format!(
                "shard {} ran with another engine or tolerances ({}; {:?}) than the others ({}; {:?})",
                part.shard.index + 1,
                report.run.engine,
                report.run.tolerances,
                first.run.engine,
                first.run.tolerances
            )));
        }
        let slot = by_index
            .get_mut(part.shard.index)
            .ok_or_else(|| mismatch(format!("shard index {} out of {count}", part.shard.index + 1)))?;
        if slot.replace(report).is_some() {
            return Err(mismatch(format!("shard {}/{count} given twice", part.shard.index + 1)));
        }
    }
    let missing: Vec<String> =
        by_index.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(k, _)| format!("{}/{count}", k + 1)).collect();
    if !missing.is_empty() {
        return Err(mismatch(format!("missing shard(s) {}", missing.join(", "))));
    }
    let mut agreements = Vec::new();
    let (mut predictions, mut reference_predictions, mut margins) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (k, report) in by_index.iter().flatten().enumerate() {
        let part = report.part.as_ref().expect("checked above");
        let want = Shard { index: k, count }.questions(bundle.data.examples.len());
        let features = bundle.features.range_of_questions(want.clone());
        if (part.questions.0, part.questions.1) != (want.start, want.end)
            || part.feature_agreements.len() != features.len()
        {
            return Err(mismatch(format!(
                "shard {}/{count} covers questions {}..{} with {} features; this bundle's shard is {}..{} with {}",
                k + 1,
                part.questions.0,
                part.questions.1,
                part.feature_agreements.len(),
                want.start,
                want.end,
                features.len()
            )));
        }
        agreements.extend_from_slice(&part.feature_agreements);
        predictions.extend(part.predictions.clone());
        reference_predictions.extend(part.reference_predictions.clone());
        margins.extend(part.differing_margins.clone());
    }
    // Every shard ran the same artifact with the same settings (checked above): the header is the
    // first shard's, with the run's time summed and exactness over all shards.
    let mut header = first.run.clone();
    header.golden = bundle.dir.clone();
    header.reference = bundle.manifest.reference.clone();
    header.seconds = by_index.iter().flatten().map(|r| r.run.seconds).sum();
    if let Some(inexact) = by_index.iter().flatten().find(|r| !r.run.engine_exact) {
        header.engine_exact = false;
        header.engine_note = inexact.run.engine_note.clone();
    }
    Ok(assemble(header, &bundle.data, &bundle.features, agreements, predictions, reference_predictions, &margins, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_one_based_and_cover_every_question_once() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 1, count: 4 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let covered: Vec<usize> = (0..3).flat_map(|k| Shard { index: k, count: 3 }.questions(10)).collect();
        assert_eq!(covered, (0..10).collect::<Vec<_>>());
    }
}
