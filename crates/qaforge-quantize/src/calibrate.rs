//! Calibration: runs the float model over SQuAD features and collects the range of every tensor
//! that static quantization will quantize, streaming. Memory is bounded by the histograms
//! (tensors × bins), not by features × activations: each batch's activations are folded into
//! running minima/maxima and histograms and dropped.
//!
//! MinMax needs one pass. Percentile and MSE need a histogram over a range known in advance,
//! so they take two passes over the features: min/max first, then a histogram of |x| over
//! [0, max |x|] (exact, unlike re-binning a histogram whose range grows).

use std::collections::BTreeMap;

use std::path::Path;

use qaforge_runtime::{Engine, EngineChoice, TractSession};
use qaforge_squad::Features;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto, TypeProto, ValueInfoProto};

use crate::options::CalibrationMethod;
use crate::QuantizeError;

/// Histogram bins of |x| for percentile and MSE calibration.
pub const HISTOGRAM_BINS: usize = 2048;

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
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: None,
                    })),
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
pub(crate) fn sweep<A: Send>(
    session: &dyn Engine,
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
        let outputs =
            session.run_outputs(e - s, len, rows(&features.input_ids), mask.clone(), rows(&features.token_type_ids))?;
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

/// Ranges calibrated for int8-static, with the engine that measured them.
#[derive(Debug, Clone)]
pub struct CalibratedRanges {
    /// Each quantized activation's range.
    pub ranges: BTreeMap<String, ActivationRange>,
    /// Calibration features the ranges were measured on.
    pub features: usize,
    /// The engine that ran the float graph.
    pub engine: EngineChoice,
    /// Why calibration ran in [`crate::QuantizeOptions::calibration_fallback`] rather than tract:
    /// tract's own error (None when it ran where it was asked to).
    pub fallback: Option<String>,
}

/// Runs `pass` (a sweep of the float graph over calibration features) in
/// `options.calibration_engine`; where that is tract and tract cannot load or run the float graph,
/// in `options.calibration_fallback` (ONNX Runtime) when there is one. Returns the result, the
/// engine that produced it, and why the fallback ran (tract's own error; None when the asked engine
/// ran). Int8-static ranges and int4's input statistics both come through here; an empty
/// `features` is an error before any engine loads.
pub(crate) fn in_calibration_engine<T>(
    options: &crate::QuantizeOptions,
    features: &Features,
    pass: impl Fn(&EngineChoice) -> Result<T, QuantizeError>,
) -> Result<(T, EngineChoice, Option<String>), QuantizeError> {
    if features.count == 0 {
        return Err(QuantizeError::Calibration("no calibration features".into()));
    }
    let asked = &options.calibration_engine;
    match (pass(asked), asked, &options.calibration_fallback) {
        (Ok(result), _, _) => Ok((result, asked.clone(), None)),
        // tract's analysis or kernels stop on graphs ONNX Runtime runs (operators or shape
        // expressions it does not know): a user with ONNX Runtime at hand gets the pass from it.
        (Err(QuantizeError::Runtime(e)), EngineChoice::Tract, Some(fallback)) => {
            let result = pass(fallback)?;
            Ok((result, fallback.clone(), Some(format!("tract cannot run the float graph: {}", e.message))))
        }
        // tract's errors name the node it could not analyse or evaluate; the way around it is
        // ONNX Runtime.
        (Err(QuantizeError::Runtime(e)), EngineChoice::Tract, None) => Err(QuantizeError::Calibration(format!(
            "tract cannot run the float graph: {e}; {}",
            if cfg!(feature = "ort") {
                "ONNX Runtime can calibrate it: pass --ort-library <libonnxruntime> or set ORT_DYLIB_PATH"
            } else {
                "a qaforge built with `--features ort` can calibrate it in ONNX Runtime (--ort-library <libonnxruntime>)"
            }
        ))),
        (Err(e), _, _) => Err(e),
    }
}

/// The float graph with `tensors` (float32 tensors of `model`) as extra outputs, loaded in
/// `engine` and fed as `options.input_names` or the graph's input names say. tract computes with
/// its generic kernels (the same bits on every CPU: qaforge_runtime::kernels); ONNX Runtime with
/// this CPU's.
pub(crate) fn calibration_session(
    model: &ModelProto,
    tensors: &[String],
    engine: &EngineChoice,
    options: &crate::QuantizeOptions,
    label: &str,
) -> Result<Box<dyn Engine>, QuantizeError> {
    let graph = with_outputs(model, tensors);
    let layout = qaforge_runtime::check_inputs(&graph, Path::new(label), options.input_names.as_deref())?;
    Ok(match engine {
        EngineChoice::Tract => {
            qaforge_runtime::kernels::use_portable_kernels()?;
            Box::new(TractSession::with_layout(&graph, label, layout)?)
        }
        engine => qaforge_runtime::load_engine(
            engine,
            &graph,
            &qaforge_onnx::encode(&graph),
            Path::new(label),
            options.threads,
            layout,
        )?,
    })
}

/// Calibrates the ranges of `tensors` (float32 tensors of `model`) on `features`, in the
/// calibration engine (see `in_calibration_engine`).
pub fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    features: &Features,
    options: &crate::QuantizeOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<CalibratedRanges, QuantizeError> {
    if let CalibrationMethod::Percentile(p) = options.method {
        if !(50.0..=100.0).contains(&p) {
            return Err(QuantizeError::Calibration(format!("percentile {p} is outside 50..=100")));
        }
    }
    let (ranges, engine, fallback) = in_calibration_engine(options, features, |engine| {
        calibrate_in(engine, model, tensors, features, options, progress)
    })?;
    Ok(CalibratedRanges { ranges, features: features.count, engine, fallback })
}

fn calibrate_in(
    engine: &EngineChoice,
    model: &ModelProto,
    tensors: &[String],
    features: &Features,
    options: &crate::QuantizeOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BTreeMap<String, ActivationRange>, QuantizeError> {
    let (method, batch_size, threads) = (options.method, options.batch_size, options.threads);
    let session = calibration_session(model, tensors, engine, options, "calibration graph")?;
    let (session, threads) = (session.as_ref(), session.preferred_threads(threads));
    let n = tensors.len();
    let minmax = sweep(
        session,
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
            return Err(QuantizeError::Calibration(format!(
                "`{t}` is not finite on the calibration features (min {}, max {})",
                s.min, s.max
            )));
        }
    }
    if method != CalibrationMethod::MinMax {
        let limits: Vec<f32> = stats.iter().map(|s| s.min.abs().max(s.max.abs())).collect();
        let histograms = sweep(
            session,
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
                CalibrationMethod::Mse => mse_threshold(&s.histogram, limit, s.min, s.max),
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

/// The clip threshold t (a bin edge) minimising the expected squared quantization error of |x|
/// over the uint8 range [max(min, −t), min(max, t)]: values inside are rounded (error scale²/12,
/// scale = range / 255), values beyond t are clipped to it (error (|x| − t)², each bin's values
/// taken at its centre). Ties keep the wider range. Suffix sums make it one pass over the bins.
pub fn mse_threshold(histogram: &[u64], limit: f32, min: f32, max: f32) -> f32 {
    let bins = histogram.len();
    if bins == 0 || limit <= 0.0 || histogram.iter().sum::<u64>() == 0 {
        return limit;
    }
    let width = limit as f64 / bins as f64;
    let (min, max) = (min.min(0.0) as f64, max.max(0.0) as f64);
    // count, Σ c and Σ c² of the bins at and above each index, c the bin centre.
    let mut suffix = vec![(0f64, 0f64, 0f64); bins + 1];
    for j in (0..bins).rev() {
        let (n, c) = (histogram[j] as f64, (j as f64 + 0.5) * width);
        let (a, b, d) = suffix[j + 1];
        suffix[j] = (a + n, b + n * c, d + n * c * c);
    }
    let total = suffix[0].0;
    let mut best = (f64::INFINITY, bins);
    for (k, &(clipped, sum, sum_sq)) in suffix.iter().enumerate().skip(1) {
        let t = k as f64 * width;
        let scale = (max.min(t) - min.max(-t)) / 255.0;
        let error = (total - clipped) * scale * scale / 12.0 + (sum_sq - 2.0 * t * sum + t * t * clipped).max(0.0);
        if error <= best.0 {
            best = (error, k);
        }
    }
    (best.1 as f64 * width) as f32
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
    fn mse_clips_a_lone_outlier() {
        // A million values near zero and one far outlier: rounding everything on a grid stretched
        // to the outlier costs far more than clipping it.
        let mut h = vec![0u64; HISTOGRAM_BINS];
        for (i, bin) in h.iter_mut().enumerate().take(200) {
            *bin = 10_000 - 40 * i as u64;
        }
        h[HISTOGRAM_BINS - 1] = 1;
        let t = mse_threshold(&h, 2048.0, -2048.0, 2048.0);
        assert!((200.0..400.0).contains(&t), "threshold {t}");
    }

    #[test]
    fn mse_keeps_outlier_features_that_carry_mass() {
        // BERT's outlier dimensions: 0.3% of values near 28 among values within ±3. Clipping them
        // to a few units would move each by ~25 (error ~0.003 × 625 ≈ 1.9 per value), far more than
        // the rounding error of a grid that covers them (≈ (31/255)² / 12 ≈ 0.001).
        let limit = 30.0;
        let mut h = vec![0u64; HISTOGRAM_BINS];
        let bin = |x: f32| (x / limit * HISTOGRAM_BINS as f32) as usize;
        h[..bin(3.0)].fill(10_000);
        let bulk: u64 = h.iter().sum();
        h[bin(28.0)] = bulk * 3 / 1000;
        let t = mse_threshold(&h, limit, -3.0, 30.0);
        assert!(t >= 27.9, "threshold {t} clips the outlier feature");
    }

    #[test]
    fn mse_accounts_for_one_sided_ranges() {
        // The same |x| histogram clips less when the range is one-sided ([0, t] gets all 255
        // levels) than when it is symmetric ([-t, t] shares them).
        let mut h = vec![0u64; HISTOGRAM_BINS];
        for (i, bin) in h.iter_mut().enumerate() {
            *bin = (1e9 * (-(i as f64) / 60.0).exp()) as u64;
        }
        let one_sided = mse_threshold(&h, 2048.0, 0.0, 2048.0);
        let symmetric = mse_threshold(&h, 2048.0, -2048.0, 2048.0);
        assert!(one_sided > symmetric, "one-sided {one_sided} vs symmetric {symmetric}");
    }

    #[test]
    fn ranges_give_uint8_scale_and_zero_point() {
        assert_eq!(ActivationRange { min: -1.0, max: 3.0 }.scale_zero_point(), (4.0 / 255.0, 64));
        assert_eq!(ActivationRange { min: 0.0, max: 0.0 }.scale_zero_point(), (1.0, 0));
    }
}
