//! Agreement statistics between an artifact's logits and reference logits.

use serde::Serialize;

use crate::golden::{GoldenFeatures, GoldenLogits};
use qaforge_runtime::Logits;

/// How closely two sets of logits agree, over the positions that count (unpadded tokens).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
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
    /// Accumulates statistics over pairs of (artifact, reference) values.
    pub fn compare(pairs: impl Iterator<Item = (f32, f32)>) -> Self {
        let (mut max, mut sum, mut dot, mut na, mut nb, mut n, mut bad) = (0f64, 0f64, 0f64, 0f64, 0f64, 0usize, 0usize);
        for (a, b) in pairs {
            n += 1;
            if !a.is_finite() {
                bad += 1;
                continue;
            }
            let (a, b) = (a as f64, b as f64);
            let d = (a - b).abs();
            max = max.max(d);
            sum += d;
            dot += a * b;
            na += a * a;
            nb += b * b;
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

impl LogitStats {
    /// Compares start and end logits with the reference over every feature's unpadded tokens.
    pub fn over_features(features: &GoldenFeatures, logits: &Logits, reference: &GoldenLogits) -> Self {
        let m = features.max_length;
        let positions = || (0..features.count).flat_map(move |i| (0..features.length(i)).map(move |t| i * m + t));
        let start = positions().map(|k| (logits.start[k], reference.start[k]));
        let end = positions().map(|k| (logits.end[k], reference.end[k]));
        Self::compare(start.chain(end))
    }

    /// No non-finite value and max |Δ| within `tolerance`.
    pub fn within(&self, tolerance: f64) -> bool {
        self.non_finite == 0 && self.max_abs_diff <= tolerance
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
