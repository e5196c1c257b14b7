//! The one training loop, for teachers and the student alike: seeded batches and dropout, the
//! warm-up-and-decay schedule, AdamW with clipping, the best epoch by validation accuracy, and
//! after every epoch a state saved atomically and metrics.jsonl rewritten from it, so that a
//! killed training resumes where it stopped and ends bit-identical. What is learnt comes from an
//! [`Objective`]: cross-entropy on labels for a teacher, a strategy's recipe for the student.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use workbench_models::{Checkpoint, ClassifierOptions, EncoderClassifier, ModelOutput, TextTokenizer};

use crate::{
    data::Example,
    files::{kill_point, write_atomically},
    training::teach::TrainingSettings,
    training::train::{
        accuracy, clip_gradients, dropout_pass, improves, shuffled_batches, AdamW, AdamWSettings, LinearSchedule,
    },
    Error, Result,
};

/// What a training learns: the loss of a batch, and any variables of its own.
pub trait Objective {
    /// The loss on the training items `indices`, given the model's output on their texts.
    fn loss(&mut self, indices: &[usize], output: &ModelOutput) -> Result<Tensor>;

    /// Variables beyond the model's that the optimizer trains (the student's feature adapters).
    fn extra_vars(&self) -> Vec<Var> {
        Vec::new()
    }

    /// Restores the extra variables from a saved state, in [`Objective::extra_vars`] order.
    fn restore(&mut self, _saved: &[Tensor]) -> Result<()> {
        Ok(())
    }
}

/// Saved after every epoch in `<dir>/state/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingState {
    pub epochs_done: usize,
    pub step: usize,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub epochs: Vec<EpochRecord>,
}

impl TrainingState {
    fn new() -> Self {
        Self { epochs_done: 0, step: 0, best_epoch: 0, best_validation_accuracy: -1.0, epochs: Vec::new() }
    }
}

/// One line of metrics.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_accuracy: f64,
    /// The rate of the epoch's last step.
    #[serde(default)]
    pub learning_rate: f64,
    pub seconds: f64,
}

/// The directory of the last complete state save: `state`, or `state.old` when a save was
/// killed between moving the old state aside and moving the new one in.
fn state_dir(dir: &Path) -> PathBuf {
    let current = dir.join("state");
    let previous = dir.join("state.old");
    if !current.join("state.json").is_file() && previous.join("state.json").is_file() {
        return previous;
    }
    current
}

/// Reads the saved training state in `dir`, if a killed training left one.
pub fn saved_state(dir: &Path) -> Result<Option<TrainingState>> {
    let path = state_dir(dir).join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    crate::files::read_json(&path, |e| Error::Artefact {
        path: path.clone(),
        reason: format!(
            "a corrupt training state ({e}); remove {} to start the training over",
            state_dir(dir).display()
        ),
    })
    .map(Some)
}

/// Removes the saved state once a training is published (the optimizer's moments are twice
/// the model's size and no longer needed).
pub fn remove_state(dir: &Path) -> Result<()> {
    for state in [dir.join("state"), dir.join("state.old"), dir.join("state.partial")] {
        if state.exists() {
            std::fs::remove_dir_all(&state).map_err(Error::io(format!("removing {}", state.display())))?;
        }
    }
    Ok(())
}

fn save_tensors(path: &Path, tensors: &[Tensor]) -> Result<()> {
    let named: HashMap<String, Tensor> =
        tensors.iter().enumerate().map(|(i, t)| (format!("t{i:05}"), t.clone())).collect();
    Ok(workbench_models::save_safetensors(&named, path)?)
}

fn load_tensors(path: &Path) -> Result<Vec<Tensor>> {
    let mut named: Vec<(String, Tensor)> = candle_core::safetensors::load(path, &Device::Cpu)?.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named.into_iter().map(|(_, t)| t).collect())
}

/// A training into `dir` (state, metrics.jsonl) whose best epoch's model goes to `best`.
pub struct Learner<'a> {
    pub settings: &'a TrainingSettings,
    pub dir: &'a Path,
    pub best: &'a Path,
    /// For the progress bar: what is being trained.
    pub what: &'a str,
}

impl Learner<'_> {
    /// The model to train: from the saved state when there is one, else from `base`.
    pub fn model(&self, base: &Checkpoint, options: &ClassifierOptions, device: &Device) -> Result<EncoderClassifier> {
        if saved_state(self.dir)?.is_none() {
            return Ok(base.classifier_for(options, device)?);
        }
        let saved = Checkpoint::open(&state_dir(self.dir).join("model"), self.settings.max_length, device)?;
        // The saved model already has the kept layers.
        Ok(saved.classifier_for(&ClassifierOptions { layers: None, ..options.clone() }, device)?)
    }

    /// Writes the state atomically: a killed save leaves the previous state readable.
    fn save_state(
        &self,
        model: &EncoderClassifier,
        tokenizer: &TextTokenizer,
        optimizer: &AdamW,
        extra: &[Var],
        state: &TrainingState,
    ) -> Result<()> {
        let partial = self.dir.join("state.partial");
        let _ = std::fs::remove_dir_all(&partial);
        model.save(&partial.join("model"), tokenizer)?;
        save_tensors(&partial.join("optimizer.safetensors"), &optimizer.state().0)?;
        let extra: Vec<Tensor> = extra.iter().map(|v| v.as_tensor().clone()).collect();
        save_tensors(&partial.join("extra.safetensors"), &extra)?;
        write_atomically(&partial.join("state.json"), serde_json::to_string_pretty(state).expect("state serializes"))?;
        let (target, old) = (self.dir.join("state"), self.dir.join("state.old"));
        let _ = std::fs::remove_dir_all(&old);
        if target.exists() {
            std::fs::rename(&target, &old).map_err(Error::io("replacing training state"))?;
        }
        // Killed here, `state.old` holds the previous state and is read in its place.
        if state.epochs_done > 1 {
            kill_point("state-save");
        }
        std::fs::rename(&partial, &target).map_err(Error::io("replacing training state"))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Trains `model` on the items whose texts are `texts`, resuming from the saved state when
    /// there is one; returns the final state (its best epoch's model is in `best`).
    pub fn train(
        &self,
        model: &EncoderClassifier,
        tokenizer: &TextTokenizer,
        texts: &[&str],
        validation: &[Example],
        objective: &mut dyn Objective,
    ) -> Result<TrainingState> {
        let settings = self.settings;
        let device = model.device().clone();
        std::fs::create_dir_all(self.dir).map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let extra = objective.extra_vars();
        let vars: Vec<Var> = model.vars().iter().chain(&extra).cloned().collect();
        let mut optimizer =
            AdamW::new(&vars, AdamWSettings { weight_decay: settings.weight_decay, ..AdamWSettings::default() })?;
        let mut state = TrainingState::new();
        if let Some(saved) = saved_state(self.dir)? {
            let saved_dir = state_dir(self.dir);
            optimizer.restore(&load_tensors(&saved_dir.join("optimizer.safetensors"))?, saved.step)?;
            objective.restore(&load_tensors(&saved_dir.join("extra.safetensors"))?)?;
            tracing::info!(epochs_done = saved.epochs_done, dir = %self.dir.display(), "resuming training");
            state = saved;
        }
        let steps_per_epoch = texts.len().div_ceil(settings.batch_size);
        let total = steps_per_epoch * settings.epochs;
        let schedule = LinearSchedule {
            peak: settings.learning_rate,
            warmup: ((total as f64) * settings.warmup).round() as usize,
            total,
        };
        let metrics_path = self.dir.join("metrics.jsonl");
        let bar = crate::progress::Progress::steps(total, self.what);
        bar.set_position(state.step as u64);
        for epoch in state.epochs_done..settings.epochs {
            let started = Instant::now();
            let mut total_loss = 0.0;
            let batches = shuffled_batches(texts.len(), settings.batch_size, settings.seed.wrapping_add(epoch as u64));
            for indices in &batches {
                let batch_texts: Vec<&str> = indices.iter().map(|&i| texts[i]).collect();
                let batch = tokenizer.batch(&batch_texts, &device)?;
                let mut pass = dropout_pass(settings.seed, state.step);
                let output = model.forward(&batch, Some(&mut pass))?;
                let loss = objective.loss(indices, &output)?;
                let mut grads = loss.backward()?;
                let value = loss.to_scalar::<f32>()? as f64;
                // The forward pass's tensors go before the optimizer step allocates its moments.
                drop((output, loss));
                clip_gradients(&mut grads, &vars, settings.max_grad_norm)?;
                optimizer.step(&grads, schedule.learning_rate(state.step))?;
                if epoch > 0 {
                    kill_point("training-step");
                }
                total_loss += value;
                state.step += 1;
                bar.inc(1);
                bar.set_message(format!("{} epoch {} loss {value:.4}", self.what, epoch + 1));
            }
            let train_loss = total_loss / batches.len().max(1) as f64;
            let validation_accuracy = accuracy(model, tokenizer, validation, 64, &device)?;
            let measured = if validation.is_empty() {
                "no validation texts".to_string()
            } else {
                format!("validation accuracy {validation_accuracy:.4}")
            };
            bar.println(format!("epoch {}: loss {train_loss:.4}, {measured}", epoch + 1));
            state.epochs_done = epoch + 1;
            state.epochs.push(EpochRecord {
                epoch: epoch + 1,
                train_loss,
                validation_accuracy,
                learning_rate: schedule.learning_rate(state.step.saturating_sub(1)),
                seconds: started.elapsed().as_secs_f64(),
            });
            if improves(validation_accuracy, state.best_validation_accuracy) {
                state.best_epoch = epoch + 1;
                state.best_validation_accuracy = validation_accuracy;
                model.save(self.best, tokenizer)?;
            }
            self.save_state(model, tokenizer, &optimizer, &extra, &state)?;
            kill_point("epoch-saved");
            // Rewritten from the saved state, so that a resumed training never repeats or loses a line.
            let lines: String =
                state.epochs.iter().map(|r| serde_json::to_string(r).expect("record serializes") + "\n").collect();
            write_atomically(&metrics_path, lines)?;
        }
        bar.finish();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_reads_back_bit_for_bit() {
        let awkward = [0.1 + 0.2, 1e-300, f64::MIN_POSITIVE, 0.8466666666666667, 1.0 / 3.0, 5e-324];
        let state = TrainingState {
            epochs_done: 2,
            step: 7,
            best_epoch: 1,
            best_validation_accuracy: awkward[3],
            epochs: awkward
                .iter()
                .enumerate()
                .map(|(i, &x)| EpochRecord {
                    epoch: i,
                    train_loss: x,
                    validation_accuracy: -x,
                    learning_rate: x * 3.0,
                    seconds: x / 7.0,
                })
                .collect(),
        };
        let back: TrainingState = serde_json::from_str(&serde_json::to_string_pretty(&state).unwrap()).unwrap();
        let bits = |s: &TrainingState| -> Vec<u64> {
            s.epochs
                .iter()
                .flat_map(|e| [e.train_loss, e.validation_accuracy, e.learning_rate, e.seconds])
                .map(f64::to_bits)
                .collect()
        };
        assert_eq!(bits(&back), bits(&state));
        assert_eq!(back, state);
    }

    #[test]
    fn a_state_save_killed_between_its_renames_is_read_from_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_state(dir.path()).unwrap(), None);
        let old = dir.path().join("state.old");
        std::fs::create_dir_all(&old).unwrap();
        let state = TrainingState { epochs_done: 1, ..TrainingState::new() };
        std::fs::write(old.join("state.json"), serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(saved_state(dir.path()).unwrap(), Some(state), "`state` is gone, `state.old` holds the last one");
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/state.json"), "{ torn").unwrap();
        let error = saved_state(dir.path()).unwrap_err().to_string();
        assert!(error.contains("state.json: a corrupt training state"), "{error}");
    }
}
