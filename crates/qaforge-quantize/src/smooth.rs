//! Scale migration ahead of int8 (SmoothQuant, Xiao et al., 2023): a pass over the float graph
//! that divides the input of each group of weight products (the MatMuls that read one tensor:
//! query/key/value, or one dense layer) by a per-channel scale `s` and multiplies the matching
//! rows of their weights by it. The float graph computes the same function; the int8 one does
//! not have to quantize BERT's few outlier channels (LayerNorm outputs reach |x| ≈ 28 where the
//! median channel stays near 2 on the trained fixture) on a grid shared with every other channel.
//!
//! `s_j = max|x_j|^α / max|w_j|^(1−α)` moves part of channel `j`'s range from the activation
//! (quantized per tensor) into the weight rows (quantized per output channel). Which α suits a
//! group depends on the group: on the trained fixture α 0.5 roughly halves the error of the
//! products after a LayerNorm and multiplies that of the products after GELU by four. So each
//! group's scales are chosen, among no migration and [`ALPHAS`], by the error they give that
//! group's int8 products on rows of calibration features (activations quantized as the artifact
//! will, weights as the target stores them): the pass can only keep or lower that error.
//!
//! The scale is an explicit `Mul` before the group rather than folded into the producer: in
//! post-norm BERT the LayerNorm output that feeds query/key/value (and the first FFN product) is
//! also the residual, which must stay unscaled. The `Mul` costs one pass over the activation.
//!
//! Groups are found by structure (products of [`Selection`] that share an input), so users' own
//! exports are served the same way. Statistics come from the calibration engine (tract's generic
//! kernels by default, the same on every CPU); maxima do not depend on the order batches finish
//! in, and the judged rows are taken from fixed features in order, so the same inputs give the
//! same scales and the same bytes.

use std::collections::BTreeMap;

use qaforge_onnx::edit::{f32_values, node, raw_tensor, Prune, Rewrite};
use qaforge_squad::Features;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, StringStringEntryProto};

use crate::calibrate::{calibration_session, in_calibration_engine, sweep};
use crate::int8::quantize_symmetric;
use crate::selection::{Decision, Selection};
use crate::{ActivationScales, EngineChoice, Precision, QuantizeError, QuantizeOptions};

/// The migration strengths tried for every group (besides none), multiples of 1/4 (the scales
/// are computed from square roots, the same bits on every CPU). Measured on the trained fixture
/// (golden/minilm-l6-squad2, int8-dynamic): 0.25 never lowered a group's error below 0.5's; above
/// 0.75 (0.85, 1.0) the per-group error kept falling while the model's logits moved further from
/// the float model's (mean |Δ| 0.129 against 0.077 with the grid ending at 0.75): with almost all
/// of a channel's range in the weights, the rows of outlier channels set every output channel's
/// weight scale, an error the judged rows under-represent.
pub const ALPHAS: [f32; 2] = [0.5, 0.75];

/// Calibration features (evenly spaced) whose rows judge each group's candidate scales.
pub const JUDGED_FEATURES: usize = 16;

/// Rows (tokens, evenly spaced) kept from each judged feature: bounds the cost of the judgement
/// (one product of 1,024 rows per candidate) while each feature's activation range still comes
/// from all of its tokens.
pub const ROWS_PER_FEATURE: usize = 64;

/// Bounds of a channel's scale: a channel whose activation or weights are (nearly) zero would
/// otherwise get a scale that moves its weights or activation by orders of magnitude for nothing.
const SCALE_BOUNDS: (f32, f32) = (1e-2, 1e2);

/// What the pass decided for one group of products.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupChoice {
    /// The tensor the group's products read (before migration).
    pub input: String,
    /// The group's MatMul nodes.
    pub products: Vec<String>,
    /// The migration strength chosen; `None`: the group is left as it was.
    pub alpha: Option<f32>,
    /// The group's relative squared output error in int8 without migration, on the judged rows.
    pub error_before: f64,
    /// The same with the chosen scales (equal to `error_before` where none was chosen).
    pub error_after: f64,
}

/// What [`migrate`] did.
#[derive(Debug, Clone)]
pub struct Smoothing {
    /// Every group of products that int8 quantizes, in graph order.
    pub groups: Vec<GroupChoice>,
    /// Calibration features the channel maxima were measured on.
    pub features: usize,
    /// The engine that ran the float graph.
    pub engine: EngineChoice,
    /// Why the statistics came from the fallback engine rather than tract.
    pub fallback: Option<String>,
}

impl Smoothing {
    /// One line for the provenance and the summary: how many groups migrated, with which α.
    pub fn describe(&self) -> String {
        let mut by_alpha: BTreeMap<String, usize> = BTreeMap::new();
        for g in self.groups.iter().filter_map(|g| g.alpha) {
            *by_alpha.entry(format!("{g}")).or_default() += 1;
        }
        let alphas: Vec<String> = by_alpha.iter().map(|(a, n)| format!("{n} at α {a}")).collect();
        let migrated: usize = by_alpha.values().sum();
        format!(
            "{migrated} of {} product groups migrated ({}), judged on {} features' rows, channel maxima over {} features",
            self.groups.len(),
            if alphas.is_empty() { "none".to_string() } else { alphas.join(", ") },
            JUDGED_FEATURES.min(self.features),
            self.features
        )
    }
}

/// One group: the shared input and the products reading it (node positions, weight initializer
/// positions), with their common K.
struct Group {
    input: String,
    products: Vec<usize>,
    weights: Vec<usize>,
    k: usize,
}

/// Rows of one judged feature, and its per-channel extremes over all its tokens.
#[derive(Default, Clone)]
struct Sample {
    rows: Vec<f32>,
    min: Vec<f32>,
    max: Vec<f32>,
}

/// The groups of products int8 will quantize: products of `selection` decided
/// [`Decision::Quantize`] that share an input, each weight read by no other node (a weight shared
/// elsewhere cannot take the group's scales).
fn groups(graph: &tract_onnx::pb::GraphProto, selection: &Selection) -> Vec<Group> {
    let index = qaforge_onnx::edit::GraphIndex::new(graph);
    let mut out: Vec<Group> = Vec::new();
    for (i, decision) in selection.decisions() {
        if *decision != Decision::Quantize {
            continue;
        }
        let n = &graph.node[*i];
        let Some(&w) = index.initializers.get(&n.input[1]) else { continue };
        let k = graph.initializer[w].dims[0] as usize;
        match out.iter_mut().find(|g| g.input == n.input[0]) {
            Some(g) => {
                g.products.push(*i);
                g.weights.push(w);
                if g.k != k {
                    g.k = 0;
                }
            }
            None => out.push(Group { input: n.input[0].clone(), products: vec![*i], weights: vec![w], k }),
        }
    }
    out.retain(|g| {
        g.k > 0
            && g.weights.iter().all(|&w| {
                let name = &graph.initializer[w].name;
                index.consumers.get(name).is_some_and(|c| c.iter().all(|r| g.products.contains(r)))
            })
    });
    out
}

/// Migrates activation scale into the weights of every group of products int8 will quantize
/// (see the module documentation), choosing each group's scales on `features` (calibration
/// features, run in the calibration engine). Returns the float graph with the migration and what
/// was decided; the graph's provenance records it.
pub fn migrate(
    model: &ModelProto,
    options: &QuantizeOptions,
    features: &Features,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(ModelProto, Smoothing), QuantizeError> {
    if !options.precision.is_int8() {
        return Err(QuantizeError::Graph(format!(
            "scale migration (--smooth) prepares int8 products; {} has none",
            options.precision
        )));
    }
    crate::check_float_input(model)?;
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
    let selection = Selection::for_request(graph, options);
    let groups = groups(graph, &selection);
    let inputs: Vec<String> = groups.iter().map(|g| g.input.clone()).collect();
    let widths: Vec<usize> = groups.iter().map(|g| g.k).collect();
    let step = (features.count / JUDGED_FEATURES).max(1);
    let judged: Vec<usize> = (0..features.count).step_by(step).take(JUDGED_FEATURES).collect();
    let judged = features.gather(&judged);
    let ((maxima, samples), engine, fallback) = in_calibration_engine(options, features, |engine| {
        let session = calibration_session(model, &inputs, engine, options, "scale migration graph")?;
        let (session, threads) = (session.as_ref(), session.preferred_threads(options.threads));
        let maxima = sweep(
            session,
            features,
            options.batch_size,
            threads,
            || widths.iter().map(|&k| vec![0f32; k]).collect::<Vec<_>>(),
            |acc, t, values| {
                let k = widths[t];
                for row in values.chunks_exact(k) {
                    for (a, &v) in acc[t].iter_mut().zip(row) {
                        // NaN stays visible: `max` would drop it.
                        *a = if v.is_finite() { a.max(v.abs()) } else { f32::INFINITY };
                    }
                }
            },
            progress,
        )?;
        // One thread and one feature a batch: the samples arrive in feature order.
        let samples = sweep(
            session,
            &judged,
            1,
            1,
            || vec![Vec::<Sample>::new(); widths.len()],
            |acc, t, values| acc[t].push(sample(values, widths[t])),
            progress,
        )?;
        Ok((maxima, samples.into_iter().next().unwrap_or_default()))
    })?;
    let mut channel_max: Vec<Vec<f32>> = widths.iter().map(|&k| vec![0f32; k]).collect();
    for acc in &maxima {
        for (total, part) in channel_max.iter_mut().zip(acc) {
            for (a, &b) in total.iter_mut().zip(part) {
                *a = a.max(b);
            }
        }
    }
    for (g, m) in groups.iter().zip(&channel_max) {
        if m.iter().any(|v| !v.is_finite()) {
            return Err(QuantizeError::Calibration(format!("`{}` is not finite on the calibration features", g.input)));
        }
    }
    let range_over = match (options.precision, options.activation_scales) {
        (Precision::Int8Dynamic, ActivationScales::Token) => RangeOver::EachRow,
        (Precision::Int8Dynamic, ActivationScales::Tensor) => RangeOver::EachFeature,
        _ => RangeOver::AllFeatures,
    };
    let chosen = qaforge_runtime::for_each_batch(
        groups.len(),
        1,
        options.threads,
        Vec::new,
        |acc: &mut Vec<(usize, GroupChoice, Option<Vec<f32>>)>, s, _| {
            let g = &groups[s];
            let weights: Vec<(Vec<f32>, usize)> = g
                .weights
                .iter()
                .map(|&w| {
                    let t = &graph.initializer[w];
                    Ok((f32_values(t)?, t.dims[1] as usize))
                })
                .collect::<Result<_, qaforge_onnx::edit::GraphError>>()?;
            let group_samples: Vec<&Sample> = samples.get(s).map(|v| v.iter().collect()).unwrap_or_default();
            let (choice, scales) = choose(g, &weights, &channel_max[s], &group_samples, range_over, options);
            let products = g.products.iter().map(|&p| graph.node[p].name.clone()).collect();
            acc.push((s, GroupChoice { products, ..choice }, scales));
            Ok::<(), QuantizeError>(())
        },
    )?;
    let mut chosen: Vec<(usize, GroupChoice, Option<Vec<f32>>)> = chosen.into_iter().flatten().collect();
    chosen.sort_by_key(|c| c.0);

    let mut out = model.clone();
    let graph = out.graph.as_mut().ok_or_else(|| QuantizeError::Graph("no graph".into()))?;
    let mut rw = Rewrite::new(graph);
    for (s, _, scales) in &chosen {
        let Some(scales) = scales else { continue };
        let g = &groups[*s];
        // A weight two of the group's products share takes the scales once.
        let weights: std::collections::BTreeSet<usize> = g.weights.iter().copied().collect();
        for w in weights {
            let t = &rw.graph.initializer[w];
            let n = t.dims[1] as usize;
            let mut values = f32_values(t)?;
            for (row, &scale) in values.chunks_exact_mut(n).zip(scales) {
                row.iter_mut().for_each(|v| *v *= scale);
            }
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            rw.graph.initializer[w] = raw_tensor(&t.name, &t.dims.clone(), DataType::Float, bytes);
        }
        let inverse: Vec<u8> = scales.iter().flat_map(|s| (1.0 / s).to_le_bytes()).collect();
        let inverse = rw.add_initializer(
            &format!("{}.smooth_scale", g.input),
            raw_tensor("", &[g.k as i64], DataType::Float, inverse),
        );
        let smoothed = rw.names.fresh(&format!("{}.smoothed", g.input));
        let first = g.products[0];
        rw.insert_before(first, node("Mul", &smoothed, &[&g.input, &inverse], &[&smoothed], vec![]));
        for &p in &g.products {
            rw.graph.node[p].input[0] = smoothed.clone();
        }
    }
    rw.finish(Prune::Initializers);
    let smoothing =
        Smoothing { groups: chosen.into_iter().map(|c| c.1).collect(), features: features.count, engine, fallback };
    out.metadata_props.retain(|p| p.key != qaforge_provenance::keys::QUANTIZE_SMOOTH);
    out.metadata_props.push(StringStringEntryProto {
        key: qaforge_provenance::keys::QUANTIZE_SMOOTH.into(),
        value: smoothing.describe(),
    });
    Ok((out, smoothing))
}

/// Every `ROWS_PER_FEATURE`-th row of one feature's activation (`k` wide), with the channel
/// extremes over all its rows.
fn sample(values: &[f32], k: usize) -> Sample {
    let rows = values.len() / k.max(1);
    let step = rows.div_ceil(ROWS_PER_FEATURE).max(1);
    let mut s = Sample { rows: Vec::new(), min: vec![0f32; k], max: vec![0f32; k] };
    for (r, row) in values.chunks_exact(k).enumerate() {
        for ((lo, hi), &v) in s.min.iter_mut().zip(s.max.iter_mut()).zip(row) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
        if r % step == 0 {
            s.rows.extend_from_slice(row);
        }
    }
    s
}

/// `x^(quarters/4)` from square roots, which IEEE 754 rounds exactly: `powf` comes from the C
/// library, whose x86-64 build picks an FMA or a plain variant by CPU, and the scales (so the
/// artifact's bytes) must not depend on the CPU.
fn quarter_power(x: f32, quarters: u32) -> f32 {
    let (half, quarter) = (x.sqrt(), x.sqrt().sqrt());
    match quarters {
        0 => 1.0,
        1 => quarter,
        2 => half,
        3 => half * quarter,
        _ => x,
    }
}

/// Candidate scales of α (a multiple of 1/4 up to 1): `max|x_j|^α / max|w_j|^(1−α)`, bounded;
/// 1 where either is zero.
fn scales_for(alpha: f32, activation_max: &[f32], weight_max: &[f32]) -> Vec<f32> {
    let quarters = (alpha * 4.0).round().clamp(0.0, 4.0) as u32;
    activation_max
        .iter()
        .zip(weight_max)
        .map(|(&a, &w)| {
            if a > 0.0 && w > 0.0 {
                (quarter_power(a, quarters) / quarter_power(w, 4 - quarters)).clamp(SCALE_BOUNDS.0, SCALE_BOUNDS.1)
            } else {
                1.0
            }
        })
        .collect()
}

/// The group's choice among no migration and [`ALPHAS`]: the least relative squared error of its
/// int8 products on the judged rows (ties keep the earlier candidate, no migration first).
fn choose(
    g: &Group,
    weights: &[(Vec<f32>, usize)],
    activation_max: &[f32],
    samples: &[&Sample],
    range_over: RangeOver,
    options: &QuantizeOptions,
) -> (GroupChoice, Option<Vec<f32>>) {
    let k = g.k;
    let mut weight_max = vec![0f32; k];
    for (w, n) in weights {
        for (m, row) in weight_max.iter_mut().zip(w.chunks_exact(*n)) {
            *m = row.iter().fold(*m, |m, v| m.max(v.abs()));
        }
    }
    let references: Vec<Vec<Vec<f32>>> =
        samples.iter().map(|s| weights.iter().map(|(w, n)| matmul(&s.rows, k, w, *n)).collect()).collect();
    let error = |scales: &[f32]| -> f64 {
        let quantized: Vec<Vec<f32>> = weights
            .iter()
            .map(|(w, n)| {
                let scaled: Vec<f32> =
                    w.chunks_exact(*n).zip(scales).flat_map(|(row, &s)| row.iter().map(move |v| v * s)).collect();
                let (q, steps) = quantize_symmetric(&scaled, k, *n, 1, options.weights);
                q.iter().enumerate().map(|(i, &v)| v as f32 * steps[if steps.len() == 1 { 0 } else { i % n }]).collect()
            })
            .collect();
        // int8-static quantizes with one range for every feature: the judged features' together.
        let shared = (range_over == RangeOver::AllFeatures).then(|| activation_range(samples.iter().copied(), scales));
        let (mut err, mut total) = (0f64, 0f64);
        for (s, refs) in samples.iter().zip(&references) {
            let x = if range_over == RangeOver::EachRow {
                s.rows
                    .chunks_exact(k)
                    .flat_map(|row| {
                        let (lo, hi) = row
                            .iter()
                            .zip(scales)
                            .fold((0f32, 0f32), |(lo, hi), (&v, &sc)| (lo.min(v / sc), hi.max(v / sc)));
                        quantize_activation(row, scales, lo, hi)
                    })
                    .collect()
            } else {
                let (lo, hi) = shared.unwrap_or_else(|| activation_range(std::iter::once(*s), scales));
                quantize_activation(&s.rows, scales, lo, hi)
            };
            for ((_, n), (reference, q)) in weights.iter().zip(refs.iter().zip(&quantized)) {
                let y = matmul(&x, k, q, *n);
                for (a, b) in y.iter().zip(reference) {
                    err += ((a - b) as f64).powi(2);
                    total += (*b as f64).powi(2);
                }
            }
        }
        if total > 0.0 {
            err / total
        } else {
            0.0
        }
    };
    let before = error(&vec![1.0; k]);
    let mut best = (before, None, None);
    for alpha in ALPHAS {
        let scales = scales_for(alpha, activation_max, &weight_max);
        let e = error(&scales);
        if e < best.0 {
            best = (e, Some(alpha), Some(scales));
        }
    }
    let choice = GroupChoice {
        input: g.input.clone(),
        products: Vec::new(),
        alpha: best.1,
        error_before: before,
        error_after: best.0,
    };
    (choice, best.2)
}

/// Over which values the artifact takes one activation range, which the judgement mimics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeOver {
    /// int8-static: one calibrated range for every feature.
    AllFeatures,
    /// int8-dynamic per tensor: one range per run, and verification runs one feature at a time.
    EachFeature,
    /// int8-dynamic per token: one range per row.
    EachRow,
}

/// The asymmetric uint8 range (containing 0) of the samples' activations divided by `scales`.
fn activation_range<'s>(samples: impl Iterator<Item = &'s Sample>, scales: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for s in samples {
        for ((&mn, &mx), &sc) in s.min.iter().zip(&s.max).zip(scales) {
            lo = lo.min(mn / sc);
            hi = hi.max(mx / sc);
        }
    }
    (lo, hi)
}

/// `rows / scales` quantized to uint8 over `[lo, hi]` and back, as DynamicQuantizeLinear and
/// QuantizeLinear → DequantizeLinear compute it.
fn quantize_activation(rows: &[f32], scales: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero = (-lo / step).round().clamp(0.0, 255.0);
    let k = scales.len();
    rows.iter()
        .enumerate()
        .map(|(i, &v)| (((v / scales[i % k]) / step).round() + zero).clamp(0.0, 255.0) - zero)
        .map(|q| q * step)
        .collect()
}

with_avx2! {
/// `x · w` for `x` of rows `k` wide and `w` `[k, n]`, row-major: each output row accumulates
/// `x[r, j] · w[j, ..]` over `j` in order, lane-wise over the row (the same bits with or without
/// AVX2). Hand-written: the judgement needs a few hundred million multiply-adds, not worth a BLAS
/// dependency in this crate.
fn matmul(x: &[f32], k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let rows = x.len() / k.max(1);
    let mut out = vec![0f32; rows * n];
    for (xr, yr) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (&xv, wr) in xr.iter().zip(w.chunks_exact(n)) {
            for (y, &wv) in yr.iter_mut().zip(wr) {
                *y += xv * wv;
            }
        }
    }
    out
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_move_range_between_activation_and_weights() {
        let s = scales_for(0.5, &[16.0, 1.0, 0.0], &[1.0, 4.0, 2.0]);
        assert_eq!(s, vec![4.0, 0.5, 1.0]);
        // α 1: all of the activation's range moves; bounded.
        let s = scales_for(1.0, &[1e6, 2.0], &[1.0, 1.0]);
        assert_eq!(s, vec![100.0, 2.0]);
        // α 0.75: 16^0.75 / 81^0.25 = 8 / 3.
        assert_eq!(scales_for(0.75, &[16.0], &[81.0]), vec![8.0 / 3.0]);
    }

    #[test]
    fn products_and_activation_quantization_match_by_hand() {
        let y = matmul(&[1.0, 2.0, 3.0, 4.0], 2, &[1.0, 0.0, 1.0, 0.5, 1.0, 2.0], 3);
        assert_eq!(y, vec![2.0, 2.0, 5.0, 5.0, 4.0, 11.0]);
        // [−1, 1.55] over 255 steps of 0.01: zero point 100; 0.123 rounds to 0.12.
        let q = quantize_activation(&[0.123, -1.0, 1.55], &[1.0], -1.0, 1.55);
        assert!((q[0] - 0.12).abs() < 1e-6 && (q[1] + 1.0).abs() < 1e-6 && (q[2] - 1.55).abs() < 1e-6, "{q:?}");
    }

    #[test]
    fn an_outlier_channel_is_migrated_and_the_error_falls() {
        // Channel 0 reaches 40 while the others stay within 1: per-tensor uint8 steps of 0.16
        // erase the small channels unless the outlier's range moves into the weights.
        let k = 8;
        let n = 4;
        let rows: Vec<f32> =
            (0..64 * k)
                .map(|i| {
                    if i % k == 0 {
                        40.0 * ((i / k) as f32 * 0.37).sin()
                    } else {
                        ((i * 7919 % 97) as f32 / 48.5) - 1.0
                    }
                })
                .collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 31 % 17) as f32 - 8.0) / 40.0).collect();
        let g = Group { input: "x".into(), products: vec![0], weights: vec![0], k };
        let s = sample(&rows, k);
        let mut maxima = vec![0f32; k];
        for row in rows.chunks_exact(k) {
            for (m, v) in maxima.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
        let options = QuantizeOptions::for_tests(Precision::Int8Dynamic, &[]);
        let (choice, scales) = choose(&g, &[(w, n)], &maxima, &[&s], RangeOver::EachFeature, &options);
        assert!(choice.alpha.is_some(), "{choice:?}");
        assert!(choice.error_after < choice.error_before / 4.0, "{choice:?}");
        assert!(scales.is_some_and(|s| s[0] > s[1]));
    }

    #[test]
    fn per_row_grids_are_judged_per_row() {
        // One token (row 5) reaches 50 in every channel; the others stay within 1. One grid for
        // the feature is set by that token; per-row grids leave the others their own, so the
        // judged error is far lower per row, and the choice can only keep or lower it.
        let k = 8;
        let n = 4;
        let rows: Vec<f32> =
            (0..64 * k).map(|i| if i / k == 5 { 50.0 } else { ((i * 7919 % 97) as f32 / 48.5) - 1.0 }).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 31 % 17) as f32 - 8.0) / 40.0).collect();
        let g = Group { input: "x".into(), products: vec![0], weights: vec![0], k };
        let s = sample(&rows, k);
        let maxima = vec![50f32; k];
        let options = QuantizeOptions::for_tests(Precision::Int8Dynamic, &[]);
        let (per_feature, _) = choose(&g, &[(w.clone(), n)], &maxima, &[&s], RangeOver::EachFeature, &options);
        let (per_row, _) = choose(&g, &[(w, n)], &maxima, &[&s], RangeOver::EachRow, &options);
        assert!(per_row.error_before * 20.0 < per_feature.error_before, "{per_row:?} vs {per_feature:?}");
        assert!(per_row.error_after <= per_row.error_before);
    }
}
