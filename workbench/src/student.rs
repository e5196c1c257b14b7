//! Student training: batches of cached teacher signals go through the strategy plugin; the
//! recipe becomes a loss against the student; state is saved after every epoch so that a
//! killed run resumes where it stopped and ends with the same numbers.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use abi_stable::std_types::{ROption, RString};
use candle_core::{Device, Tensor as CandleTensor};
use serde::{Deserialize, Serialize};
use workbench_models::{BertClassifier, Checkpoint, ClassifierOptions};
use workbench_plugin_api::{LabelSpace, StrategyInput, TeacherSignals, Tensor};

use crate::{
    data::Example,
    host::StrategyHandle,
    loss::{recipe_loss, FeatureAdapters, StudentOutput},
    signals::TeacherSignalSet,
    teach::{model_dir, TrainingSettings},
    train::{accuracy, clip_gradients, dropout_pass, shuffled_batches, AdamW, AdamWSettings, LinearSchedule},
    Error, Result,
};

/// The cached signals of every teacher over the training texts.
pub struct TrainingSignals<'a> {
    pub names: &'a [String],
    pub texts: &'a [RString],
    /// Deterministic signals, one per teacher: logits `[1, N, L_t]`, hidden `[N, H_t]`.
    pub teachers: &'a [TeacherSignalSet],
    /// `[N, T]` certainty scores.
    pub scores: Option<&'a Tensor>,
    pub labels: &'a LabelSpace,
}

/// The rows `indices` of a row-major `[N, width]` block of values.
fn rows(values: &[f32], width: usize, indices: &[usize]) -> Tensor {
    let data: Vec<f32> = indices.iter().flat_map(|&i| values[i * width..(i + 1) * width].iter().copied()).collect();
    Tensor::new(vec![indices.len(), width], data).expect("rows of equal width")
}

impl TrainingSignals<'_> {
    /// What the strategy sees of the instances `indices`.
    pub fn strategy_input(&self, indices: &[usize]) -> StrategyInput {
        let teachers = self
            .teachers
            .iter()
            .zip(self.names)
            .zip(&self.labels.maps)
            .map(|((signals, name), map)| TeacherSignals {
                name: name.as_str().into(),
                label_map: map.clone().into(),
                // Pass 0 of `[1, N, L]`: the deterministic logits.
                logits: rows(signals.logits.at(&[0]), signals.logits.shape()[2], indices),
                hidden: signals.hidden.as_ref().map(|h| rows(h.data(), h.shape()[1], indices)).into(),
            })
            .collect();
        StrategyInput {
            union_labels: self.labels.labels.iter().map(|l| RString::from(l.as_str())).collect(),
            teachers,
            scores: self.scores.map(|s| rows(s.data(), s.shape()[1], indices)).map_or(ROption::RNone, ROption::RSome),
        }
    }
}

/// Saved after every epoch in `<run>/state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingState {
    pub epochs_done: usize,
    pub step: usize,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub epochs: Vec<EpochRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_accuracy: f64,
    pub seconds: f64,
}

pub struct StudentOutcome {
    pub model: BertClassifier,
    pub tokenizer: workbench_models::TextTokenizer,
    pub state: TrainingState,
}

fn save_tensors(path: &Path, tensors: &[CandleTensor]) -> Result<()> {
    let named: HashMap<String, CandleTensor> =
        tensors.iter().enumerate().map(|(i, t)| (format!("t{i:05}"), t.clone())).collect();
    Ok(workbench_models::save_safetensors(&named, path)?)
}

fn load_tensors(path: &Path) -> Result<Vec<CandleTensor>> {
    let mut named: Vec<(String, CandleTensor)> =
        candle_core::safetensors::load(path, &Device::Cpu)?.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named.into_iter().map(|(_, t)| t).collect())
}

struct Trainer {
    model: BertClassifier,
    adapters: FeatureAdapters,
    optimizer: AdamW,
}

impl Trainer {
    /// Writes `<run>/state` atomically: a killed save leaves the previous state intact.
    fn save_state(&self, run: &Path, state: &TrainingState, tokenizer: &workbench_models::TextTokenizer) -> Result<()> {
        let partial = run.join("state.partial");
        let _ = std::fs::remove_dir_all(&partial);
        self.model.save(&partial.join("student"), tokenizer)?;
        let (moments, _) = self.optimizer.state();
        save_tensors(&partial.join("optimizer.safetensors"), &moments)?;
        let adapters: Vec<CandleTensor> = self.adapters.vars().iter().map(|v| v.as_tensor().clone()).collect();
        save_tensors(&partial.join("adapters.safetensors"), &adapters)?;
        let json = serde_json::to_string_pretty(state).expect("state serializes");
        std::fs::write(partial.join("state.json"), json).map_err(Error::io("writing training state"))?;
        let target = run.join("state");
        let old = run.join("state.old");
        let _ = std::fs::remove_dir_all(&old);
        if target.exists() {
            std::fs::rename(&target, &old).map_err(Error::io("replacing training state"))?;
        }
        // Killed here, `state.old` holds the previous state and is read in its place.
        if state.epochs_done > 1 {
            crate::files::kill_point("state-save");
        }
        std::fs::rename(&partial, &target).map_err(Error::io("replacing training state"))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

/// The directory of the last complete state save: `state`, or `state.old` when a save was
/// killed between moving the old state aside and moving the new one in.
fn state_dir(run: &Path) -> PathBuf {
    let current = run.join("state");
    let previous = run.join("state.old");
    if !current.join("state.json").is_file() && previous.join("state.json").is_file() {
        return previous;
    }
    current
}

/// Reads the saved training state, if a previous run left one.
pub fn saved_state(run: &Path) -> Result<Option<TrainingState>> {
    let path = state_dir(run).join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Loss(format!("{}: corrupt training state ({e})", path.display())))
}

/// Trains the student from `signals` with `strategy`, resuming from `<run>/state` when present.
pub fn train_student(
    settings: &TrainingSettings,
    strategy: &StrategyHandle,
    signals: &TrainingSignals<'_>,
    validation: &[Example],
    cache: &Path,
    run: &Path,
) -> Result<StudentOutcome> {
    let device = Device::Cpu;
    let resume = saved_state(run)?;
    let base = Checkpoint::open(&model_dir(&settings.model, cache)?, settings.max_length, &device)?;
    let options = ClassifierOptions {
        labels: signals.labels.labels.clone(),
        layers: settings.layers,
        seed: settings.seed,
        trainable: true,
        freeze_word_embeddings: settings.freeze_word_embeddings,
        pooling: settings.pooling,
    };
    let model = match &resume {
        Some(_) => {
            let saved = Checkpoint::open(&state_dir(run).join("student"), settings.max_length, &device)?;
            saved.classifier_for(&ClassifierOptions { layers: None, ..options }, &device)?
        }
        None => base.classifier_for(&options, &device)?,
    };
    let tokenizer = base.tokenizer;
    let count = signals.texts.len();
    // One recipe on a first batch creates the feature adapters, whose variables must join the optimizer.
    let mut adapters = FeatureAdapters::new(settings.seed ^ 0xada9, &device);
    let probe: Vec<usize> = (0..count.min(settings.batch_size)).collect();
    let probe_batch =
        tokenizer.batch(&probe.iter().map(|&i| signals.texts[i].as_str()).collect::<Vec<_>>(), &device)?;
    let probe_output = model.forward(&probe_batch, None)?;
    let probe_recipe = strategy.recipe(&signals.strategy_input(&probe))?;
    recipe_loss(
        &probe_recipe,
        &StudentOutput { logits: &probe_output.logits, hidden: Some(&probe_output.pooled) },
        &mut adapters,
    )?;
    let vars: Vec<_> = model.vars().iter().chain(adapters.vars()).cloned().collect();
    let mut optimizer =
        AdamW::new(&vars, AdamWSettings { weight_decay: settings.weight_decay, ..AdamWSettings::default() })?;
    let mut state =
        TrainingState { epochs_done: 0, step: 0, best_epoch: 0, best_validation_accuracy: -1.0, epochs: Vec::new() };
    if let Some(saved) = resume {
        optimizer.restore(&load_tensors(&state_dir(run).join("optimizer.safetensors"))?, saved.step)?;
        adapters.restore(&load_tensors(&state_dir(run).join("adapters.safetensors"))?)?;
        tracing::info!(epochs_done = saved.epochs_done, "resuming student training");
        state = saved;
    }
    let mut trainer = Trainer { model, adapters, optimizer };
    let steps_per_epoch = count.div_ceil(settings.batch_size.max(1));
    let total = steps_per_epoch * settings.epochs;
    let schedule = LinearSchedule {
        peak: settings.learning_rate,
        warmup: ((total as f64) * settings.warmup).round() as usize,
        total,
    };
    let metrics_path = run.join("metrics.jsonl");
    let bar = crate::teach::progress(total, "training the student");
    bar.set_position(state.step as u64);
    for epoch in state.epochs_done..settings.epochs {
        let started = Instant::now();
        let mut total_loss = 0.0;
        let batches = shuffled_batches(count, settings.batch_size, settings.seed.wrapping_add(epoch as u64));
        for indices in &batches {
            let texts: Vec<&str> = indices.iter().map(|&i| signals.texts[i].as_str()).collect();
            let batch = tokenizer.batch(&texts, &device)?;
            let mut pass = dropout_pass(settings.seed, state.step);
            let output = trainer.model.forward(&batch, Some(&mut pass))?;
            let recipe = strategy.recipe(&signals.strategy_input(indices))?;
            let student = StudentOutput { logits: &output.logits, hidden: Some(&output.pooled) };
            let loss = recipe_loss(&recipe, &student, &mut trainer.adapters)?;
            let mut grads = loss.backward()?;
            clip_gradients(&mut grads, &vars, settings.max_grad_norm)?;
            trainer.optimizer.step(&grads, schedule.learning_rate(state.step))?;
            if epoch > 0 {
                crate::files::kill_point("student-step");
            }
            let value = loss.to_scalar::<f32>()? as f64;
            total_loss += value;
            state.step += 1;
            bar.inc(1);
            bar.set_message(format!("student epoch {} loss {value:.4}", epoch + 1));
        }
        let train_loss = total_loss / batches.len().max(1) as f64;
        let validation_accuracy = accuracy(&trainer.model, &tokenizer, validation, 64, &device)?;
        let record =
            EpochRecord { epoch: epoch + 1, train_loss, validation_accuracy, seconds: started.elapsed().as_secs_f64() };
        bar.println(format!("epoch {}: loss {train_loss:.4}, validation accuracy {validation_accuracy:.4}", epoch + 1));
        state.epochs_done = epoch + 1;
        state.epochs.push(record);
        if crate::train::improves(validation_accuracy, state.best_validation_accuracy) {
            state.best_epoch = epoch + 1;
            state.best_validation_accuracy = validation_accuracy;
            trainer.model.save(&run.join("student"), &tokenizer)?;
        }
        trainer.save_state(run, &state, &tokenizer)?;
        // Rewritten from the saved state, so that a resumed run never repeats or loses a line.
        let lines: String =
            state.epochs.iter().map(|r| serde_json::to_string(r).expect("record serializes") + "\n").collect();
        crate::files::write_atomically(&metrics_path, lines)?;
    }
    bar.finish_and_clear();
    let best = Checkpoint::open(&run.join("student"), settings.max_length, &device)?;
    Ok(StudentOutcome { model: best.classifier(None, false, &device)?, tokenizer, state })
}
