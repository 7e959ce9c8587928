//! Block-wise weight quantization for MatMulNBits: each output column's K weights in blocks of
//! `block_size`, one scale per block (float16-exact, see [`crate::int4`]), codes of 2 or 4 bits.
//!
//! - 4 bits: symmetric, the operator's default zero point 8 (codes -8..=7 around it).
//! - 2 bits: asymmetric, a zero point per block (0..=3). Four levels leave no room for a fixed
//!   zero: a symmetric grid {-2, -1, 0, 1}·s wastes a level on whichever side a block's weights
//!   reach less far.
//!
//! Two ways to round: [`round_to_grid`] chooses each block's grid by a search for the least
//! squared error and rounds every weight to it; [`gptq`] (Frantar et al., "GPTQ", 2022) rounds the
//! K inputs one at a time and spreads each rounding error over the inputs not yet rounded, in
//! proportion to how the calibration inputs correlate them (the inverse of their Gram matrix), so
//! that the product's output, not its weights, stays close.
//!
//! Everything here is scalar float32/float64 arithmetic in a fixed order, without fused
//! multiply-adds: the same codes on every CPU.

use crate::gram::Gram;

/// A weight `[K, N]` quantized in blocks along K.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWeights {
    /// Bits per code: 2 or 4.
    pub bits: u32,
    /// Weights per block along K.
    pub block_size: usize,
    /// The reduced dimension.
    pub k: usize,
    /// Output columns.
    pub n: usize,
    /// Codes, `[N, blocks, block_size]` (the last block padded with its zero point).
    pub codes: Vec<u8>,
    /// One scale per block, `[N, blocks]`.
    pub scales: Vec<f32>,
    /// One zero point per block, `[N, blocks]`.
    pub zeros: Vec<u8>,
}

/// One block's grid: a code `c` stands for `(c - zero) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Step between levels (float16-exact).
    pub scale: f32,
    /// The code of 0.
    pub zero: u8,
    /// The largest code.
    pub max_code: u8,
}

impl Grid {
    /// The code nearest to `v` on this grid (clamped).
    pub fn code(&self, v: f32) -> u8 {
        ((v / self.scale).round() + self.zero as f32).clamp(0.0, self.max_code as f32) as u8
    }

    /// The value a code stands for.
    pub fn value(&self, code: u8) -> f32 {
        (code as f32 - self.zero as f32) * self.scale
    }

    fn squared_error(&self, values: &[f32]) -> f32 {
        values.iter().map(|&v| (self.value(self.code(v)) - v).powi(2)).sum()
    }
}

/// The MatMulNBits default zero point of `bits`-bit codes: 2^(bits-1).
pub fn default_zero(bits: u32) -> u8 {
    1 << (bits - 1)
}

/// float16 keeps scales down to 6e-8; below that a block is noise anyway.
fn f16_scale(s: f32) -> f32 {
    half::f16::from_f32(s).to_f32().max(f32::MIN_POSITIVE)
}

/// The grid of least squared error for `block` among a fixed list of candidates (ties keep the
/// first, so the choice is the same on every CPU).
///
/// 4 bits: symmetric, scale `max |w| / d` for d from 6 to 9 in steps of 1/8 (d = 7 is round to
/// nearest, so the error is never worse than round-to-nearest's). 2 bits: the range [min, max]
/// (widened to hold 0) shrunk by α from 1 down to 1/2 in steps of 1/32, scale `α·range / 3`, the
/// zero point that puts 0 on a level.
pub fn grid(block: &[f32], bits: u32) -> Grid {
    let max_code = ((1u32 << bits) - 1) as u8;
    let zero = default_zero(bits);
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    // An all-zero block: scale 1, every code the zero point.
    let mut best = (f32::INFINITY, Grid { scale: 1.0, zero, max_code });
    if amax == 0.0 {
        return best.1;
    }
    let mut consider = |g: Grid| {
        let e = g.squared_error(block);
        if e < best.0 {
            best = (e, g);
        }
    };
    if bits == 4 {
        for step in 0..=24 {
            let divisor = 6.0 + step as f32 / 8.0;
            consider(Grid { scale: f16_scale(amax / divisor), zero, max_code });
        }
    } else {
        let lo = block.iter().fold(0f32, |m, &v| m.min(v));
        let hi = block.iter().fold(0f32, |m, &v| m.max(v));
        for step in 0..=16 {
            let alpha = 1.0 - step as f32 / 32.0;
            let scale = f16_scale(alpha * (hi - lo) / max_code as f32);
            let zero = (-alpha * lo / scale).round().clamp(0.0, max_code as f32) as u8;
            consider(Grid { scale, zero, max_code });
        }
    }
    best.1
}

impl BlockWeights {
    /// Blocks along K.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    fn empty(k: usize, n: usize, bits: u32, block_size: usize) -> Self {
        let blocks = k.div_ceil(block_size);
        BlockWeights {
            bits,
            block_size,
            k,
            n,
            codes: vec![default_zero(bits); n * blocks * block_size],
            scales: vec![1.0; n * blocks],
            zeros: vec![default_zero(bits); n * blocks],
        }
    }

    fn grid_of(&self, col: usize, block: usize) -> Grid {
        let i = col * self.blocks() + block;
        Grid { scale: self.scales[i], zero: self.zeros[i], max_code: ((1u32 << self.bits) - 1) as u8 }
    }

    fn set_grid(&mut self, col: usize, block: usize, g: Grid) {
        let i = col * self.blocks() + block;
        self.scales[i] = g.scale;
        self.zeros[i] = g.zero;
        // Padding past K stands for 0.
        let start = (col * self.blocks() + block) * self.block_size;
        for c in &mut self.codes[start..start + self.block_size] {
            *c = g.zero;
        }
    }

    fn set_code(&mut self, row: usize, col: usize, code: u8) {
        let (block, at) = (row / self.block_size, row % self.block_size);
        let index = (col * self.blocks() + block) * self.block_size + at;
        self.codes[index] = code;
    }

    /// The weight the codes stand for, `[K, N]` row-major.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.k * self.n];
        for col in 0..self.n {
            for row in 0..self.k {
                let block = row / self.block_size;
                let code = self.codes[(col * self.blocks() + block) * self.block_size + row % self.block_size];
                w[row * self.n + col] = self.grid_of(col, block).value(code);
            }
        }
        w
    }

    /// Whether any block needs a zero point other than the operator's default.
    pub fn needs_zero_points(&self) -> bool {
        self.zeros.iter().any(|&z| z != default_zero(self.bits))
    }

    /// The codes packed as MatMulNBits' B, `[N, blocks, block_size·bits/8]`: the first code in the
    /// lowest bits of each byte.
    pub fn packed_codes(&self) -> Vec<u8> {
        pack(&self.codes, self.bits)
    }

    /// The zero points packed as MatMulNBits' zero_points, `[N, ceil(blocks·bits/8)]`.
    pub fn packed_zeros(&self) -> Vec<u8> {
        let per_byte = (8 / self.bits) as usize;
        let blocks = self.blocks();
        let mut out = Vec::with_capacity(self.n * blocks.div_ceil(per_byte));
        for col in 0..self.n {
            let mut row = self.zeros[col * blocks..(col + 1) * blocks].to_vec();
            row.resize(blocks.div_ceil(per_byte) * per_byte, 0);
            out.extend(pack(&row, self.bits));
        }
        out
    }

    /// Bytes the artifact stores for this weight: codes, float32 scales, zero points if any.
    pub fn stored_bytes(&self) -> u64 {
        let per_byte = (8 / self.bits) as usize;
        let zeros = if self.needs_zero_points() { self.n * self.blocks().div_ceil(per_byte) } else { 0 };
        (self.codes.len() / per_byte + 4 * self.scales.len() + zeros) as u64
    }
}

/// `bits`-bit codes packed into bytes, the first code in the lowest bits.
pub fn pack(codes: &[u8], bits: u32) -> Vec<u8> {
    let per_byte = (8 / bits) as usize;
    codes
        .chunks(per_byte)
        .map(|chunk| chunk.iter().enumerate().fold(0u8, |byte, (i, &c)| byte | (c << (bits as usize * i))))
        .collect()
}

fn check_shape(values: &[f32], k: usize, n: usize, bits: u32, block_size: usize) {
    assert_eq!(values.len(), k * n, "weight of {k} × {n}");
    assert!(bits == 2 || bits == 4, "2 or 4 bits");
    assert!(block_size >= 16 && block_size.is_power_of_two(), "block of a power of two ≥ 16");
}

/// Rounds `values` (`[K, N]` row-major) to each block's least-error grid ([`grid`]).
pub fn round_to_grid(values: &[f32], k: usize, n: usize, bits: u32, block_size: usize) -> BlockWeights {
    check_shape(values, k, n, bits, block_size);
    let mut q = BlockWeights::empty(k, n, bits, block_size);
    let mut column = vec![0f32; block_size];
    for col in 0..n {
        for block in 0..q.blocks() {
            let rows = block * block_size..((block + 1) * block_size).min(k);
            let len = rows.len();
            for (slot, row) in column.iter_mut().zip(rows.clone()) {
                *slot = values[row * n + col];
            }
            let g = grid(&column[..len], bits);
            q.set_grid(col, block, g);
            for row in rows {
                q.set_code(row, col, g.code(values[row * n + col]));
            }
        }
    }
    q
}

with_avx2! {
/// Upper Cholesky factor R (A = RᵀR, row-major) of a symmetric positive definite `dim × dim`
/// matrix, or None when it is not positive definite. Hand-written: one factorization of at most a
/// few thousand rows per product does not justify a linear-algebra crate (nalgebra or faer add
/// minutes to a clean build). Right-looking, so every update is a contiguous row operation (which
/// vectorizes without reordering any sum: the same bits on every CPU).
fn cholesky_upper(a: &[f64], dim: usize) -> Option<Vec<f64>> {
    let mut r = a.to_vec();
    for j in 0..dim {
        let pivot = r[j * dim + j];
        if !(pivot.is_finite() && pivot > 0.0) {
            return None;
        }
        let d = pivot.sqrt();
        r[j * dim + j] = d;
        for v in &mut r[j * dim + j + 1..(j + 1) * dim] {
            *v /= d;
        }
        let (done, rest) = r.split_at_mut((j + 1) * dim);
        let row_j = &done[j * dim..];
        for i in j + 1..dim {
            let factor = row_j[i];
            if factor != 0.0 {
                for (x, &y) in rest[(i - j - 1) * dim + i..(i - j) * dim].iter_mut().zip(&row_j[i..]) {
                    *x -= factor * y;
                }
            }
        }
    }
    // Zero what lies below the diagonal (the input's lower half).
    for i in 1..dim {
        r[i * dim..i * dim + i].iter_mut().for_each(|v| *v = 0.0);
    }
    Some(r)
}
}

with_avx2! {
/// The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) that GPTQ propagates errors with, for the
/// Gram matrix `h` dampened by `damp` × its mean diagonal; None if not positive definite.
///
/// With J the order-reversing permutation: JHJ = RᵀR (R upper) gives H = (JRᵀJ)(JRJ), so
/// H⁻¹ = (JR⁻¹J)(JR⁻¹J)ᵀ and U = (JR⁻¹J)ᵀ, which is upper triangular. One factorization and one
/// triangular inverse, instead of inverting H and factoring the inverse.
fn inverse_cholesky_upper(h: &[f64], dim: usize, damp: f64) -> Option<Vec<f64>> {
    let mean = (0..dim).map(|i| h[i * dim + i]).sum::<f64>() / dim as f64;
    let reversed = |i: usize| dim - 1 - i;
    let mut a = vec![0f64; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            a[i * dim + j] = h[reversed(i) * dim + reversed(j)];
        }
        a[i * dim + i] += damp * mean;
    }
    let r = cholesky_upper(&a, dim)?;
    // Y = R⁻¹ (upper), row by row from the bottom: Y[i] = (e_i − Σ_{p>i} R[i][p]·Y[p]) / R[i][i].
    let mut y = vec![0f64; dim * dim];
    for i in (0..dim).rev() {
        let (head, tail) = y.split_at_mut((i + 1) * dim);
        let row = &mut head[i * dim..];
        row[i] = 1.0;
        for p in i + 1..dim {
            let factor = r[i * dim + p];
            if factor != 0.0 {
                let yp = &tail[(p - i - 1) * dim..(p - i) * dim];
                for (x, &v) in row[p..].iter_mut().zip(&yp[p..]) {
                    *x -= factor * v;
                }
            }
        }
        let d = r[i * dim + i];
        for v in &mut row[i..] {
            *v /= d;
        }
    }
    // U = (JYJ)ᵀ: U[i][j] = Y[J j][J i].
    let mut upper = vec![0f64; dim * dim];
    for i in 0..dim {
        for j in i..dim {
            upper[i * dim + j] = y[reversed(j) * dim + reversed(i)];
        }
    }
    Some(upper)
}
}

/// GPTQ rounding of `values` (`[K, N]` row-major) with the Gram matrix of its inputs. Inputs that
/// the calibration never excited (a zero diagonal) get weight 0. The Gram matrix is dampened by
/// 1% of its mean diagonal (GPTQ's default), or 10% and 100% if that is not enough to factor it;
/// None if even that fails.
pub fn gptq(values: &[f32], k: usize, n: usize, bits: u32, block_size: usize, gram: &Gram) -> Option<BlockWeights> {
    check_shape(values, k, n, bits, block_size);
    assert_eq!(gram.dim, k, "Gram matrix of the K inputs");
    let mut h = gram.values.clone();
    let mut w: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    for i in 0..k {
        if h[i * k + i] == 0.0 {
            h[i * k + i] = 1.0;
            w[i * n..(i + 1) * n].iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let u = [0.01, 0.1, 1.0].iter().find_map(|&damp| inverse_cholesky_upper(&h, k, damp))?;
    let mut q = BlockWeights::empty(k, n, bits, block_size);
    let mut column = vec![0f32; block_size];
    let mut error = vec![0f64; n];
    for i in 0..k {
        let block = i / block_size;
        if i % block_size == 0 {
            // Each block's grid from its weights as updated so far (GPTQ's groups).
            let rows = i..(i + block_size).min(k);
            for col in 0..n {
                for (slot, row) in column.iter_mut().zip(rows.clone()) {
                    *slot = w[row * n + col] as f32;
                }
                q.set_grid(col, block, grid(&column[..rows.len()], bits));
            }
        }
        let d = u[i * k + i];
        for col in 0..n {
            let g = q.grid_of(col, block);
            let code = g.code(w[i * n + col] as f32);
            q.set_code(i, col, code);
            error[col] = (w[i * n + col] - g.value(code) as f64) / d;
        }
        propagate(&mut w[(i + 1) * n..], &error, &u[i * k + i + 1..(i + 1) * k]);
    }
    Some(q)
}

with_avx2! {
/// GPTQ's error propagation: each later input's row of weights `rest` (rows of `error.len()`)
/// moves by `error × u[j]`, `u` the rest of the rounded input's row of U.
fn propagate(rest: &mut [f64], error: &[f64], u: &[f64]) -> () {
    for (row, &uij) in rest.chunks_exact_mut(error.len()).zip(u) {
        if uij != 0.0 {
            for (wj, e) in row.iter_mut().zip(error) {
                *wj -= e * uij;
            }
        }
    }
}
}

with_avx2! {
/// `tr(Mᵀ H M)` for `m` (`[K, N]` row-major): Σ over rows i and columns c of M[i][c]·(HM)[i][c],
/// with HM computed row by row (contiguous, vectorizable inner loops).
fn quadratic_form(m: &[f64], k: usize, n: usize, gram: &Gram) -> f64 {
    let mut total = 0f64;
    let mut hm = vec![0f64; n];
    for i in 0..k {
        hm.iter_mut().for_each(|v| *v = 0.0);
        for (j, &h) in gram.values[i * k..(i + 1) * k].iter().enumerate() {
            if h != 0.0 {
                for (acc, &v) in hm.iter_mut().zip(&m[j * n..(j + 1) * n]) {
                    *acc += h * v;
                }
            }
        }
        total += m[i * n..(i + 1) * n].iter().zip(&hm).map(|(a, b)| a * b).sum::<f64>();
    }
    total
}
}

/// The output energy `tr(Wᵀ H W)` of `values` (`[K, N]`) over the calibration inputs.
pub fn output_energy(values: &[f32], k: usize, n: usize, gram: &Gram) -> f64 {
    let w: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    quadratic_form(&w, k, n, gram)
}

/// The output error of replacing `values` by `quantized` (both `[K, N]`) over the calibration
/// inputs, `tr(ΔWᵀ H ΔW)`.
pub fn output_error(values: &[f32], quantized: &[f32], k: usize, n: usize, gram: &Gram) -> f64 {
    let delta: Vec<f64> = values.iter().zip(quantized).map(|(&a, &b)| a as f64 - b as f64).collect();
    quadratic_form(&delta, k, n, gram)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn two_bit_grids_are_asymmetric_and_hold_zero() {
        let block = [-0.1f32, 0.0, 0.2, 0.4, 0.6, 0.05, 0.3, 0.5, 0.1, 0.2, 0.45, 0.0, 0.25, 0.35, 0.15, 0.55];
        let g = grid(&block, 2);
        assert_eq!(g.max_code, 3);
        assert_eq!(g.value(g.zero), 0.0, "0 is a level");
        assert!(g.zero <= 1, "mostly positive weights put zero low, got {}", g.zero);
        // Better than the symmetric default zero point's best.
        let symmetric = (0..=16)
            .map(|s| {
                Grid { scale: f16_scale(0.6 / (1.0 + s as f32 / 16.0)), zero: 2, max_code: 3 }.squared_error(&block)
            })
            .fold(f32::INFINITY, f32::min);
        assert!(g.squared_error(&block) < symmetric);
        assert_eq!(grid(&[0.0; 16], 2), Grid { scale: 1.0, zero: 2, max_code: 3 });
    }

    #[test]
    fn packing_puts_the_first_code_lowest() {
        assert_eq!(pack(&[1, 2, 3, 0, 3], 2), vec![0b00_11_10_01, 0b11]);
        assert_eq!(pack(&[1, 2, 15], 4), vec![0x21, 0x0f]);
        let q = round_to_grid(&pseudo_random(40 * 3, 1), 40, 3, 2, 16);
        assert_eq!(q.blocks(), 3);
        assert_eq!(q.packed_codes().len(), 3 * 3 * 16 / 4);
        assert_eq!(q.packed_zeros().len(), 3, "three 2-bit zero points fit one byte per column");
        // The padding of the last block stands for zero.
        let padding = &q.codes[2 * 16 + 8..3 * 16];
        assert!(padding.iter().all(|&c| c == q.zeros[2]));
    }

    #[test]
    fn four_bits_match_the_table_quantizer() {
        // The MatMul path and the embedding-table path round 4-bit blocks the same way.
        let (k, n) = (64, 5);
        let values = pseudo_random(k * n, 7);
        let q = round_to_grid(&values, k, n, 4, 32);
        let mut columns = vec![0f32; k * n];
        for r in 0..k {
            for c in 0..n {
                columns[c * k + r] = values[r * n + c];
            }
        }
        let (codes, scales) = crate::int4::quantize_blocks(&columns, n, k, 32);
        assert_eq!(q.codes, codes);
        assert_eq!(q.scales, scales);
        assert!(!q.needs_zero_points());
    }

    #[test]
    fn gptq_lowers_the_output_error_of_correlated_inputs() {
        let (k, n, tokens) = (64, 16, 400);
        let values = pseudo_random(k * n, 3);
        // Inputs with strongly correlated neighbours, as activations are.
        let noise = pseudo_random(tokens * k, 11);
        let mut rows = vec![0f32; tokens * k];
        for t in 0..tokens {
            let mut previous = 0f32;
            for i in 0..k {
                previous = 0.9 * previous + noise[t * k + i];
                rows[t * k + i] = previous * (1.0 + (i % 8) as f32);
            }
        }
        let mut gram = Gram { dim: k, values: vec![0.0; k * k], rows: tokens as u64 };
        for t in 0..tokens {
            for i in 0..k {
                for j in 0..k {
                    gram.values[i * k + j] += rows[t * k + i] as f64 * rows[t * k + j] as f64;
                }
            }
        }
        for bits in [2, 4] {
            let nearest = round_to_grid(&values, k, n, bits, 32);
            let compensated = gptq(&values, k, n, bits, 32, &gram).expect("positive definite");
            let e_nearest = output_error(&values, &nearest.dequantized(), k, n, &gram);
            let e_gptq = output_error(&values, &compensated.dequantized(), k, n, &gram);
            let energy = output_energy(&values, k, n, &gram);
            assert!(
                e_gptq < 0.8 * e_nearest,
                "{bits} bits: GPTQ {e_gptq:.3e} vs nearest {e_nearest:.3e} (energy {energy:.3e})"
            );
            assert_eq!(gptq(&values, k, n, bits, 32, &gram).unwrap(), compensated, "deterministic");
        }
    }

    #[test]
    fn cholesky_factors_and_refuses_indefinite_matrices() {
        let a = [4.0, 2.0, 2.0, 3.0];
        let r = cholesky_upper(&a, 2).unwrap();
        assert_eq!(r, vec![2.0, 1.0, 0.0, 2f64.sqrt()]);
        assert!(cholesky_upper(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        // U of the inverse: UᵀU = A⁻¹, U upper, for a 3 × 3 matrix.
        let a = [4.0, 2.0, 0.5, 2.0, 3.0, 1.0, 0.5, 1.0, 2.0];
        let u = inverse_cholesky_upper(&a, 3, 0.0).unwrap();
        assert!((0..3).all(|i| (0..i).all(|j| u[i * 3 + j] == 0.0)), "upper: {u:?}");
        for i in 0..3 {
            for j in 0..3 {
                // (A · UᵀU)[i][j] = δ_ij.
                let v: f64 =
                    (0..3).map(|m| a[i * 3 + m] * (0..3).map(|p| u[p * 3 + m] * u[p * 3 + j]).sum::<f64>()).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "({i}, {j}): {v}");
            }
        }
    }
}
