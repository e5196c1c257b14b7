//! Training pieces shared by teacher fine-tuning and student training: AdamW with decoupled
//! weight decay (its state is ours, so that training can resume), a linear warmup-and-decay
//! schedule, gradient clipping by global norm, batching and evaluation.

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use workbench_models::{EncoderClassifier, Precision, TextTokenizer};

use crate::{data::Example, Result};

#[derive(Debug, Clone, Copy)]
pub struct AdamWSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Moments {
    var: Var,
    first: Tensor,
    second: Tensor,
    /// Biases and layer-norm gains (1-D parameters) are not decayed.
    decay: bool,
}

pub struct AdamW {
    settings: AdamWSettings,
    moments: Vec<Moments>,
    steps: usize,
}

impl AdamW {
    pub fn new(vars: &[Var], settings: AdamWSettings) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|var| {
                Ok(Moments {
                    var: var.clone(),
                    first: var.zeros_like()?,
                    second: var.zeros_like()?,
                    decay: var.rank() > 1,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { settings, moments, steps: 0 })
    }

    /// The moments and step count, to save with the training state.
    pub fn state(&self) -> (Vec<Tensor>, usize) {
        (self.moments.iter().flat_map(|m| [m.first.clone(), m.second.clone()]).collect(), self.steps)
    }

    /// Restores what [`AdamW::state`] returned, for the same variables in the same order.
    pub fn restore(&mut self, moments: &[Tensor], steps: usize) -> Result<()> {
        if moments.len() != 2 * self.moments.len() {
            return Err(crate::Error::SavedState(format!(
                "its optimizer state has {} tensors, expected {}",
                moments.len(),
                2 * self.moments.len()
            )));
        }
        for (m, pair) in self.moments.iter_mut().zip(moments.chunks(2)) {
            m.first = pair[0].clone();
            m.second = pair[1].clone();
        }
        self.steps = steps;
        Ok(())
    }

    pub fn step(&mut self, grads: &GradStore, learning_rate: f64) -> Result<()> {
        self.steps += 1;
        let s = self.settings;
        let correction1 = 1.0 - s.beta1.powi(self.steps as i32);
        let correction2 = 1.0 - s.beta2.powi(self.steps as i32);
        for m in &mut self.moments {
            let Some(grad) = grads.get(&m.var) else { continue };
            m.first = ((&m.first * s.beta1)? + (grad * (1.0 - s.beta1))?)?;
            m.second = ((&m.second * s.beta2)? + (grad.sqr()? * (1.0 - s.beta2))?)?;
            let update = ((&m.first / correction1)? / ((&m.second / correction2)?.sqrt()? + s.eps)?)?;
            let decayed = if m.decay {
                (m.var.as_tensor() * (1.0 - learning_rate * s.weight_decay))?
            } else {
                m.var.as_tensor().clone()
            };
            m.var.set(&(decayed - (update * learning_rate)?)?)?;
        }
        Ok(())
    }
}

/// Linear warmup to `peak` over `warmup` steps, then linear decay to 0 at `total`.
#[derive(Debug, Clone, Copy)]
pub struct LinearSchedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl LinearSchedule {
    pub fn learning_rate(&self, step: usize) -> f64 {
        if step < self.warmup {
            self.peak * (step + 1) as f64 / self.warmup as f64
        } else {
            let remaining = self.total.saturating_sub(step) as f64;
            self.peak * remaining / (self.total - self.warmup).max(1) as f64
        }
    }
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_gradients(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut squared = 0.0f64;
    for var in vars {
        if let Some(grad) = grads.get(var) {
            squared += grad.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = squared.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for var in vars {
            if let Some(grad) = grads.remove(var) {
                grads.insert(var, (grad * scale)?);
            }
        }
    }
    Ok(norm)
}

/// The dropout masks of training step `step`: a function of the seed and the step alone, so
/// that a resumed run draws the same masks as an uninterrupted one.
pub fn dropout_pass(seed: u64, step: usize) -> workbench_models::StochasticPass {
    workbench_models::StochasticPass::new(seed.wrapping_mul(1_000_003).wrapping_add(step as u64))
}

/// Index batches of `size` over `count` items, shuffled with `seed`.
pub fn shuffled_batches(count: usize, size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Predicted label indices of `model` for `texts`, dropout off.
pub fn predict(
    model: &EncoderClassifier,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<u32>> {
    let mut predictions = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let batch = tokenizer.batch(chunk, device)?;
        let logits = model.forward(&batch, None)?.logits.detach();
        predictions.extend(logits.argmax(1)?.to_vec1::<u32>()?);
    }
    Ok(predictions)
}

/// Sets a trained model's precision for its evaluation, warning where bf16 cannot run.
pub fn evaluate_at(model: &mut EncoderClassifier, precision: Precision) -> Result<()> {
    let in_effect = model.set_precision(precision)?;
    if in_effect != precision {
        tracing::warn!("{precision} evaluation needs a CPU with AVX512-BF16: evaluating in {in_effect}");
    }
    Ok(())
}

/// Whether an epoch's validation accuracy makes it the best so far. Ties go to the later epoch:
/// small validation sets tie often, and an undertrained early epoch has flat, low-confidence
/// logits (a quickstart teacher kept its first epoch and its logits lost every comparison with
/// the other teacher's).
pub fn improves(validation_accuracy: f64, best_so_far: f64) -> bool {
    validation_accuracy >= best_so_far
}

/// Accuracy of `model` on `examples`, whose labels are mapped through the model's labels.
pub fn accuracy(
    model: &EncoderClassifier,
    tokenizer: &TextTokenizer,
    examples: &[Example],
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    if examples.is_empty() {
        return Ok(0.0);
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let predictions = predict(model, tokenizer, &texts, batch_size, device)?;
    // A label the model does not have is never predicted.
    let gold: Vec<u32> = examples
        .iter()
        .map(|e| model.labels().iter().position(|l| *l == e.label).map_or(u32::MAX, |i| i as u32))
        .collect();
    Ok(crate::evaluate::accuracy(&predictions, &gold, None))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn ties_in_validation_accuracy_go_to_the_later_epoch() {
        assert!(improves(0.5, -1.0), "the first epoch always counts");
        assert!(improves(0.8889, 0.8889));
        assert!(improves(0.9, 0.8889));
        assert!(!improves(0.8333, 0.8889));
    }

    #[test]
    fn schedule_warms_up_then_decays_linearly() {
        let schedule = LinearSchedule { peak: 1.0, warmup: 4, total: 12 };
        let rates: Vec<f64> = (0..12).map(|s| schedule.learning_rate(s)).collect();
        assert_eq!(&rates[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(rates[4], 1.0);
        assert_eq!(rates[8], 0.5);
        assert_eq!(rates[11], 0.125);
    }

    #[test]
    fn clipping_scales_to_the_maximum_global_norm() {
        let a = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let b = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
        // loss = 3 a0 + 0 a1 + 4 b0: gradient norm sqrt(9 + 16) = 5
        let loss = ((a.as_tensor() * Tensor::new(&[3f32, 0.0], &Device::Cpu).unwrap()).unwrap().sum_all().unwrap()
            + (b.as_tensor() * 4.0).unwrap().sum_all().unwrap())
        .unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_gradients(&mut grads, &[a.clone(), b.clone()], 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let ga = grads.get(&a).unwrap().to_vec1::<f32>().unwrap();
        assert!((ga[0] - 0.6).abs() < 1e-5 && ga[1] == 0.0, "{ga:?}");
        assert!((grads.get(&b).unwrap().to_vec1::<f32>().unwrap()[0] - 0.8).abs() < 1e-5);
    }

    #[test]
    fn adamw_first_step_moves_by_the_learning_rate_against_the_gradient_sign() {
        // Bias-corrected first step: m/(1-b1) = g, v/(1-b2) = g², update = g/|g| = sign(g).
        // The 2-D weight also decays: 1 * (1 - 0.1 * 0.5) - 0.1 = 0.85; the 1-D bias does not: 1 - 0.1 = 0.9.
        let weight = Var::ones((1, 1), DType::F32, &Device::Cpu).unwrap();
        let bias = Var::ones(1, DType::F32, &Device::Cpu).unwrap();
        let loss = ((weight.as_tensor().sum_all().unwrap() * 2.0).unwrap()
            + (bias.as_tensor().sum_all().unwrap() * 0.5).unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let settings = AdamWSettings { weight_decay: 0.5, ..AdamWSettings::default() };
        let mut optimizer = AdamW::new(&[weight.clone(), bias.clone()], settings).unwrap();
        optimizer.step(&grads, 0.1).unwrap();
        assert!((weight.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] - 0.85).abs() < 1e-5);
        assert!((bias.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.9).abs() < 1e-5);
    }

    #[test]
    fn batches_cover_every_item_once_and_follow_the_seed() {
        let batches = shuffled_batches(10, 4, 7);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(batches, shuffled_batches(10, 4, 7));
        assert_ne!(batches, shuffled_batches(10, 4, 8));
    }
}
