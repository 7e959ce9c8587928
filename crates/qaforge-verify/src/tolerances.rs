//! What an artifact must meet: the tolerance table by precision, and the overrides a user gives.

use qaforge_provenance::Precision;
use serde::{Deserialize, Serialize};

/// What an artifact must meet. `None` disables a check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Tolerances {
    /// Largest |Δ| between the artifact's and the reference logits.
    pub max_abs_diff: Option<f64>,
    /// Every prediction must equal the reference prediction.
    pub identical_predictions: bool,
    /// Largest drop of F1 (points, versus gold answers) below the reference's F1.
    pub max_f1_drop: Option<f64>,
    /// Smallest cosine similarity between the artifact's and the reference logits.
    pub min_cosine: Option<f64>,
    /// Smallest agreement F1 (percent) of the artifact's predictions with the reference's: how
    /// closely it follows the float model, whatever the gold answers say. Unlike the F1 change,
    /// flips of near ties in both directions do not cancel out here.
    #[serde(default)]
    pub min_agreement_f1: Option<f64>,
}

impl Tolerances {
    /// The tolerance table: defaults by precision (the artifact's `qaforge.precision` metadata).
    /// fp32 must reproduce the reference (max |Δ| ≤ 1e-4 and identical predictions); fp16 may
    /// lose 0.1 F1 and int8 1.0 F1, with a cosine floor that catches broken logits even when F1
    /// is insensitive. The match has no wildcard: a new precision does not compile without its row.
    pub fn for_precision(precision: Precision) -> Self {
        let lossy = |max_f1_drop: f64, min_cosine: f64| Tolerances {
            max_abs_diff: None,
            identical_predictions: false,
            max_f1_drop: Some(max_f1_drop),
            min_cosine: Some(min_cosine),
            min_agreement_f1: None,
        };
        match precision {
            Precision::Fp32 => Tolerances {
                max_abs_diff: Some(1e-4),
                identical_predictions: true,
                max_f1_drop: None,
                min_cosine: None,
                min_agreement_f1: None,
            },
            Precision::Fp16 => lossy(0.1, 0.999),
            Precision::Int8Dynamic | Precision::Int8Static => lossy(1.0, 0.99),
            Precision::Int4 => lossy(3.0, 0.98),
        }
    }
}

/// Tolerances given explicitly (command-line flags); each replaces its precision default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToleranceOverrides {
    /// The precision whose row of the tolerance table applies, instead of the artifact's own
    /// (recorded or inferred): `verify --precision`.
    pub precision: Option<Precision>,
    /// Replaces [`Tolerances::max_abs_diff`].
    pub max_abs_diff: Option<f64>,
    /// Replaces [`Tolerances::max_f1_drop`].
    pub max_f1_drop: Option<f64>,
    /// Replaces [`Tolerances::min_cosine`].
    pub min_cosine: Option<f64>,
    /// Replaces [`Tolerances::min_agreement_f1`].
    pub min_agreement_f1: Option<f64>,
}

impl Tolerances {
    /// These tolerances with every given override in place of its default.
    pub fn with(self, overrides: ToleranceOverrides) -> Self {
        Tolerances {
            max_abs_diff: overrides.max_abs_diff.or(self.max_abs_diff),
            max_f1_drop: overrides.max_f1_drop.or(self.max_f1_drop),
            min_cosine: overrides.min_cosine.or(self.min_cosine),
            min_agreement_f1: overrides.min_agreement_f1.or(self.min_agreement_f1),
            identical_predictions: self.identical_predictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_has_a_row_and_lossier_precisions_looser_bounds() {
        // The table is an exhaustive match: a precision added to qaforge_provenance::Precision
        // without a row here does not compile. This checks the rows themselves.
        let fp32 = Tolerances::for_precision(Precision::Fp32);
        assert!(fp32.identical_predictions && fp32.max_abs_diff == Some(1e-4));
        for p in Precision::ALL.into_iter().filter(|&p| p != Precision::Fp32) {
            let t = Tolerances::for_precision(p);
            assert!(!t.identical_predictions && t.max_f1_drop.is_some() && t.min_cosine.is_some(), "{p}: {t:?}");
        }
        let (fp16, int8) =
            (Tolerances::for_precision(Precision::Fp16), Tolerances::for_precision(Precision::Int8Dynamic));
        assert!(fp16.max_f1_drop < int8.max_f1_drop && fp16.min_cosine > int8.min_cosine);
        assert_eq!(Tolerances::for_precision(Precision::Int8Static), int8);
        // Precision::loss_rank, which decides when the operators overrule a recorded precision,
        // orders the lossy rows as their bounds do.
        for p in Precision::ALL.into_iter().filter(|&p| p != Precision::Fp32) {
            for q in Precision::ALL.into_iter().filter(|&q| q.loss_rank() > p.loss_rank()) {
                let (tp, tq) = (Tolerances::for_precision(p), Tolerances::for_precision(q));
                assert!(tp.max_f1_drop < tq.max_f1_drop && tp.min_cosine > tq.min_cosine, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn overrides_replace_only_what_they_give() {
        let t = Tolerances::for_precision(Precision::Fp16)
            .with(ToleranceOverrides { max_f1_drop: Some(1.0), ..Default::default() });
        assert_eq!((t.max_f1_drop, t.min_cosine), (Some(1.0), Some(0.999)));
    }
}
