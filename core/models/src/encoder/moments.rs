//! Moment propagation: one pass that carries the mean and the variance of every activation under
//! Monte-Carlo dropout (every dropout on), in place of sampled passes. As in the usual
//! approximation, values are taken as independent of one another (a linear layer's variance is
//! `W² v`, a residual's the sum of both), the attention probabilities and the layer norms'
//! statistics come from the means, and the activations are linearised (`f(μ)`, `f'(μ)² v`). The
//! logits' means and variances make a Gaussian; samples of it stand for Monte-Carlo passes.

use candle_core::{Tensor, D};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::{Dropout, EncoderClassifier, FeedForward, Head, LayerNorm, Linear, SelfAttention};
use crate::{family::Activation, kernels, Batch, Pooling, Precision, Result};

/// Means and variances of a tensor's values, of the same shape.
pub(crate) struct Moments {
    pub mean: Tensor,
    pub var: Tensor,
}

impl Moments {
    /// A residual connection: `self + other`, the two independent.
    fn plus(&self, other: &Moments) -> Result<Moments> {
        Ok(Moments { mean: (&self.mean + &other.mean)?, var: (&self.var + &other.var)? })
    }

    /// Through an activation with value `f(mean)` and slope `slope = f'(mean)`.
    fn through(&self, value: Tensor, slope: Tensor) -> Result<Moments> {
        Ok(Moments { mean: value, var: (slope.sqr()? * &self.var)? })
    }
}

impl Dropout {
    /// Inverted dropout keeps the mean; the variance becomes `E[x²] / (1 - p) - μ²`, written as
    /// `v / (1 - p) + μ² p / (1 - p)` so that no large terms cancel.
    pub(crate) fn moments(&self, x: &Moments) -> Result<Moments> {
        if self.p == 0.0 {
            return Ok(Moments { mean: x.mean.clone(), var: x.var.clone() });
        }
        let keep = 1.0 - f64::from(self.p);
        let var = ((&x.var / keep)? + (x.mean.sqr()? * (f64::from(self.p) / keep))?)?;
        Ok(Moments { mean: x.mean.clone(), var })
    }
}

impl Linear {
    /// `W μ + b` and `W² v`, at `precision`.
    fn moments(&self, x: &Moments, precision: Precision) -> Result<Moments> {
        Ok(Moments { mean: self.forward(&x.mean)?, var: self.variance(&x.var, precision)? })
    }

    /// `W² v`: the variance out of independent inputs of variance `v`.
    fn variance(&self, var: &Tensor, precision: Precision) -> Result<Tensor> {
        let mut squared = Linear::new(self.weight.sqr()?, self.bias.zeros_like()?);
        squared.set_precision(precision)?;
        squared.forward(var)
    }
}

impl LayerNorm {
    /// Normalises by the expected spread of the values, `var(μ) + mean(v)` over the features, and
    /// scales the variances by the square of what scales the means.
    pub(crate) fn moments(&self, x: &Moments) -> Result<Moments> {
        let centred = x.mean.broadcast_sub(&x.mean.mean_keepdim(D::Minus1)?)?;
        let spread = (centred.sqr()?.mean_keepdim(D::Minus1)? + x.var.mean_keepdim(D::Minus1)?)?;
        let inverse_std = (spread + self.eps)?.sqrt()?.recip()?;
        let mean = centred.broadcast_mul(&inverse_std)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?;
        let var = x.var.broadcast_mul(&inverse_std.sqr()?)?.broadcast_mul(&self.weight.sqr()?)?;
        Ok(Moments { mean, var })
    }
}

impl SelfAttention {
    /// The probabilities come from the means; with `P` fixed and attention dropout `p`, a
    /// context value `Σ_j P_j m_j / (1 - p) V_j` has variance `Σ_j P_j² (v_j + μ_j² p) / (1 - p)`.
    fn moments(&self, x: &Moments, mask: &Tensor, precision: Precision) -> Result<Moments> {
        let (batch, positions, hidden) = x.mean.dims3()?;
        let head_dim = hidden / self.heads;
        let projections = self.project(&x.mean, false)?;
        let probs = self.probabilities(&projections, mask)?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((batch, positions, self.heads, head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let merge = |t: Tensor| -> Result<Tensor> { Ok(t.transpose(1, 2)?.reshape((batch, positions, hidden))?) };
        let values = Moments { mean: projections.v, var: split(self.value.variance(&x.var, precision)?)? };
        let dropped = self.attention_dropout.moments(&values)?;
        let context = Moments {
            mean: merge(probs.matmul(&dropped.mean)?)?,
            var: merge(probs.sqr()?.matmul(&dropped.var)?)?,
        };
        let output = self.output.moments(&context, precision)?;
        self.norm.moments(&self.hidden_dropout.moments(&output)?.plus(x)?)
    }
}

impl FeedForward {
    fn moments(&self, x: &Moments, precision: Precision) -> Result<Moments> {
        let inner = self.intermediate.moments(x, precision)?;
        let activated = inner.through(kernels::gelu(&inner.mean)?, kernels::gelu_slope(&inner.mean)?)?;
        let output = self.output.moments(&activated, precision)?;
        self.norm.moments(&self.dropout.moments(&output)?.plus(x)?)
    }
}

impl Head {
    /// The logits' moments from the top layer's, `padding` the `[B, T]` mask of real tokens. Mean
    /// pooling averages `n` independent positions: the variance of the mean is `Σ v / n²`.
    fn moments(&self, top: &Moments, padding: &Tensor, pooling: Pooling, precision: Precision) -> Result<Moments> {
        let mut pooled = Moments {
            mean: super::pool(&top.mean, padding, pooling)?,
            var: match pooling {
                Pooling::Cls => top.var.narrow(1, 0, 1)?.squeeze(1)?,
                Pooling::Mean => {
                    let padding = padding.to_dtype(top.var.dtype())?;
                    let count = padding.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?;
                    top.var.broadcast_mul(&padding.unsqueeze(2)?)?.sum(1)?.broadcast_div(&count.sqr()?)?
                }
            },
        };
        if let Some((dense, activation)) = &self.dense {
            if self.dropout_before_dense {
                pooled = self.dropout.moments(&pooled)?;
            }
            let dense = dense.moments(&pooled, precision)?;
            pooled = match activation {
                Activation::Tanh => {
                    let value = dense.mean.tanh()?;
                    let slope = (value.sqr()?.neg()? + 1.0)?;
                    dense.through(value, slope)?
                }
                Activation::Relu => {
                    let slope = dense.mean.gt(0.0)?.to_dtype(dense.mean.dtype())?;
                    dense.through(dense.mean.relu()?, slope)?
                }
            };
        }
        self.classifier.moments(&self.dropout.moments(&pooled)?, precision)
    }
}

impl EncoderClassifier {
    /// The precision the linear layers run at (see [`EncoderClassifier::set_precision`]).
    fn precision(&self) -> Precision {
        if self.head.classifier.packed.is_some() {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    }

    /// Means and variances of the logits under Monte-Carlo dropout with every dropout on,
    /// `[B, L]` each, from one moment-propagating pass (see the module's notes).
    pub(crate) fn logit_moments(&self, batch: &Batch) -> Result<Moments> {
        let precision = self.precision();
        let (embedded, mask) = self.embed(batch, None)?;
        let mut hidden = self.embeddings.dropout.moments(&Moments { var: embedded.zeros_like()?, mean: embedded })?;
        for layer in &self.layers {
            hidden = layer.attention.moments(&hidden, &mask, precision)?;
            hidden = layer.feed_forward.moments(&hidden, precision)?;
        }
        self.head.moments(&hidden, &batch.mask, self.pooling, precision)
    }

    /// `passes` samples `[passes, B, L]` of the Gaussian over the logits that
    /// [`EncoderClassifier::logit_moments`] gives, reproducible from `seed`: Monte-Carlo dropout
    /// passes for the cost of about one pass.
    pub fn moment_samples(&self, batch: &Batch, passes: usize, seed: u64) -> Result<Tensor> {
        let moments = self.logit_moments(batch)?;
        let (size, labels) = moments.mean.dims2()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let noise: Vec<f32> = (0..passes * size * labels).map(|_| StandardNormal.sample(&mut rng)).collect();
        let noise = Tensor::from_vec(noise, (passes, size, labels), moments.mean.device())?;
        Ok(noise.broadcast_mul(&moments.var.sqrt()?)?.broadcast_add(&moments.mean)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::Moments;
    use crate::{
        encoder::{Dropout, LayerNorm},
        tests::{options, tiny, TEXTS},
        Checkpoint, ClassifierOptions, EncoderClassifier, McDepth, Pooling,
    };

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_all_close(got: &[f32], expected: &[f32], tolerance: f32) {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() <= tolerance, "got {got:?}, expected {expected:?}");
        }
    }

    #[test]
    fn dropout_keeps_the_mean_and_adds_the_kept_values_spread() {
        let x = Moments { mean: tensor(&[1.0, -2.0, 0.0]), var: tensor(&[0.5, 0.0, 0.3]) };
        let out = Dropout::new(0.1).moments(&x).unwrap();
        assert_eq!(values(&out.mean), [1.0, -2.0, 0.0]);
        // v / 0.9 + μ² 0.1 / 0.9
        assert_all_close(&values(&out.var), &[0.6 / 0.9, 0.4 / 0.9, 0.3 / 0.9], 1e-6);
        assert_eq!(values(&Dropout::new(0.0).moments(&x).unwrap().var), [0.5, 0.0, 0.3]);
    }

    #[test]
    fn layer_norm_divides_by_the_expected_spread() {
        let norm = LayerNorm { weight: tensor(&[1.0, 2.0]), bias: tensor(&[0.0, 1.0]), eps: 0.0 };
        let x = Moments { mean: tensor(&[1.0, 3.0]), var: tensor(&[0.5, 1.5]) };
        let out = norm.moments(&x).unwrap();
        // Centred means -1, 1; spread 1 (of the means) + 1 (mean variance) = 2.
        let root_half = 0.5f32.sqrt();
        assert_all_close(&values(&out.mean), &[-root_half, 2.0 * root_half + 1.0], 1e-6);
        assert_all_close(&values(&out.var), &[0.5 / 2.0, 1.5 / 2.0 * 4.0], 1e-6);
    }

    fn classifier(checkpoint: &Checkpoint, pooling: Pooling) -> EncoderClassifier {
        let options = ClassifierOptions { pooling: Some(pooling), ..options(None, false) };
        checkpoint.classifier_for(&options, &Device::Cpu).unwrap()
    }

    #[test]
    fn without_dropout_the_means_are_the_deterministic_logits_and_nothing_varies() {
        let (dir, _) = tiny();
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["hidden_dropout_prob"] = 0.0.into();
        config["attention_probs_dropout_prob"] = 0.0.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let checkpoint = Checkpoint::open(dir.path(), 16, &Device::Cpu).unwrap();
        for pooling in [Pooling::Cls, Pooling::Mean] {
            let model = classifier(&checkpoint, pooling);
            let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
            let moments = model.logit_moments(&batch).unwrap();
            assert_all_close(&values(&moments.mean), &values(&model.forward(&batch, None).unwrap().logits), 1e-6);
            assert!(values(&moments.var).iter().all(|&v| v == 0.0), "{pooling:?}");
        }
    }

    /// Against 8,000 real dropout passes of the tiny model (a variance to about 1.6 %): the means
    /// agree to a tenth of the logits' spread, the variances to 12 % under mean pooling (measured:
    /// 1-9 %, high) and 25 % under `cls` (measured: 2-18 %, either side: the tanh is linearised,
    /// and one position's values are not averaged).
    #[test]
    fn the_propagated_moments_match_many_dropout_passes() {
        let (_dir, checkpoint) = tiny();
        for (pooling, variance_tolerance) in [(Pooling::Mean, 0.12), (Pooling::Cls, 0.25)] {
            let model = classifier(&checkpoint, pooling);
            let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
            let moments = model.logit_moments(&batch).unwrap();
            let passes = model.mc_logits(&batch, 8_000, 3, McDepth::default()).unwrap();
            let mean = passes.mean(0).unwrap();
            let var = passes.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap();
            for ((got_mean, got_var), (mc_mean, mc_var)) in values(&moments.mean)
                .into_iter()
                .zip(values(&moments.var))
                .zip(values(&mean).into_iter().zip(values(&var)))
            {
                let spread = mc_var.sqrt();
                assert!((got_mean - mc_mean).abs() < 0.1 * spread, "{pooling:?}: mean {got_mean} against {mc_mean}");
                let relative = (got_var - mc_var).abs() / mc_var;
                assert!(relative < variance_tolerance, "{pooling:?}: variance {got_var} against {mc_var}");
            }
        }
    }

    #[test]
    fn samples_follow_their_seed_and_have_the_propagated_moments() {
        let (_dir, checkpoint) = tiny();
        let model = classifier(&checkpoint, Pooling::Mean);
        let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
        let samples = model.moment_samples(&batch, 4_000, 7).unwrap();
        assert_eq!(samples.dims(), &[4_000, 3, 3]);
        assert_eq!(values(&samples), values(&model.moment_samples(&batch, 4_000, 7).unwrap()));
        assert_ne!(values(&samples), values(&model.moment_samples(&batch, 4_000, 8).unwrap()));
        let moments = model.logit_moments(&batch).unwrap();
        let mean = samples.mean(0).unwrap();
        let var = samples.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap();
        for ((m, v), (sample_mean, sample_var)) in values(&moments.mean)
            .into_iter()
            .zip(values(&moments.var))
            .zip(values(&mean).into_iter().zip(values(&var)))
        {
            // Four standard errors of a mean and of a variance over 4,000 samples.
            assert!((sample_mean - m).abs() < 4.0 * (v / 4_000.0).sqrt(), "mean {sample_mean} against {m}");
            assert!((sample_var - v).abs() < 4.0 * v * (2.0f32 / 4_000.0).sqrt(), "variance {sample_var} against {v}");
        }
    }
}
