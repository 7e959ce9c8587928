//! Agreement statistics between an artifact's logits and reference logits.

use serde::{Deserialize, Serialize};

use crate::golden::{GoldenFeatures, GoldenLogits};
use qaforge_runtime::Logits;

/// How closely two sets of logits agree, over the positions that count (unpadded tokens).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LogitStats {
    /// Largest absolute difference.
    pub max_abs_diff: f64,
    /// Mean absolute difference.
    pub mean_abs_diff: f64,
    /// Cosine similarity of the two logit vectors.
    pub cosine: f64,
    /// Positions compared.
    pub positions: usize,
    /// Non-finite values (NaN or Inf) in the artifact's logits.
    pub non_finite: usize,
}

impl LogitStats {
    /// Statistics over pairs of (artifact, reference) values, as one feature's agreement.
    pub fn compare(pairs: impl Iterator<Item = (f32, f32)>) -> Self {
        Self::fold(&[FeatureAgreement::of_pairs(pairs)])
    }

    /// The statistics of features' agreements, summed in the order given: a verification run and
    /// the merge of its shards fold the same sequence, so they give the same bits.
    pub fn fold(features: &[FeatureAgreement]) -> Self {
        let (mut max, mut sum, mut dot, mut na, mut nb, mut n, mut bad) =
            (0f64, 0f64, 0f64, 0f64, 0f64, 0usize, 0usize);
        for f in features {
            max = max.max(f.max_abs_diff);
            sum += f.sum_abs_diff;
            dot += f.dot;
            na += f.artifact_square;
            nb += f.reference_square;
            n += f.positions;
            bad += f.non_finite;
        }
        LogitStats {
            max_abs_diff: if bad > 0 { f64::INFINITY } else { max },
            mean_abs_diff: if n > 0 { sum / n as f64 } else { 0.0 },
            cosine: if na > 0.0 && nb > 0.0 { dot / (na.sqrt() * nb.sqrt()) } else { 0.0 },
            positions: n,
            non_finite: bad,
        }
    }
}

/// One feature's agreement with the reference: the sums [`LogitStats::fold`] adds up, and whether
/// its start and end argmax equal the reference's. Sharded runs write these into their partial
/// reports; the floats travel as their IEEE bits so that a merge adds exactly what was computed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct FeatureAgreement {
    /// Largest |Δ| over the feature's finite positions.
    #[serde(with = "f64_bits")]
    pub max_abs_diff: f64,
    /// Σ |Δ|.
    #[serde(with = "f64_bits")]
    pub sum_abs_diff: f64,
    /// Σ artifact × reference.
    #[serde(with = "f64_bits")]
    pub dot: f64,
    /// Σ artifact².
    #[serde(with = "f64_bits")]
    pub artifact_square: f64,
    /// Σ reference².
    #[serde(with = "f64_bits")]
    pub reference_square: f64,
    /// Positions compared (start and end, unpadded tokens).
    pub positions: usize,
    /// Non-finite artifact values.
    pub non_finite: usize,
    /// Start and end argmax both equal the reference's.
    pub argmax_agrees: bool,
}

impl FeatureAgreement {
    /// The sums over pairs of (artifact, reference) values; `argmax_agrees` is left false.
    pub fn of_pairs(pairs: impl Iterator<Item = (f32, f32)>) -> Self {
        let mut f = FeatureAgreement::default();
        for (a, b) in pairs {
            f.positions += 1;
            if !a.is_finite() {
                f.non_finite += 1;
                continue;
            }
            let (a, b) = (a as f64, b as f64);
            let d = (a - b).abs();
            f.max_abs_diff = f.max_abs_diff.max(d);
            f.sum_abs_diff += d;
            f.dot += a * b;
            f.artifact_square += a * a;
            f.reference_square += b * b;
        }
        f
    }

    /// Feature `i`'s start then end logits against the reference over its unpadded tokens.
    pub fn of(features: &GoldenFeatures, i: usize, logits: &Logits, reference: &GoldenLogits) -> Self {
        let m = features.max_length;
        let span = i * m..i * m + features.length(i);
        let start = logits.start[span.clone()].iter().copied().zip(reference.start[span.clone()].iter().copied());
        let end = logits.end[span.clone()].iter().copied().zip(reference.end[span.clone()].iter().copied());
        let mut f = Self::of_pairs(start.chain(end));
        let argmax = |v: &[f32]| {
            v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (k, &x)| if x > best.1 { (k, x) } else { best }).0
        };
        f.argmax_agrees = argmax(&logits.start[span.clone()]) == argmax(&reference.start[span.clone()])
            && argmax(&logits.end[span.clone()]) == argmax(&reference.end[span]);
        f
    }
}

/// f64 as its u64 bits in JSON (exact through any JSON reader).
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_exactly() {
        let s = LogitStats::compare([(1.0, 1.0), (-2.0, -2.0)].into_iter());
        assert_eq!((s.max_abs_diff, s.mean_abs_diff, s.positions), (0.0, 0.0, 2));
        assert!((s.cosine - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nan_is_counted_and_fails_max() {
        let s = LogitStats::compare([(f32::NAN, 1.0), (1.0, 1.5)].into_iter());
        assert_eq!(s.non_finite, 1);
        assert!(s.max_abs_diff.is_infinite());
    }
}
