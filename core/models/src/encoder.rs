//! A transformer encoder of the BERT family (BERT, RoBERTa, XLM-R, DistilBERT; see [`crate::Family`])
//! with a sequence-classification head. Its element-wise work runs in our fused
//! kernels, which have backward passes (candle's fused softmax and layer norm have none), so
//! every weight gets a gradient. Dropout runs exactly when a [`StochasticPass`] is given, with
//! masks drawn from its seed.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::Embedding;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::{
    family::{Activation, HeadLayout},
    kernels::{self, bf16::PackedWeight},
    Batch, EncoderConfig, Pooling, Precision, Result,
};

/// The source of dropout masks for one stochastic forward pass; the same seed gives the same
/// masks, so stochastic passes are reproducible.
pub struct StochasticPass {
    rng: StdRng,
    /// Dropout only where a layer's output joins its residual (after the feed-forward block) and
    /// in the head; see [`McDepth::outputs_only`].
    outputs_only: bool,
}

impl StochasticPass {
    pub fn new(seed: u64) -> Self {
        Self::at_sites(seed, false)
    }

    pub(crate) fn at_sites(seed: u64, outputs_only: bool) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), outputs_only }
    }

    /// `pass`, unless it spares every dropout but the layers' outputs and the head's.
    fn at_every_site(pass: Option<&mut StochasticPass>) -> Option<&mut StochasticPass> {
        pass.filter(|pass| !pass.outputs_only)
    }
}

/// Which part of the model Monte-Carlo passes make stochastic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McDepth {
    /// 0: every layer; N: only the top N layers and the head.
    pub top_layers: usize,
    /// With `top_layers` > 0: 0 runs the embeddings and lower layers once without dropout; M
    /// runs them M times with dropout, and pass k reads lower sample k mod M.
    pub lower_passes: usize,
    /// Dropout only on each layer's output (after its feed-forward block, before the residual
    /// norm) and in the head; the embeddings' and attention's dropouts stay off. With
    /// `top_layers = 1` the passes then share the whole top layer up to its last dropout, so 16
    /// passes cost little more than one even when the head pools every position.
    pub outputs_only: bool,
}

/// Inverted dropout: zeroes each value with probability `p` and scales the rest by 1/(1-p).
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    pub fn new(p: f32) -> Self {
        Self { p }
    }

    pub fn forward(&self, xs: &Tensor, pass: Option<&mut StochasticPass>) -> Result<Tensor> {
        let Some(pass) = pass.filter(|_| self.p > 0.0) else { return Ok(xs.clone()) };
        Ok(kernels::dropout(xs, self.p, pass.rng.random())?)
    }

    /// `forward(xs) + residual` (the same mask), without storing the dropped values.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor, pass: Option<&mut StochasticPass>) -> Result<Tensor> {
        let Some(pass) = pass.filter(|_| self.p > 0.0) else { return Ok((xs + residual)?) };
        Ok(kernels::dropout_add(xs, residual, self.p, pass.rng.random())?)
    }
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
    /// The weights in bf16 for inference (see [`EncoderClassifier::set_precision`]).
    packed: Option<PackedWeight>,
}

impl Linear {
    fn new(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias, packed: None }
    }

    /// The layers' outputs side by side, as one layer (fp32: the concatenation is part of the
    /// graph, so that a trained model's gradients reach each layer).
    fn stacked(layers: &[&Linear]) -> Result<Linear> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let biases: Vec<&Tensor> = layers.iter().map(|l| &l.bias).collect();
        Ok(Linear::new(Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?))
    }

    /// Packs (or with fp32, drops) the bf16 copy of the weights.
    fn set_precision(&mut self, precision: Precision) -> Result<()> {
        self.packed = match precision {
            Precision::Fp32 => None,
            Precision::Bf16 => {
                let (outputs, inputs) = self.weight.dims2()?;
                let weight = self.weight.flatten_all()?.to_vec1::<f32>()?;
                PackedWeight::new(&weight, &self.bias.to_vec1::<f32>()?, outputs, inputs)
            }
        };
        Ok(())
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.packed {
            Some(packed) => Ok(kernels::packed_linear(xs, packed)?),
            None => Ok(kernels::linear(xs, &self.weight, &self.bias)?),
        }
    }

    /// `forward(gelu(xs))`.
    fn forward_gelu(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.packed {
            Some(packed) => Ok(kernels::packed_linear(&kernels::gelu(xs)?, packed)?),
            None => Ok(kernels::gelu_linear(xs, &self.weight, &self.bias)?),
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(kernels::layer_norm(xs, &self.weight, &self.bias, self.eps)?)
    }
}

/// Hands out named parameters while a model is built: from the checkpoint when it has them,
/// freshly initialised (seeded) otherwise; as trainable variables when asked.
pub(crate) struct ParamBuilder<'a> {
    pub weights: &'a crate::Weights,
    pub trainable: bool,
    pub frozen: Option<&'static str>,
    pub rng: StdRng,
    pub device: Device,
    pub params: Vec<(String, Tensor)>,
    pub vars: Vec<Var>,
    pub fresh: Vec<String>,
}

impl ParamBuilder<'_> {
    fn register(&mut self, name: &str, tensor: Tensor) -> Result<Tensor> {
        let tensor = if self.trainable && self.frozen != Some(name) {
            let var = Var::from_tensor(&tensor)?;
            let tensor = var.as_tensor().clone();
            self.vars.push(var);
            tensor
        } else {
            tensor
        };
        self.params.push((name.to_string(), tensor.clone()));
        Ok(tensor)
    }

    /// A parameter that must be in the checkpoint with this shape.
    fn load(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.weights.get(name, shape)?;
        self.register(name, tensor)
    }

    /// A parameter taken from the checkpoint if present with this shape, else initialised:
    /// normal(0, 0.02) for weights, zeros for biases (as Hugging Face does).
    fn load_or_init(&mut self, name: &str, shape: &[usize], use_checkpoint: bool) -> Result<Tensor> {
        if use_checkpoint && self.weights.contains(name) {
            return self.load(name, shape);
        }
        self.fresh.push(name.to_string());
        let count: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; count]
        } else {
            {
                let normal = Normal::new(0.0f32, 0.02).expect("a valid std");
                (0..count).map(|_| normal.sample(&mut self.rng)).collect()
            }
        };
        let tensor = Tensor::from_vec(values, shape, &self.device)?;
        self.register(name, tensor)
    }

    fn linear(&mut self, prefix: &str, input: usize, output: usize) -> Result<Linear> {
        let weight = self.load(&format!("{prefix}.weight"), &[output, input])?;
        let bias = self.load(&format!("{prefix}.bias"), &[output])?;
        Ok(Linear::new(weight, bias))
    }

    fn fresh_linear(&mut self, prefix: &str, input: usize, output: usize, use_checkpoint: bool) -> Result<Linear> {
        let weight = self.load_or_init(&format!("{prefix}.weight"), &[output, input], use_checkpoint)?;
        let bias = self.load_or_init(&format!("{prefix}.bias"), &[output], use_checkpoint)?;
        Ok(Linear::new(weight, bias))
    }

    fn layer_norm(&mut self, prefix: &str, size: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.load(&format!("{prefix}.weight"), &[size])?,
            bias: self.load(&format!("{prefix}.bias"), &[size])?,
            eps,
        })
    }
}

struct Embeddings {
    words: Embedding,
    positions: Embedding,
    /// The position id of the first token (see [`crate::Family::first_position`]).
    first_position: u32,
    /// DistilBERT has none.
    token_types: Option<Embedding>,
    norm: LayerNorm,
    dropout: Dropout,
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// Query, key and value, and key and value, stacked once, in a model that is not trained (a
    /// trained model's are stacked in each pass's graph, so that gradients reach each layer).
    fixed_qkv: Option<Linear>,
    fixed_kv: Option<Linear>,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    attention_dropout: Dropout,
    hidden_dropout: Dropout,
}

struct FeedForward {
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
    dropout: Dropout,
}

pub(crate) struct Layer {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

/// What a forward pass returns.
pub struct ModelOutput {
    /// `[B, L]`.
    pub logits: Tensor,
    /// `[B, H]`: what the head pools (see [`Pooling`]), the input of the classifier.
    pub pooled: Tensor,
}

/// The classification head on the pooled vector (see [`HeadLayout`]).
struct Head {
    dense: Option<(Linear, Activation)>,
    dropout_before_dense: bool,
    classifier: Linear,
    dropout: Dropout,
}

pub struct EncoderClassifier {
    embeddings: Embeddings,
    pub(crate) layers: Vec<Layer>,
    pooling: Pooling,
    head: Head,
    pub(crate) config: EncoderConfig,
    pub(crate) labels: Vec<String>,
    pub(crate) params: Vec<(String, Tensor)>,
    vars: Vec<Var>,
    device: Device,
}

/// The additive attention mask of a `[B, T]` 0/1 padding mask: padding gets the lowest f32
/// added to its attention scores, as Hugging Face does.
fn attention_mask(padding: &Tensor) -> Result<Tensor> {
    Ok(((padding.ones_like()? - padding)? * f64::from(f32::MIN))?)
}

/// Blocks of `block` rows of `t`, the i-th being block `order[i]`, concatenated: the inputs of
/// passes that take shared samples in turn.
fn blocks_in_order(t: &Tensor, order: &[usize], block: usize) -> Result<Tensor> {
    let blocks = order.iter().map(|&m| t.narrow(0, m * block, block)).collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&blocks, 0)?)
}

/// The projections of an attention layer's input: the rows that come out (`queries`, `[N, Q, H]`)
/// and the per-head queries, keys and values.
struct Projections {
    queries: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// What the stochastic passes over the top layer share, for inputs that several passes read.
enum SharedTop {
    /// Every dropout on: the top layer's attention up to its first dropout.
    Attention(SharedAttention),
    /// Only the output dropout on: the feed-forward block's input to it, and the residual.
    Output { transformed: Tensor, attended: Tensor },
}

/// The top layer's attention up to its dropout, for inputs that several passes read.
struct SharedAttention {
    queries: Tensor,
    probs: Tensor,
    v: Tensor,
}

impl SelfAttention {
    /// Stacks query, key and value (and key and value) once, where they are not yet.
    fn fix_stacks(&mut self) -> Result<()> {
        if self.fixed_qkv.is_none() {
            self.fixed_qkv = Some(Linear::stacked(&[&self.query, &self.key, &self.value])?);
            self.fixed_kv = Some(Linear::stacked(&[&self.key, &self.value])?);
        }
        Ok(())
    }

    /// With `first_only`, only the first position attends (to every position) and comes out:
    /// all that the classifier head reads of the last layer.
    fn forward(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        first_only: bool,
        pass: Option<&mut StochasticPass>,
    ) -> Result<Tensor> {
        let projections = self.project(xs, first_only)?;
        let probs = self.probabilities(&projections, mask)?;
        self.attend(&projections.queries, &probs, &projections.v, pass)
    }

    /// What every stochastic pass over the top layer shares for the same input: dropout comes
    /// after the attention probabilities, so everything before them (for the first position
    /// only with `first_only`).
    fn share(&self, samples: &Tensor, mask: &Tensor, first_only: bool) -> Result<SharedAttention> {
        let projections = self.project(samples, first_only)?;
        let probs = self.probabilities(&projections, mask)?;
        Ok(SharedAttention { queries: projections.queries, probs, v: projections.v })
    }

    /// The shared positions over `order.len()` stochastic passes: pass i reads input `order[i]`
    /// (rows `order[i] * batch ..` of what was shared).
    fn forward_shared(
        &self,
        shared: &SharedAttention,
        order: &[usize],
        batch: usize,
        pass: Option<&mut StochasticPass>,
    ) -> Result<Tensor> {
        let pick = |t: &Tensor| blocks_in_order(t, order, batch);
        self.attend(&pick(&shared.queries)?, &pick(&shared.probs)?, &pick(&shared.v)?, pass)
    }

    fn project(&self, xs: &Tensor, first_only: bool) -> Result<Projections> {
        let (batch, _, hidden) = xs.dims3()?;
        let head_dim = hidden / self.heads;
        // Projections side by side, `[B, T, n * hidden]`, viewed as `[B, T, n, heads, head_dim]`
        // (no copy); part i comes out as `[B, heads, T, head_dim]` in one copy.
        let heads = |t: &Tensor, n: usize| -> Result<Vec<Tensor>> {
            let positions = t.dim(1)?;
            let view = t.reshape((batch, positions, n, self.heads, head_dim))?;
            (0..n).map(|i| Ok(view.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?)).collect()
        };
        let queries = if first_only { xs.narrow(1, 0, 1)? } else { xs.clone() };
        // One matrix product for the projections that read the same positions.
        let stacked = |layers: &[&Linear], fixed: &Option<Linear>| -> Result<Tensor> {
            match fixed {
                Some(fixed) => fixed.forward(xs),
                None => Linear::stacked(layers)?.forward(xs),
            }
        };
        let (q, k, v) = if first_only {
            let kv = heads(&stacked(&[&self.key, &self.value], &self.fixed_kv)?, 2)?;
            let q = heads(&self.query.forward(&queries)?, 1)?;
            (q[0].clone(), kv[0].clone(), kv[1].clone())
        } else {
            let qkv = heads(&stacked(&[&self.query, &self.key, &self.value], &self.fixed_qkv)?, 3)?;
            (qkv[0].clone(), qkv[1].clone(), qkv[2].clone())
        };
        Ok(Projections { queries, q, k, v })
    }

    /// Masked, scaled softmax of the attention scores, before dropout.
    fn probabilities(&self, projections: &Projections, mask: &Tensor) -> Result<Tensor> {
        let scale = 1.0 / (projections.q.dim(3)? as f64).sqrt();
        Ok(kernels::attention_probabilities(&projections.q, &projections.k, mask, scale)?)
    }

    /// Attention dropout, the weighted values, the output projection and the residual norm.
    fn attend(
        &self,
        queries: &Tensor,
        probs: &Tensor,
        v: &Tensor,
        mut pass: Option<&mut StochasticPass>,
    ) -> Result<Tensor> {
        let (batch, positions, hidden) = queries.dims3()?;
        pass = StochasticPass::at_every_site(pass);
        let probs = self.attention_dropout.forward(probs, pass.as_deref_mut())?;
        let context = probs.matmul(v)?.transpose(1, 2)?.reshape((batch, positions, hidden))?;
        self.norm.forward(&self.hidden_dropout.forward_add(&self.output.forward(&context)?, queries, pass)?)
    }
}

impl FeedForward {
    fn forward(&self, xs: &Tensor, pass: Option<&mut StochasticPass>) -> Result<Tensor> {
        self.finish(&self.transform(xs)?, xs, pass)
    }

    /// The block up to its dropout.
    fn transform(&self, xs: &Tensor) -> Result<Tensor> {
        self.output.forward_gelu(&self.intermediate.forward(xs)?)
    }

    /// Dropout on the `transformed` input `xs`, the residual and the norm: the layer's output.
    fn finish(&self, transformed: &Tensor, xs: &Tensor, pass: Option<&mut StochasticPass>) -> Result<Tensor> {
        self.norm.forward(&self.dropout.forward_add(transformed, xs, pass)?)
    }
}

impl EncoderClassifier {
    /// Builds the model from checkpoint weights. `layers` keeps only the first N encoder
    /// layers. The classifier (and the head's dense layer, if absent) are initialised from
    /// `seed` when the checkpoint has none for these `labels`.
    pub(crate) fn build(
        weights: &crate::Weights,
        mut config: EncoderConfig,
        options: &crate::ClassifierOptions,
        reuse_head: bool,
        device: &Device,
    ) -> Result<Self> {
        if let Some(keep) = options.layers {
            if keep == 0 || keep > config.num_hidden_layers {
                return Err(crate::ModelError::InvalidRequest(format!(
                    "cannot keep {keep} encoder layers of a checkpoint with {} (choose 1 to {})",
                    config.num_hidden_layers, config.num_hidden_layers
                )));
            }
            config.num_hidden_layers = keep;
        }
        let labels = options.labels.clone();
        config.set_labels(&labels);
        let mut p = ParamBuilder {
            weights,
            trainable: options.trainable,
            frozen: options.freeze_word_embeddings.then_some("embeddings.word_embeddings.weight"),
            rng: StdRng::seed_from_u64(options.seed),
            device: device.clone(),
            params: Vec::new(),
            vars: Vec::new(),
            fresh: Vec::new(),
        };
        let (h, eps, family) = (config.hidden_size, config.layer_norm_eps, config.family);
        let hidden_dropout = Dropout::new(config.hidden_dropout_prob);
        let token_types = if family.has_token_types() {
            let table = p.load("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
            Some(Embedding::new(table, h))
        } else {
            None
        };
        let embeddings = Embeddings {
            words: Embedding::new(p.load("embeddings.word_embeddings.weight", &[config.vocab_size, h])?, h),
            positions: Embedding::new(
                p.load("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
                h,
            ),
            first_position: family.first_position(config.pad_token_id),
            token_types,
            norm: p.layer_norm("embeddings.LayerNorm", h, eps)?,
            dropout: hidden_dropout,
        };
        let attention_output_dropout =
            if family.attention_output_dropout() { hidden_dropout } else { Dropout::new(0.0) };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let at = |name: &str| family.layer_tensor(i, name);
                Ok(Layer {
                    attention: SelfAttention {
                        query: p.linear(&at("attention.self.query"), h, h)?,
                        key: p.linear(&at("attention.self.key"), h, h)?,
                        value: p.linear(&at("attention.self.value"), h, h)?,
                        fixed_qkv: None,
                        fixed_kv: None,
                        output: p.linear(&at("attention.output.dense"), h, h)?,
                        norm: p.layer_norm(&at("attention.output.LayerNorm"), h, eps)?,
                        heads: config.num_attention_heads,
                        attention_dropout: Dropout::new(config.attention_probs_dropout_prob),
                        hidden_dropout: attention_output_dropout,
                    },
                    feed_forward: FeedForward {
                        intermediate: p.linear(&at("intermediate.dense"), h, config.intermediate_size)?,
                        output: p.linear(&at("output.dense"), config.intermediate_size, h)?,
                        norm: p.layer_norm(&at("output.LayerNorm"), h, eps)?,
                        dropout: hidden_dropout,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooling = config.pooling.unwrap_or(Pooling::Cls);
        let HeadLayout { dense, dropout_before_dense, classifier } = family.head(pooling);
        let dense = match dense {
            Some((name, activation)) => {
                let from_checkpoint = reuse_head || !family.is_head_tensor(name);
                Some((p.fresh_linear(name, h, h, from_checkpoint)?, activation))
            }
            None => None,
        };
        let head = Head {
            dense,
            dropout_before_dense,
            classifier: p.fresh_linear(classifier, h, labels.len(), reuse_head)?,
            dropout: Dropout::new(config.classifier_dropout()),
        };
        let mut layers = layers;
        if !options.trainable {
            for layer in &mut layers {
                layer.attention.fix_stacks()?;
            }
        }
        let ParamBuilder { params, vars, .. } = p;
        Ok(Self { embeddings, layers, pooling, head, config, labels, params, vars, device: device.clone() })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the linear layers at `precision` from now on; bf16 takes a copy of the current
    /// weights (for inference: training does not update it). Returns the precision in effect:
    /// fp32 where the CPU has no AVX512-BF16 or the model is not on the CPU.
    pub fn set_precision(&mut self, precision: Precision) -> Result<Precision> {
        let precision = precision.in_effect(self.device.is_cpu() && kernels::bf16::supported());
        let trained = !self.vars.is_empty();
        for layer in &mut self.layers {
            // bf16 is a snapshot anyway, so a trained model's stacks may be fixed too.
            if precision == Precision::Bf16 || !trained {
                layer.attention.fix_stacks()?;
            } else {
                (layer.attention.fixed_qkv, layer.attention.fixed_kv) = (None, None);
            }
        }
        for linear in self.inference_linears_mut() {
            linear.set_precision(precision)?;
        }
        Ok(precision)
    }

    /// The linear layers a bf16 model runs: key and value alone never run there (only inside
    /// the fixed stacks), so they are not packed.
    fn inference_linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        let layers = self.layers.iter_mut().flat_map(|layer| {
            let SelfAttention { query, output, fixed_qkv, fixed_kv, .. } = &mut layer.attention;
            let FeedForward { intermediate, output: ff_output, .. } = &mut layer.feed_forward;
            [query, output, intermediate, ff_output].into_iter().chain(fixed_qkv).chain(fixed_kv)
        });
        let head = self.head.dense.iter_mut().map(|(dense, _)| dense).chain([&mut self.head.classifier]);
        layers.chain(head)
    }

    /// The trainable variables (empty unless built trainable).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Named parameters, as saved in a checkpoint.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Token, position and type embeddings, and the additive attention mask.
    pub(crate) fn embed(&self, batch: &Batch, pass: Option<&mut StochasticPass>) -> Result<(Tensor, Tensor)> {
        let (size, length) = batch.ids.dims2()?;
        let e = &self.embeddings;
        // Padding comes last, so real tokens are numbered from the first position on; what a
        // padded position gets is masked out everywhere.
        let positions = Tensor::arange(e.first_position, e.first_position + length as u32, &self.device)?
            .unsqueeze(0)?
            .broadcast_as((size, length))?;
        let mut summed = (e.words.forward(&batch.ids)? + e.positions.forward(&positions)?)?;
        if let Some(token_types) = &e.token_types {
            summed = (summed + token_types.forward(&Tensor::zeros((size, length), DType::U32, &self.device)?)?)?;
        }
        let hidden = e.dropout.forward(&e.norm.forward(&summed)?, StochasticPass::at_every_site(pass))?;
        Ok((hidden, attention_mask(&batch.mask)?))
    }

    /// Runs `layers`; with `last_is_top`, the last of them is the model's top layer and, under
    /// `cls` pooling, only its first position (the one the head reads) is computed, which gives
    /// the same logits for about a sixth of that layer's work.
    pub(crate) fn encode(
        &self,
        mut hidden: Tensor,
        mask: &Tensor,
        layers: &[Layer],
        last_is_top: bool,
        mut pass: Option<&mut StochasticPass>,
    ) -> Result<Tensor> {
        for (index, layer) in layers.iter().enumerate() {
            let first_only = last_is_top && index + 1 == layers.len() && self.pooling == Pooling::Cls;
            hidden = layer.attention.forward(&hidden, mask, first_only, pass.as_deref_mut())?;
            hidden = layer.feed_forward.forward(&hidden, pass.as_deref_mut())?;
        }
        Ok(hidden)
    }

    /// Pools the top layer's `hidden` (`[B, T, H]`, or `[B, 1, H]` under `cls`) and classifies;
    /// `padding` is the `[B, T]` 0/1 mask of real tokens.
    pub(crate) fn head(
        &self,
        hidden: &Tensor,
        padding: &Tensor,
        pass: Option<&mut StochasticPass>,
    ) -> Result<ModelOutput> {
        let head = &self.head;
        let mut pooled = pool(hidden, padding, self.pooling)?;
        let mut pass = pass;
        if let Some((dense, activation)) = &head.dense {
            if head.dropout_before_dense {
                pooled = head.dropout.forward(&pooled, pass.as_deref_mut())?;
            }
            let dense = dense.forward(&pooled)?;
            pooled = match activation {
                Activation::Tanh => dense.tanh()?,
                Activation::Relu => dense.relu()?,
            };
        }
        let logits = head.classifier.forward(&head.dropout.forward(&pooled, pass)?)?;
        Ok(ModelOutput { logits, pooled })
    }

    /// Every layer's hidden states without dropout, `[B, T, H]` each: the embeddings' output
    /// first, then each encoder layer's. With [`pool`], what an embedding classifier or a
    /// feature-based method builds on without copying the encoder.
    pub fn hidden_states(&self, batch: &Batch) -> Result<Vec<Tensor>> {
        let (mut hidden, mask) = self.embed(batch, None)?;
        let mut states = vec![hidden.clone()];
        for layer in &self.layers {
            hidden = self.encode(hidden, &mask, std::slice::from_ref(layer), false, None)?;
            states.push(hidden.clone());
        }
        Ok(states)
    }

    /// Runs the model; dropout is on exactly when `pass` is given.
    pub fn forward(&self, batch: &Batch, mut pass: Option<&mut StochasticPass>) -> Result<ModelOutput> {
        let (hidden, mask) = self.embed(batch, pass.as_deref_mut())?;
        let hidden = self.encode(hidden, &mask, &self.layers, true, pass.as_deref_mut())?;
        self.head(&hidden, &batch.mask, pass)
    }

    /// `passes` Monte-Carlo dropout passes, `[passes, B, L]`, reproducible from `seed`. The
    /// passes run batched (the batch repeated along its first axis, a few passes at a time).
    /// `depth` says which layers are stochastic; see [`McDepth`].
    pub fn mc_logits(&self, batch: &Batch, passes: usize, seed: u64, depth: McDepth) -> Result<Tensor> {
        let size = batch.ids.dims2()?.0;
        let stochastic_from =
            if depth.top_layers == 0 { 0 } else { self.layers.len().saturating_sub(depth.top_layers) };
        let mut pass = StochasticPass::at_sites(seed, depth.outputs_only);
        let group = |count: usize| (128 / size.max(1)).clamp(1, count.max(1));
        let repeat = |t: &Tensor, copies: usize| -> Result<Tensor> { Ok(Tensor::cat(&vec![t.clone(); copies], 0)?) };
        let repeated = |copies: usize| -> Result<Batch> {
            Ok(Batch { ids: repeat(&batch.ids, copies)?, mask: repeat(&batch.mask, copies)? })
        };
        // The lower layers' output, `[samples * B, T, H]`, when only the top layers are stochastic.
        let lower = if stochastic_from == 0 {
            None
        } else if depth.lower_passes == 0 {
            let (hidden, mask) = self.embed(batch, None)?;
            Some((self.encode(hidden, &mask, &self.layers[..stochastic_from], false, None)?, mask, 1))
        } else {
            let samples = depth.lower_passes.min(passes);
            let (mut parts, mut done) = (Vec::new(), 0);
            while done < samples {
                let copies = group(samples).min(samples - done);
                let (hidden, mask) = self.embed(&repeated(copies)?, Some(&mut pass))?;
                parts.push(self.encode(hidden, &mask, &self.layers[..stochastic_from], false, Some(&mut pass))?);
                done += copies;
            }
            Some((Tensor::cat(&parts, 0)?, attention_mask(&batch.mask)?, samples))
        };
        // Only the top layer stochastic: what its passes share, once per lower sample (at its
        // first position only where the head reads only that one).
        let shared = match &lower {
            Some((hidden, mask, samples)) if stochastic_from + 1 == self.layers.len() => {
                let first_only = self.pooling == Pooling::Cls;
                let (top, mask) = (&self.layers[stochastic_from], repeat(mask, *samples)?);
                Some(if depth.outputs_only {
                    let attended = top.attention.forward(hidden, &mask, first_only, None)?;
                    SharedTop::Output { transformed: top.feed_forward.transform(&attended)?, attended }
                } else {
                    SharedTop::Attention(top.attention.share(hidden, &mask, first_only)?)
                })
            }
            _ => None,
        };
        let mut outputs = Vec::new();
        let mut done = 0;
        while done < passes {
            let copies = group(passes).min(passes - done);
            let hidden = match &lower {
                // Pass k reads lower sample k mod `samples`.
                Some((hidden, mask, samples)) => {
                    let order: Vec<usize> = (done..done + copies).map(|k| k % samples).collect();
                    let pick = |t: &Tensor| blocks_in_order(t, &order, size);
                    let top = &self.layers[stochastic_from];
                    match &shared {
                        Some(SharedTop::Attention(shared)) => {
                            let attended = top.attention.forward_shared(shared, &order, size, Some(&mut pass))?;
                            top.feed_forward.forward(&attended, Some(&mut pass))?
                        }
                        Some(SharedTop::Output { transformed, attended }) => {
                            top.feed_forward.finish(&pick(transformed)?, &pick(attended)?, Some(&mut pass))?
                        }
                        None => self.encode(
                            pick(hidden)?,
                            &repeat(mask, copies)?,
                            &self.layers[stochastic_from..],
                            true,
                            Some(&mut pass),
                        )?,
                    }
                }
                None => {
                    let (hidden, mask) = self.embed(&repeated(copies)?, Some(&mut pass))?;
                    self.encode(hidden, &mask, &self.layers, true, Some(&mut pass))?
                }
            };
            outputs.push(self.head(&hidden, &repeat(&batch.mask, copies)?, Some(&mut pass))?.logits);
            done += copies;
        }
        let labels = self.labels.len();
        Ok(Tensor::cat(&outputs, 0)?.reshape((passes, size, labels))?)
    }
}

/// Pools hidden states `[B, T, H]` into `[B, H]`: the first token's state (`Cls`; the
/// classifier's `cls` head applies its dense layer and tanh on top) or the mean over the real
/// tokens (`Mean`), `padding` being the `[B, T]` 0/1 mask of real tokens.
pub fn pool(hidden: &Tensor, padding: &Tensor, pooling: Pooling) -> Result<Tensor> {
    Ok(match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let padding = padding.to_dtype(hidden.dtype())?;
            let summed = hidden.broadcast_mul(&padding.unsqueeze(2)?)?.sum(1)?;
            summed.broadcast_div(&padding.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?)?
        }
    })
}
