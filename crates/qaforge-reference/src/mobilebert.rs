//! `MobileBertForQuestionAnswering`, written from transformers' modeling_mobilebert.py: trigram
//! embeddings, the bottleneck (input, shared key/query attention input, output), attention from
//! the true hidden size, the stacked FFNs and NoNorm, each module one struct with one forward.

use candle_core::{Tensor, D};
use qaforge_checkpoint::{MobileBertConfig, Normalization, Weights};

use crate::ops::{attention, embed, mask_bias, parameter, qa_logits, Linear, Norm};
use crate::ReferenceError;

/// The epsilon of `nn.LayerNorm(size)`: transformers builds the embeddings' and
/// `MobileBertOutput`'s norms without passing `config.layer_norm_eps`.
const TORCH_DEFAULT_EPS: f64 = 1e-5;

/// `NORM2FN[config.normalization_type](width, eps=config.layer_norm_eps)`.
fn norm(weights: &Weights, c: &MobileBertConfig, name: &str, width: usize) -> Result<Norm, ReferenceError> {
    norm_with_eps(weights, c, name, width, c.layer_norm_eps as f64)
}

/// The same norm with an explicit epsilon (NoNorm ignores it).
fn norm_with_eps(
    weights: &Weights,
    c: &MobileBertConfig,
    name: &str,
    width: usize,
    eps: f64,
) -> Result<Norm, ReferenceError> {
    let eps = match c.normalization {
        Normalization::NoNorm => None,
        Normalization::LayerNorm => Some(eps),
    };
    Norm::load(weights, name, width, eps)
}

/// `MobileBertEmbeddings`.
struct Embeddings {
    words: Tensor,
    positions: Tensor,
    token_types: Tensor,
    /// Used when `trigram_input` or `embedding_size != hidden_size`.
    transformation: Option<Linear>,
    trigram: bool,
    norm: Norm,
}

impl Embeddings {
    fn load(w: &Weights, c: &MobileBertConfig) -> Result<Self, ReferenceError> {
        let p = "mobilebert.embeddings";
        let (e, h) = (c.embedding_size, c.hidden_size);
        let transformation = if c.trigram_input || e != h {
            Some(Linear::load(w, &format!("{p}.embedding_transformation"), if c.trigram_input { 3 * e } else { e }, h)?)
        } else {
            None
        };
        Ok(Embeddings {
            words: parameter(w, &format!("{p}.word_embeddings.weight"), &[c.vocab_size, e])?,
            positions: parameter(w, &format!("{p}.position_embeddings.weight"), &[c.max_position_embeddings, h])?,
            token_types: parameter(w, &format!("{p}.token_type_embeddings.weight"), &[c.type_vocab_size, h])?,
            transformation,
            trigram: c.trigram_input,
            norm: norm_with_eps(w, c, &format!("{p}.LayerNorm"), h, TORCH_DEFAULT_EPS)?,
        })
    }

    fn forward(&self, ids: &[i64], types: &[i64], b: usize, t: usize) -> Result<Tensor, ReferenceError> {
        let mut x = embed(&self.words, ids, b, t, "token id")?;
        if self.trigram {
            // cat([pad(x[:, 1:], (0, 0, 0, 1)), x, pad(x[:, :-1], (0, 0, 1, 0))], dim=2): each
            // token sees the next and the previous token's embedding, zeros past either end.
            let next = x.narrow(1, 1, t - 1)?.pad_with_zeros(1, 0, 1)?;
            let previous = x.narrow(1, 0, t - 1)?.pad_with_zeros(1, 1, 0)?;
            x = Tensor::cat(&[&next, &x, &previous], D::Minus1)?;
        }
        if let Some(transformation) = &self.transformation {
            x = transformation.forward(&x)?;
        }
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let x = (x + embed(&self.positions, &positions, b, t, "position")?)?;
        let x = (x + embed(&self.token_types, types, b, t, "token type id")?)?;
        self.norm.forward(&x)
    }
}

/// `BottleneckLayer`: Linear(hidden → intra_bottleneck) then the norm.
struct BottleneckLayer {
    dense: Linear,
    norm: Norm,
}

impl BottleneckLayer {
    fn load(w: &Weights, c: &MobileBertConfig, p: &str) -> Result<Self, ReferenceError> {
        let t = c.intra_bottleneck_size;
        Ok(BottleneckLayer {
            dense: Linear::load(w, &format!("{p}.dense"), c.hidden_size, t)?,
            norm: norm(w, c, &format!("{p}.LayerNorm"), t)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ReferenceError> {
        self.dense.forward_then(x, None, Some(&self.norm))
    }
}

/// `Linear` then the norm of `(dense(x) + residual)`: MobileBertSelfOutput, FFNOutput,
/// MobileBertOutput's first half and OutputBottleneck all have this shape.
struct DenseResidualNorm {
    dense: Linear,
    norm: Norm,
}

impl DenseResidualNorm {
    fn load(
        w: &Weights,
        c: &MobileBertConfig,
        p: &str,
        inputs: usize,
        outputs: usize,
        eps: f64,
    ) -> Result<Self, ReferenceError> {
        Ok(DenseResidualNorm {
            dense: Linear::load(w, &format!("{p}.dense"), inputs, outputs)?,
            norm: norm_with_eps(w, c, &format!("{p}.LayerNorm"), outputs, eps)?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor, ReferenceError> {
        self.dense.forward_then(x, Some(residual), Some(&self.norm))
    }
}

/// `FFNLayer` (and the intermediate half of the layer's own FFN).
struct FeedForward {
    intermediate: Linear,
    output: DenseResidualNorm,
}

/// `MobileBertLayer`.
struct Layer {
    /// `Bottleneck.input`, and `Bottleneck.attention` with key_query_shared_bottleneck.
    bottleneck: Option<(BottleneckLayer, Option<BottleneckLayer>)>,
    use_bottleneck_attention: bool,
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: DenseResidualNorm,
    /// `ffn.*`: num_feedforward_networks − 1 extra FFNs.
    ffns: Vec<FeedForward>,
    /// The layer's own FFN: `intermediate` and `output` (dense + norm).
    ffn: FeedForward,
    /// `output.bottleneck` (OutputBottleneck) when use_bottleneck.
    output_bottleneck: Option<DenseResidualNorm>,
    heads: usize,
    act: String,
}

impl Layer {
    fn load(w: &Weights, c: &MobileBertConfig, l: usize) -> Result<Self, ReferenceError> {
        let p = format!("mobilebert.encoder.layer.{l}");
        let (h, t, i) = (c.hidden_size, c.true_hidden_size(), c.intermediate_size);
        let bottleneck = if c.use_bottleneck {
            let shared = if c.key_query_shared_bottleneck {
                Some(BottleneckLayer::load(w, c, &format!("{p}.bottleneck.attention"))?)
            } else {
                None
            };
            Some((BottleneckLayer::load(w, c, &format!("{p}.bottleneck.input"))?, shared))
        } else {
            None
        };
        let eps = c.layer_norm_eps as f64;
        // FFNOutput passes config.layer_norm_eps; MobileBertOutput (the layer's own FFN) does not.
        let ffn = |q: &str, eps: f64| -> Result<FeedForward, ReferenceError> {
            Ok(FeedForward {
                intermediate: Linear::load(w, &format!("{p}{q}intermediate.dense"), t, i)?,
                output: DenseResidualNorm::load(w, c, &format!("{p}{q}output"), i, t, eps)?,
            })
        };
        Ok(Layer {
            bottleneck,
            use_bottleneck_attention: c.use_bottleneck_attention,
            query: Linear::load(w, &format!("{p}.attention.self.query"), t, t)?,
            key: Linear::load(w, &format!("{p}.attention.self.key"), t, t)?,
            value: Linear::load(
                w,
                &format!("{p}.attention.self.value"),
                if c.use_bottleneck_attention { t } else { h },
                t,
            )?,
            attention_output: DenseResidualNorm::load(w, c, &format!("{p}.attention.output"), t, t, eps)?,
            ffns: (0..c.num_feedforward_networks.saturating_sub(1))
                .map(|f| ffn(&format!(".ffn.{f}."), eps))
                .collect::<Result<_, _>>()?,
            ffn: ffn(".", TORCH_DEFAULT_EPS)?,
            output_bottleneck: if c.use_bottleneck {
                Some(DenseResidualNorm::load(w, c, &format!("{p}.output.bottleneck"), t, h, eps)?)
            } else {
                None
            },
            heads: c.num_attention_heads,
            act: c.hidden_act.clone(),
        })
    }

    fn feed_forward(&self, ffn: &FeedForward, x: &Tensor) -> Result<Tensor, ReferenceError> {
        ffn.output.forward(&ffn.intermediate.forward_activated(x, &self.act)?, x)
    }

    fn forward(&self, hidden: &Tensor, bias: Option<&[f32]>) -> Result<Tensor, ReferenceError> {
        // Bottleneck.forward: (query, key, value, layer_input).
        let (query_in, key_in, value_in, layer_input) = match &self.bottleneck {
            None => (hidden.clone(), hidden.clone(), hidden.clone(), hidden.clone()),
            Some((input, shared)) => {
                let bottlenecked = input.forward(hidden)?;
                if self.use_bottleneck_attention {
                    (bottlenecked.clone(), bottlenecked.clone(), bottlenecked.clone(), bottlenecked)
                } else if let Some(shared) = shared {
                    let shared = shared.forward(hidden)?;
                    (shared.clone(), shared, hidden.clone(), bottlenecked)
                } else {
                    (hidden.clone(), hidden.clone(), hidden.clone(), bottlenecked)
                }
            }
        };
        let context = attention(
            &self.query.forward(&query_in)?,
            &self.key.forward(&key_in)?,
            &self.value.forward(&value_in)?,
            self.heads,
            bias,
        )?;
        let mut x = self.attention_output.forward(&context, &layer_input)?;
        for ffn in &self.ffns {
            x = self.feed_forward(ffn, &x)?;
        }
        let x = self.feed_forward(&self.ffn, &x)?;
        match &self.output_bottleneck {
            Some(output) => output.forward(&x, hidden),
            None => Ok(x),
        }
    }
}

/// `MobileBertForQuestionAnswering`.
pub(crate) struct MobileBert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    qa_outputs: Linear,
}

impl MobileBert {
    pub(crate) fn load(w: &Weights, c: &MobileBertConfig) -> Result<Self, ReferenceError> {
        Ok(MobileBert {
            embeddings: Embeddings::load(w, c)?,
            layers: (0..c.num_hidden_layers).map(|l| Layer::load(w, c, l)).collect::<Result<_, _>>()?,
            qa_outputs: Linear::load(w, "qa_outputs", c.hidden_size, 2)?,
        })
    }

    pub(crate) fn forward(
        &self,
        b: usize,
        t: usize,
        ids: &[i64],
        mask: &[i64],
        types: &[i64],
    ) -> Result<(Vec<f32>, Vec<f32>), ReferenceError> {
        let bias = mask_bias(mask);
        let mut x = self.embeddings.forward(ids, types, b, t)?;
        for layer in &self.layers {
            x = layer.forward(&x, bias.as_deref())?;
        }
        qa_logits(&self.qa_outputs, &x)
    }
}
