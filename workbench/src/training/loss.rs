//! Turns a strategy's recipe into a differentiable loss against the student. The host owns
//! autograd and the learnable adapters of feature terms; strategies only describe targets.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{ops::log_softmax, Linear, Module};
use rand::{rngs::StdRng, Rng, SeedableRng};
use workbench_plugin_api::{math::x_ln_x, DistributionTerm, FeatureMatch, FeatureTerm, Recipe, Term};

use crate::{Error, Result};

/// What the student produced for a batch.
pub struct StudentOutput<'a> {
    /// `[B, U]` logits over the union labels.
    pub logits: &'a Tensor,
    /// `[B, H]` pooled hidden state, needed by feature terms.
    pub hidden: Option<&'a Tensor>,
}

/// A plain-data tensor of the API as a candle tensor.
pub fn to_candle(tensor: &workbench_plugin_api::Tensor, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(tensor.data(), tensor.shape(), device)?)
}

/// `scale * mean_b(w_b * KL(target_b || softmax(student_b[labels] / T)))`, with 0 ln 0 = 0.
pub fn distribution_loss(term: &DistributionTerm, logits: &Tensor) -> Result<Tensor> {
    let device = logits.device();
    let (batch, width) = (term.target.shape()[0], term.labels.len());
    let labels = Tensor::from_slice(term.labels.as_slice(), width, device)?;
    let restricted = logits.index_select(&labels, 1)?;
    let log_q = log_softmax(&(restricted / term.temperature as f64)?, D::Minus1)?;
    let target = to_candle(&term.target, device)?;
    // Σ p ln p is a constant of the target: computed here so that zeros contribute exactly 0.
    let neg_entropy: Vec<f32> = (0..batch).map(|b| term.target.at(&[b]).iter().copied().map(x_ln_x).sum()).collect();
    let cross = (target * log_q)?.sum(1)?;
    let kl = (Tensor::from_vec(neg_entropy, batch, device)? - cross)?;
    let weighted = match term.weights() {
        Some(weights) => (kl * Tensor::from_slice(weights, batch, device)?)?,
        None => kl,
    };
    Ok((weighted.mean(0)? * term.scale as f64)?)
}

/// The learnable pieces of one feature term: an auto-encoder of the teacher features and a
/// projection of the student's hidden state into the same code space.
struct Adapter {
    encoder: Linear,
    decoder: Linear,
    projection: Linear,
}

/// Host-owned adapters of feature terms, keyed by term name, created at first sight with a
/// seeded initialisation. Their variables must join the optimizer: create them (one recipe on
/// a first batch) before building it.
pub struct FeatureAdapters {
    adapters: BTreeMap<String, Adapter>,
    vars: Vec<Var>,
    rng: StdRng,
    device: Device,
}

impl FeatureAdapters {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self { adapters: BTreeMap::new(), vars: Vec::new(), rng: StdRng::seed_from_u64(seed), device: device.clone() }
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Overwrites the adapters' values (same creation order), when resuming.
    pub fn restore(&self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.vars.len() {
            return Err(Error::SavedState(format!(
                "its feature adapters have {} tensors, expected {}",
                values.len(),
                self.vars.len()
            )));
        }
        for (var, value) in self.vars.iter().zip(values) {
            var.set(value)?;
        }
        Ok(())
    }

    /// A linear layer with uniform(-1/sqrt(in), 1/sqrt(in)) weights and zero bias.
    fn linear(&mut self, input: usize, output: usize) -> Result<Linear> {
        let bound = 1.0 / (input as f32).sqrt();
        let weights: Vec<f32> = (0..input * output).map(|_| self.rng.random_range(-bound..bound)).collect();
        let weight = Var::from_tensor(&Tensor::from_vec(weights, (output, input), &self.device)?)?;
        let bias = Var::zeros(output, DType::F32, &self.device)?;
        let layer = Linear::new(weight.as_tensor().clone(), Some(bias.as_tensor().clone()));
        self.vars.extend([weight, bias]);
        Ok(layer)
    }

    fn get(&mut self, term: &FeatureTerm, student_width: usize) -> Result<&Adapter> {
        let (width, code) = (term.target.shape()[1], term.code_dim as usize);
        if !self.adapters.contains_key(term.name.as_str()) {
            let adapter = Adapter {
                encoder: self.linear(width, code)?,
                decoder: self.linear(code, width)?,
                projection: self.linear(student_width, code)?,
            };
            self.adapters.insert(term.name.to_string(), adapter);
        }
        let adapter = &self.adapters[term.name.as_str()];
        let expected = adapter.encoder.weight().dims2()?.1;
        if expected != width {
            return Err(Error::Recipe(format!(
                "feature term `{}` changed width from {expected} to {width} between batches",
                term.name
            )));
        }
        Ok(adapter)
    }
}

/// Squared Euclidean distances between the rows of `x` `[n, d]` and `y` `[m, d]`.
fn squared_distances(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let x2 = x.sqr()?.sum_keepdim(1)?;
    let y2 = y.sqr()?.sum_keepdim(1)?.t()?;
    Ok(x2.broadcast_add(&y2)?.broadcast_sub(&(x.matmul(&y.t()?)? * 2.0)?)?)
}

/// Multiples of the data's own scale used as the Gaussian kernels' bandwidths of the MMD.
const MMD_BANDWIDTH_MULTIPLIERS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// The MMD's base bandwidth: the mean squared distance between distinct rows of both batches
/// together (as Long et al.'s DAN), outside the gradient, so that the kernels follow the codes'
/// scale as training moves it; 1 when every row is the same.
fn base_bandwidth(x: &Tensor, y: &Tensor) -> Result<f64> {
    let joint = Tensor::cat(&[x.detach(), y.detach()], 0)?;
    let n = joint.dim(0)?;
    if n < 2 {
        return Ok(1.0);
    }
    // The diagonal is zero, so the sum over all pairs is the sum over distinct ones.
    let total = f64::from(squared_distances(&joint, &joint)?.sum_all()?.to_scalar::<f32>()?);
    let mean = total / (n * (n - 1)) as f64;
    Ok(if mean > 0.0 { mean } else { 1.0 })
}

fn kernel_mean(x: &Tensor, y: &Tensor, base: f64) -> Result<Tensor> {
    let distances = squared_distances(x, y)?;
    let mut sum: Option<Tensor> = None;
    for multiplier in MMD_BANDWIDTH_MULTIPLIERS {
        let k = (distances.clone() * (-1.0 / (base * multiplier)))?.exp()?;
        sum = Some(match sum {
            Some(s) => (s + k)?,
            None => k,
        });
    }
    Ok(sum.expect("at least one bandwidth").mean_all()?)
}

/// Multi-kernel MMD² between two batches of codes: kernels exp(-d² / (b m)) for the base
/// bandwidth b of the data and the multipliers m.
pub fn mmd(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let base = base_bandwidth(x, y)?;
    Ok(((kernel_mean(x, x, base)? + kernel_mean(y, y, base)?)? - (kernel_mean(x, y, base)? * 2.0)?)?)
}

fn feature_loss(term: &FeatureTerm, hidden: &Tensor, adapters: &mut FeatureAdapters) -> Result<Tensor> {
    let adapter = adapters.get(term, hidden.dims2()?.1)?;
    let target = to_candle(&term.target, hidden.device())?;
    let teacher_code = adapter.encoder.forward(&target)?;
    let student_code = adapter.projection.forward(hidden)?;
    // The code is a target: matching moves the student towards it, never the code towards the
    // student (which would let encoder and projection both collapse to zero); the encoder learns
    // from the reconstruction alone.
    let fixed_code = teacher_code.detach();
    let matched = match term.matching {
        FeatureMatch::Mse => (student_code - &fixed_code)?.sqr()?.mean_all()?,
        FeatureMatch::Mmd => mmd(&student_code, &fixed_code)?,
    };
    let reconstruction = (adapter.decoder.forward(&teacher_code)? - target)?.sqr()?.mean_all()?;
    Ok(((matched * term.weight as f64)? + (reconstruction * term.reconstruction_weight as f64)?)?)
}

/// The sum of the losses of every term of `recipe`.
pub fn recipe_loss(recipe: &Recipe, student: &StudentOutput<'_>, adapters: &mut FeatureAdapters) -> Result<Tensor> {
    let mut total = Tensor::zeros((), DType::F32, student.logits.device())?;
    for term in recipe.terms.iter() {
        let loss = match term {
            Term::Distribution(d) => distribution_loss(d, student.logits)?,
            Term::Feature(f) => {
                let hidden = student.hidden.ok_or_else(|| {
                    Error::Recipe(format!("feature term `{}` needs the student's hidden state", f.name))
                })?;
                feature_loss(f, hidden, adapters)?
            }
        };
        total = (total + loss)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
