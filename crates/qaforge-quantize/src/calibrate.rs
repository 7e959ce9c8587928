//! Calibration: runs the float model over SQuAD features and collects the range of every tensor
//! that static quantization will quantize, streaming. Memory is bounded by the histograms
//! (tensors × bins), not by features × activations: each batch's activations are folded into
//! running minima/maxima and histograms and dropped.
//!
//! MinMax needs one pass. Percentile and entropy need a histogram over a range known in advance,
//! so they take two passes over the features: min/max first, then a histogram of |x| over
//! [0, max |x|] (exact, unlike re-binning a histogram whose range grows).

use std::collections::BTreeMap;

use qaforge_runtime::{Engine, TractSession};
use qaforge_squad::Features;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto, TypeProto, ValueInfoProto};

use crate::QuantizeError;

/// Histogram bins of |x| for percentile and entropy calibration.
pub const HISTOGRAM_BINS: usize = 2048;

/// How a tensor's calibrated range is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip |x| at this percentile of the observed |x| (e.g. 99.999).
    Percentile(f64),
    /// Clip |x| where the KL divergence between the float histogram and its 8-bit quantized
    /// version is smallest (TensorRT's entropy calibration).
    Entropy,
}

impl std::fmt::Display for CalibrationMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibrationMethod::MinMax => f.write_str("minmax"),
            CalibrationMethod::Percentile(p) => write!(f, "percentile {p}"),
            CalibrationMethod::Entropy => f.write_str("entropy"),
        }
    }
}

/// The calibrated range of one activation, always containing 0.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ActivationRange {
    /// Lower end (≤ 0).
    pub min: f32,
    /// Upper end (≥ 0).
    pub max: f32,
}

impl ActivationRange {
    /// Scale and zero point of asymmetric uint8 quantization over this range.
    pub fn scale_zero_point(&self) -> (f32, u8) {
        let span = self.max - self.min;
        if span <= 0.0 || !span.is_finite() {
            return (1.0, 0);
        }
        let scale = span / 255.0;
        (scale, (-self.min / scale).round().clamp(0.0, 255.0) as u8)
    }
}

#[derive(Debug, Clone)]
struct Stats {
    min: f32,
    max: f32,
    histogram: Vec<u64>,
}

fn with_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        for t in tensors {
            graph.output.push(ValueInfoProto {
                name: t.clone(),
                r#type: Some(TypeProto {
                    denotation: String::new(),
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: DataType::Float as i32, shape: None })),
                }),
                doc_string: String::new(),
            });
        }
    }
    model
}

/// Runs `session` over `features`, calling `visit(tensor index, values of real tokens)` for every
/// extra output (outputs after start/end logits) of every batch. Batches run on `threads` threads,
/// each folding into its own accumulator; the accumulators come back in thread order.
fn sweep<A: Send>(
    session: &TractSession,
    features: &Features,
    batch_size: usize,
    threads: usize,
    init: impl Fn() -> A + Sync,
    visit: impl Fn(&mut A, usize, &[f32]) + Sync,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<A>, QuantizeError> {
    let accumulators = qaforge_runtime::for_each_batch(features.count, batch_size, threads, init, |acc, s, e| {
        let len = qaforge_runtime::padded_length(features, s, e);
        let rows = |src: &[i64]| qaforge_runtime::gather_rows(features, src, s, e, len);
        let mask = rows(&features.attention_mask);
        let outputs = session.run_outputs(e - s, len, rows(&features.input_ids), mask.clone(), rows(&features.token_type_ids))?;
        for (t, (shape, values)) in outputs.iter().enumerate().skip(2) {
            // Activations of shape [batch, len, ...]: only rows of real tokens count (padding rows
            // hold values no real input produces).
            if shape.len() >= 2 && shape[0] == e - s && shape[1] == len {
                let width = values.len() / ((e - s) * len).max(1);
                let mut kept = Vec::with_capacity(values.len());
                for (row, &m) in mask.iter().enumerate() {
                    if m != 0 {
                        kept.extend_from_slice(&values[row * width..(row + 1) * width]);
                    }
                }
                visit(acc, t - 2, &kept);
            } else {
                visit(acc, t - 2, values);
            }
        }
        progress(e - s);
        Ok(())
    });
    accumulators.map_err(QuantizeError::Runtime)
}

/// Calibrates the ranges of `tensors` (float32 tensors of `model`) on `features`.
pub fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    features: &Features,
    method: CalibrationMethod,
    batch_size: usize,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BTreeMap<String, ActivationRange>, QuantizeError> {
    if features.count == 0 {
        return Err(QuantizeError::Calibration("no calibration features".into()));
    }
    if let CalibrationMethod::Percentile(p) = method {
        if !(50.0..=100.0).contains(&p) {
            return Err(QuantizeError::Calibration(format!("percentile {p} is outside 50..=100")));
        }
    }
    let session = TractSession::from_proto(&with_outputs(model, tensors), "calibration graph")?;
    let n = tensors.len();
    let minmax = sweep(
        &session,
        features,
        batch_size,
        threads,
        || vec![(f32::INFINITY, f32::NEG_INFINITY); n],
        |acc, t, values| {
            for &v in values {
                acc[t].0 = acc[t].0.min(v);
                acc[t].1 = acc[t].1.max(v);
            }
        },
        progress,
    )?;
    let mut stats: Vec<Stats> = vec![Stats { min: f32::INFINITY, max: f32::NEG_INFINITY, histogram: vec![] }; n];
    for acc in &minmax {
        for (s, &(lo, hi)) in stats.iter_mut().zip(acc) {
            s.min = s.min.min(lo);
            s.max = s.max.max(hi);
        }
    }
    for (t, s) in tensors.iter().zip(&stats) {
        if !s.min.is_finite() || !s.max.is_finite() {
            return Err(QuantizeError::Calibration(format!("`{t}` is not finite on the calibration features (min {}, max {})", s.min, s.max)));
        }
    }
    if method != CalibrationMethod::MinMax {
        let limits: Vec<f32> = stats.iter().map(|s| s.min.abs().max(s.max.abs())).collect();
        let histograms = sweep(
            &session,
            features,
            batch_size,
            threads,
            || vec![vec![0u64; HISTOGRAM_BINS]; n],
            |acc, t, values| {
                let limit = limits[t];
                if limit <= 0.0 {
                    acc[t][0] += values.len() as u64;
                    return;
                }
                let per_bin = HISTOGRAM_BINS as f32 / limit;
                for &v in values {
                    acc[t][((v.abs() * per_bin) as usize).min(HISTOGRAM_BINS - 1)] += 1;
                }
            },
            progress,
        )?;
        for (t, s) in stats.iter_mut().enumerate() {
            s.histogram = vec![0; HISTOGRAM_BINS];
            for acc in &histograms {
                for (bin, &c) in s.histogram.iter_mut().zip(&acc[t]) {
                    *bin += c;
                }
            }
        }
    }
    Ok(tensors
        .iter()
        .zip(stats)
        .map(|(t, s)| {
            let limit = s.min.abs().max(s.max.abs());
            let threshold = match method {
                CalibrationMethod::MinMax => limit,
                CalibrationMethod::Percentile(p) => percentile_threshold(&s.histogram, limit, p),
                CalibrationMethod::Entropy => entropy_threshold(&s.histogram, limit),
            };
            (t.clone(), ActivationRange { min: s.min.max(-threshold).min(0.0), max: s.max.min(threshold).max(0.0) })
        })
        .collect())
}

/// The upper edge of the bin where the cumulative count of |x| reaches `percentile`.
pub fn percentile_threshold(histogram: &[u64], limit: f32, percentile: f64) -> f32 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return limit;
    }
    let target = (total as f64 * percentile / 100.0).ceil() as u64;
    let mut seen = 0;
    for (i, &c) in histogram.iter().enumerate() {
        seen += c;
        if seen >= target {
            return limit * (i + 1) as f32 / histogram.len() as f32;
        }
    }
    limit
}

/// TensorRT's entropy calibration: for each candidate clip bin i (from 128 up), fold the outliers
/// into bin i-1, quantize the first i bins into 128 levels, expand back, and keep the i with the
/// smallest KL divergence. Returns the clip threshold.
pub fn entropy_threshold(histogram: &[u64], limit: f32) -> f32 {
    const LEVELS: usize = 128;
    let bins = histogram.len();
    if bins <= LEVELS || histogram.iter().sum::<u64>() == 0 {
        return limit;
    }
    let mut best = (f64::INFINITY, bins);
    for i in LEVELS..=bins {
        let mut reference: Vec<f64> = histogram[..i].iter().map(|&c| c as f64).collect();
        reference[i - 1] += histogram[i..].iter().sum::<u64>() as f64;
        // Quantize bins 0..i into LEVELS groups; each group's mass spreads evenly over its
        // non-empty bins.
        let mut candidate = vec![0f64; i];
        for level in 0..LEVELS {
            let (start, end) = (level * i / LEVELS, ((level + 1) * i / LEVELS).max(level * i / LEVELS + 1));
            let mass: f64 = histogram[start..end].iter().map(|&c| c as f64).sum();
            let nonzero = histogram[start..end].iter().filter(|&&c| c > 0).count();
            if nonzero > 0 {
                for b in start..end {
                    if histogram[b] > 0 {
                        candidate[b] = mass / nonzero as f64;
                    }
                }
            }
        }
        let (p_sum, q_sum) = (reference.iter().sum::<f64>(), candidate.iter().sum::<f64>());
        if p_sum == 0.0 || q_sum == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (p, q) in reference.iter().zip(&candidate) {
            if *p > 0.0 {
                let (p, q) = (p / p_sum, (q / q_sum).max(1e-12));
                kl += p * (p / q).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    limit * best.1 as f32 / bins as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_finds_the_bin_edge() {
        let mut h = vec![0u64; 100];
        h[9] = 99;
        h[99] = 1;
        assert_eq!(percentile_threshold(&h, 100.0, 99.0), 10.0);
        assert_eq!(percentile_threshold(&h, 100.0, 100.0), 100.0);
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // Mass concentrated near zero with a single far outlier: the best clip is far below the max.
        let mut h = vec![0u64; HISTOGRAM_BINS];
        for (i, bin) in h.iter_mut().enumerate().take(200) {
            *bin = 10_000 - 40 * i as u64;
        }
        h[HISTOGRAM_BINS - 1] = 1;
        let t = entropy_threshold(&h, 2048.0);
        assert!(t < 400.0 && t >= 128.0, "threshold {t}");
    }

    #[test]
    fn ranges_give_uint8_scale_and_zero_point() {
        assert_eq!(ActivationRange { min: -1.0, max: 3.0 }.scale_zero_point(), (4.0 / 255.0, 64));
        assert_eq!(ActivationRange { min: 0.0, max: 0.0 }.scale_zero_point(), (1.0, 0));
    }
}
