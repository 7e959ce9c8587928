//! How each weight product of an int4 artifact is stored: 4-bit blocks by default; with input
//! statistics, GPTQ-rounded blocks; under a size budget (`--max-size`), a width per product.
//!
//! The size budget is a multiple-choice knapsack: every product may be stored in 2-bit or 4-bit
//! blocks, as int8 per column, or float, each option with its stored bytes and its output error
//! over the calibration tokens relative to the product's output energy,
//! `tr(ΔWᵀHΔW) / tr(WᵀHW)` ([`crate::blockwise::output_error`]). The errors of all products are
//! summed and minimised under the budget: every product starts at its smallest option and the
//! upgrade that removes the most error per added byte is taken while it fits (the greedy
//! solution along each product's convex hull of options). Which option wins where is data, not
//! layer names: on MobileBERT-like graphs the products whose inputs carry outliers keep more bits.

use std::collections::BTreeMap;

use tract_onnx::pb::GraphProto;

use crate::blockwise::{self, BlockWeights};
use crate::gram::InputGrams;
use crate::int8;
use crate::options::{Int4Options, Rounding, WeightOptions, WeightStorage};
use crate::selection::{Product, Selection};
use crate::QuantizeError;

/// How one weight product is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Block-quantized codes (MatMulNBits).
    Blocks(BlockWeights),
    /// int8 per output column (DequantizeLinear before the MatMul).
    Int8,
    /// float32 as it was.
    Float,
}

impl Stored {
    /// Short name for summaries and reports.
    pub fn describe(&self) -> String {
        match self {
            Stored::Blocks(b) => format!("{}-bit blocks of {}", b.bits, b.block_size),
            Stored::Int8 => "int8".into(),
            Stored::Float => "float".into(),
        }
    }
}

/// One product's choice, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerChoice {
    /// The MatMul node.
    pub node: String,
    /// K × N.
    pub shape: (usize, usize),
    /// How it is stored.
    pub stored: String,
    /// Bytes stored for its weight.
    pub bytes: u64,
    /// Output error over the calibration tokens relative to the output's energy.
    pub relative_error: f64,
}

/// What [`planner`] decided, by MatMul output tensor, with the report's rows in graph order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// How each product is stored, by MatMul output tensor: every product the planner found.
    pub stored: BTreeMap<String, Stored>,
    /// One row per product that has a choice.
    pub choices: Vec<LayerChoice>,
}

/// The inputs whose Gram matrices [`planner`] needs, with their row length: one per distinct input.
pub fn statistics_tensors(graph: &GraphProto, selection: &Selection) -> Result<Vec<(String, usize)>, QuantizeError> {
    let mut tensors: Vec<(String, usize)> = Vec::new();
    for p in selection.block_products(graph)? {
        if !tensors.iter().any(|(t, _)| *t == p.input) {
            tensors.push((p.input, p.k));
        }
    }
    Ok(tensors)
}

/// Runs `work` over `items` on up to `threads` threads, results in item order (each item is
/// independent, so the results do not depend on the thread count).
fn parallel_map<T: Sync, R: Send>(items: &[T], threads: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, work(item)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a quantization thread panicked")).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One option of one product.
struct Candidate {
    stored: Stored,
    bytes: u64,
    error: f64,
}

fn candidates(
    graph: &GraphProto,
    p: &Product,
    options: &Int4Options,
    grams: Option<&InputGrams>,
    budgeted: bool,
) -> Result<Vec<Candidate>, QuantizeError> {
    let gram = grams
        .map(|g| {
            g.grams
                .get(&p.input)
                .ok_or_else(|| QuantizeError::Calibration(format!("no input statistics for `{}`", p.input)))
        })
        .transpose()?;
    let weight = qaforge_onnx::edit::f32_values(&graph.initializer[p.weight])?;
    let blocks = |bits: u32| -> BlockWeights {
        match (options.rounding, gram) {
            (Rounding::Gptq, Some(gram)) => blockwise::gptq(&weight, p.k, p.n, bits, options.block_size, gram)
                .unwrap_or_else(|| blockwise::round_to_grid(&weight, p.k, p.n, bits, options.block_size)),
            _ => blockwise::round_to_grid(&weight, p.k, p.n, bits, options.block_size),
        }
    };
    let energy = gram.map_or(0.0, |g| blockwise::output_energy(&weight, p.k, p.n, g));
    let relative = |quantized: &[f32]| -> f64 {
        match gram {
            Some(gram) if energy > 0.0 => blockwise::output_error(&weight, quantized, p.k, p.n, gram) / energy,
            _ => 0.0,
        }
    };
    if !budgeted {
        let b = blocks(4);
        let error = relative(&b.dequantized());
        return Ok(vec![Candidate { bytes: b.stored_bytes(), stored: Stored::Blocks(b), error }]);
    }
    let mut out = Vec::new();
    for bits in [2, 4] {
        let b = blocks(bits);
        let error = relative(&b.dequantized());
        out.push(Candidate { bytes: b.stored_bytes(), stored: Stored::Blocks(b), error });
    }
    let int8_options = WeightOptions { per_tensor: false, storage: WeightStorage::Int8 };
    let (q, scales) = int8::quantize_symmetric(&weight, p.k, p.n, 1, int8_options);
    let dequantized: Vec<f32> = q.iter().enumerate().map(|(i, &v)| v as f32 * scales[i % p.n]).collect();
    out.push(Candidate { stored: Stored::Int8, bytes: (p.k * p.n + 5 * p.n) as u64, error: relative(&dequantized) });
    out.push(Candidate { stored: Stored::Float, bytes: (4 * p.k * p.n) as u64, error: 0.0 });
    Ok(out)
}

/// Each product's options, computed once; [`Planner::choose`] picks among them for a budget.
pub struct Planner {
    products: Vec<(String, String, (usize, usize))>,
    /// Per product: options sorted by bytes, on the lower convex hull of (bytes, error).
    options: Vec<Vec<Candidate>>,
}

/// Computes every product's options: 4-bit blocks only without a budget, else 2-bit and 4-bit
/// blocks, int8 and float. `grams` are needed for GPTQ rounding and for a budget.
pub fn planner(
    graph: &GraphProto,
    selection: &Selection,
    options: &Int4Options,
    grams: Option<&InputGrams>,
    threads: usize,
) -> Result<Planner, QuantizeError> {
    let budgeted = options.max_size.is_some();
    if (budgeted || options.rounding == Rounding::Gptq) && grams.is_none() {
        return Err(QuantizeError::Calibration(
            "GPTQ rounding and --max-size need input statistics from calibration features".into(),
        ));
    }
    let products = selection.block_products(graph)?;
    let computed = parallel_map(&products, threads, |p| candidates(graph, p, options, grams, budgeted));
    let mut all = Vec::new();
    for c in computed {
        let mut c = c?;
        c.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.error.total_cmp(&b.error)));
        all.push(hull(c));
    }
    Ok(Planner { products: products.into_iter().map(|p| (p.node, p.output, (p.k, p.n))).collect(), options: all })
}

/// The options that can win for some budget: each costs more and errs less than the one before,
/// and removes error per byte at a falling rate.
fn hull(sorted: Vec<Candidate>) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::new();
    for c in sorted {
        if kept.last().is_some_and(|last| c.error >= last.error) {
            continue;
        }
        while kept.len() >= 2 {
            let (a, b) = (&kept[kept.len() - 2], &kept[kept.len() - 1]);
            let rate_ab = (a.error - b.error) / (b.bytes - a.bytes) as f64;
            let rate_bc = (b.error - c.error) / (c.bytes - b.bytes).max(1) as f64;
            if rate_bc >= rate_ab {
                kept.pop();
            } else {
                break;
            }
        }
        kept.push(c);
    }
    kept
}

impl Planner {
    /// Bytes of the products' weights when each takes its smallest option.
    pub fn smallest_bytes(&self) -> u64 {
        self.options.iter().map(|o| o[0].bytes).sum()
    }

    /// The plan within `budget` bytes for the products' weights (None: not even the smallest
    /// options fit), or, without a budget, each product's only option.
    pub fn choose(&self, budget: Option<u64>) -> Option<Plan> {
        let mut at = vec![0usize; self.options.len()];
        let mut total = self.smallest_bytes();
        if let Some(budget) = budget {
            if total > budget {
                return None;
            }
            let mut open: Vec<bool> = self.options.iter().map(|o| o.len() > 1).collect();
            loop {
                // The upgrade with the most error removed per added byte (ties: graph order).
                let best = (0..self.options.len()).filter(|&i| open[i]).max_by(|&a, &b| {
                    let rate = |i: usize| {
                        let (now, next) = (&self.options[i][at[i]], &self.options[i][at[i] + 1]);
                        (now.error - next.error) / (next.bytes - now.bytes).max(1) as f64
                    };
                    rate(a).total_cmp(&rate(b)).then(b.cmp(&a))
                });
                let Some(i) = best else { break };
                let (now, next) = (&self.options[i][at[i]], &self.options[i][at[i] + 1]);
                if total - now.bytes + next.bytes <= budget {
                    total = total - now.bytes + next.bytes;
                    at[i] += 1;
                    open[i] = at[i] + 1 < self.options[i].len();
                } else {
                    open[i] = false;
                }
            }
        }
        let mut plan = Plan::default();
        for (((node, output, shape), options), &a) in self.products.iter().zip(&self.options).zip(&at) {
            let c = &options[a];
            plan.stored.insert(output.clone(), c.stored.clone());
            plan.choices.push(LayerChoice {
                node: node.clone(),
                shape: *shape,
                stored: c.stored.describe(),
                bytes: c.bytes,
                relative_error: c.error,
            });
        }
        Some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(bytes: u64, error: f64) -> Candidate {
        Candidate { stored: Stored::Float, bytes, error }
    }

    #[test]
    fn the_hull_drops_options_that_never_win() {
        // 150 bytes erring 0.5 lies below the line from 100 (1.0) to 300 (0.0), so it stays;
        // 250 (0.45) lies above the line from 150 to 300; 400 errs no less than 300.
        let kept = hull(vec![
            candidate(100, 1.0),
            candidate(150, 0.5),
            candidate(250, 0.45),
            candidate(300, 0.0),
            candidate(400, 0.0),
        ]);
        let points: Vec<(u64, f64)> = kept.iter().map(|c| (c.bytes, c.error)).collect();
        assert_eq!(points, vec![(100, 1.0), (150, 0.5), (300, 0.0)]);
    }

    #[test]
    fn the_budget_buys_the_most_error_per_byte() {
        let planner = Planner {
            products: vec![("a".into(), "a.out".into(), (1, 1)), ("b".into(), "b.out".into(), (1, 1))],
            options: vec![
                vec![
                    Candidate { stored: Stored::Int8, bytes: 100, error: 1.0 },
                    Candidate { stored: Stored::Float, bytes: 200, error: 0.0 },
                ],
                vec![
                    Candidate { stored: Stored::Int8, bytes: 100, error: 0.1 },
                    Candidate { stored: Stored::Float, bytes: 200, error: 0.0 },
                ],
            ],
        };
        assert!(planner.choose(Some(199)).is_none());
        let plan = planner.choose(Some(300)).unwrap();
        assert_eq!(plan.stored["a.out"], Stored::Float, "a's upgrade removes ten times the error");
        assert_eq!(plan.stored["b.out"], Stored::Int8);
        let all = planner.choose(Some(400)).unwrap();
        assert!(all.stored.values().all(|s| *s == Stored::Float));
        assert_eq!(all.choices.iter().map(|c| c.bytes).sum::<u64>(), 400);
    }

    #[test]
    fn parallel_map_keeps_item_order() {
        let items: Vec<u32> = (0..37).collect();
        assert_eq!(parallel_map(&items, 4, |&i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }
}
