//! Input statistics of weight products: for each MatMul input `x` (one row per real token of the
//! calibration features), the Gram matrix `H = Σ x xᵀ`. `H` weighs a weight error by how the
//! model's inputs excite it: a product's output error over the calibration tokens is
//! `tr(ΔWᵀ H ΔW)`. GPTQ-style rounding ([`crate::blockwise::gptq`]) compensates errors with it, and the size
//! budget ([`crate::budget`]) compares bit widths with it.
//!
//! Same inputs, same bytes: calibration batches run on several threads in whatever order they
//! finish, and floating-point sums depend on their order. So each batch's partial sum is taken in
//! float64 in row order (each product of two float32 values is exact in float64), then rounded once
//! to a fixed-point integer ([`FIXED_POINT_BITS`] fraction bits), and batches are added as integers,
//! which gives the same total in any order.

use std::collections::BTreeMap;

use qaforge_runtime::EngineChoice;
use qaforge_squad::Features;
use tract_onnx::pb::ModelProto;

use crate::calibrate::{calibration_session, in_calibration_engine, sweep};
use crate::QuantizeError;

/// Fraction bits of the fixed-point batch sums: 2⁻⁴⁰ ≈ 9e-13 resolution, sums up to 2⁸⁶ ≈ 8e25.
pub const FIXED_POINT_BITS: i32 = 40;

/// The Gram matrix of one product's input over the calibration tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    /// Length of an input row (the product's K).
    pub dim: usize,
    /// `H`, row-major `[dim, dim]`, symmetric.
    pub values: Vec<f64>,
    /// Rows (real tokens) summed.
    pub rows: u64,
}

/// The Gram matrices of the inputs of a model's weight products, by input tensor name.
#[derive(Debug, Clone)]
pub struct InputGrams {
    /// Each input tensor's Gram matrix.
    pub grams: BTreeMap<String, Gram>,
    /// Calibration features run.
    pub features: usize,
    /// The engine that ran the float graph.
    pub engine: EngineChoice,
    /// Why the statistics came from [`crate::QuantizeOptions::calibration_fallback`] rather than
    /// tract: tract's own error (None when they came from the engine asked for).
    pub fallback: Option<String>,
}

/// Entries per side of the tiles [`add_outer_products`] fills: a tile of float64 sums (32 KiB)
/// stays in the first-level cache while every row of the batch streams past it.
const TILE: usize = 64;

with_avx2! {
/// Adds `Σ x xᵀ` over `rows` (row-major, `dim` wide) to a packed upper triangle, in float64:
/// tile by tile, each entry summing the rows in order (so the result does not depend on how the
/// compiler vectorizes: lanes are entries, never rows).
fn add_outer_products(rows: &[f32], dim: usize, triangle: &mut [f64]) -> () {
    let x: Vec<f64> = rows.iter().map(|&v| v as f64).collect();
    let count = x.len() / dim;
    let mut tile = vec![0f64; TILE * TILE];
    for i0 in (0..dim).step_by(TILE) {
        let i1 = (i0 + TILE).min(dim);
        for j0 in (i0..dim).step_by(TILE) {
            let j1 = (j0 + TILE).min(dim);
            let width = j1 - j0;
            tile.iter_mut().for_each(|t| *t = 0.0);
            for r in 0..count {
                let row = &x[r * dim..(r + 1) * dim];
                let xj = &row[j0..j1];
                for (a, &xi) in row[i0..i1].iter().enumerate() {
                    for (t, &v) in tile[a * TILE..a * TILE + width].iter_mut().zip(xj) {
                        *t += xi * v;
                    }
                }
            }
            for i in i0..i1 {
                // Row i of the packed triangle starts after rows 0..i (dim - r entries each).
                for j in j0.max(i)..j1 {
                    triangle[packed_index(i, j, dim)] += tile[(i - i0) * TILE + (j - j0)];
                }
            }
        }
    }
}
}

/// Index of entry (i, j), i ≤ j, in a packed upper triangle of a `dim × dim` matrix.
fn packed_index(i: usize, j: usize, dim: usize) -> usize {
    i * dim - i * (i + 1) / 2 + j
}

struct Accumulator {
    sums: Vec<Vec<i128>>,
    rows: Vec<u64>,
    /// The first tensor whose batch sum did not fit the fixed-point range.
    overflow: Option<usize>,
}

/// Collects the Gram matrix of each of `tensors` (float32 tensors of `model`, rows of `dims[i]`
/// values) over `features`, running the float graph in the calibration engine (tract's generic
/// kernels by default: the same bits on every CPU; ONNX Runtime where asked or where tract cannot
/// run the graph, see [`crate::calibrate::calibrate`]).
pub fn input_grams(
    model: &ModelProto,
    tensors: &[(String, usize)],
    features: &Features,
    options: &crate::QuantizeOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<InputGrams, QuantizeError> {
    let (grams, engine, fallback) = in_calibration_engine(options, features, |engine| {
        grams_in(engine, model, tensors, features, options, progress)
    })?;
    Ok(InputGrams { grams, features: features.count, engine, fallback })
}

fn grams_in(
    engine: &EngineChoice,
    model: &ModelProto,
    tensors: &[(String, usize)],
    features: &Features,
    options: &crate::QuantizeOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BTreeMap<String, Gram>, QuantizeError> {
    let names: Vec<String> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let dims: Vec<usize> = tensors.iter().map(|&(_, d)| d).collect();
    let session = calibration_session(model, &names, engine, options, "statistics graph")?;
    let threads = session.preferred_threads(options.threads);
    let scale = 2f64.powi(FIXED_POINT_BITS);
    let limit = 2f64.powi(126);
    let accumulators = sweep(
        session.as_ref(),
        features,
        options.batch_size,
        threads,
        || Accumulator {
            sums: dims.iter().map(|d| vec![0i128; d * (d + 1) / 2]).collect(),
            rows: vec![0; dims.len()],
            overflow: None,
        },
        |acc, t, values| {
            let dim = dims[t];
            if dim == 0 || values.len() % dim != 0 {
                acc.overflow.get_or_insert(t);
                return;
            }
            let mut batch = vec![0f64; dim * (dim + 1) / 2];
            add_outer_products(values, dim, &mut batch);
            for (sum, v) in acc.sums[t].iter_mut().zip(&batch) {
                let fixed = (v * scale).round();
                if fixed.is_nan() || fixed.abs() >= limit {
                    acc.overflow.get_or_insert(t);
                    return;
                }
                *sum += fixed as i128;
            }
            acc.rows[t] += (values.len() / dim) as u64;
        },
        progress,
    )?;
    if let Some(t) = accumulators.iter().find_map(|a| a.overflow) {
        return Err(QuantizeError::Calibration(format!(
            "`{}`: its values are not rows of {}, or are too large (sums of x² beyond 2^86) to collect input statistics",
            names[t], dims[t]
        )));
    }
    let mut grams = BTreeMap::new();
    for (t, (name, &dim)) in names.iter().zip(&dims).enumerate() {
        let mut triangle = vec![0i128; dim * (dim + 1) / 2];
        let mut rows = 0u64;
        for acc in &accumulators {
            for (s, v) in triangle.iter_mut().zip(&acc.sums[t]) {
                *s = s
                    .checked_add(*v)
                    .ok_or_else(|| QuantizeError::Calibration(format!("`{name}`: input statistics overflow")))?;
            }
            rows += acc.rows[t];
        }
        let mut values = vec![0f64; dim * dim];
        let mut at = 0;
        for i in 0..dim {
            for j in i..dim {
                let v = triangle[at] as f64 / scale;
                values[i * dim + j] = v;
                values[j * dim + i] = v;
                at += 1;
            }
        }
        grams.insert(name.clone(), Gram { dim, values, rows });
    }
    Ok(grams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_triangle() {
        let dim = 150;
        let rows: Vec<f32> = (0..3 * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut t = vec![0f64; dim * (dim + 1) / 2];
        add_outer_products(&rows, dim, &mut t);
        for i in 0..dim {
            for j in i..dim {
                let expected: f64 = (0..3).map(|r| rows[r * dim + i] as f64 * rows[r * dim + j] as f64).sum();
                assert_eq!(t[packed_index(i, j, dim)], expected, "({i}, {j})");
            }
        }
    }

    #[test]
    fn outer_products_fill_the_upper_triangle() {
        let mut t = vec![0f64; 6];
        add_outer_products(&[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], 3, &mut t);
        // [1,2,3]ᵀ[1,2,3] + [-1,.5,2]ᵀ[-1,.5,2], upper triangle row by row.
        assert_eq!(t, vec![1.0 + 1.0, 2.0 - 0.5, 3.0 - 2.0, 4.0 + 0.25, 6.0 + 1.0, 9.0 + 4.0]);
    }
}
