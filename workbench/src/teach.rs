//! `workbench teach`: fine-tune the encoder on a subset of a dataset's labels (or all of them,
//! the oracle) and write a Hugging Face checkpoint with its metrics.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use workbench_models::{BertClassifier, Checkpoint, ClassifierOptions, Pooling, TextTokenizer};

use crate::{
    assets,
    data::{DataConfig, Example, Splits},
    train::{accuracy, clip_gradients, dropout_pass, shuffled_batches, AdamW, AdamWSettings, LinearSchedule},
    Error, Result,
};

/// A `teach` config file: `[teach]` and `[data]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeachConfig {
    /// Asset cache; `WORKBENCH_CACHE` sets it too.
    pub cache: Option<PathBuf>,
    /// Threads; 0 means every core.
    #[serde(default)]
    pub threads: usize,
    pub teach: TrainingSettings,
    pub data: DataConfig,
}

/// How to fine-tune a model: a teacher (`[teach]`, or `teach` in a run's teacher table) or the
/// student (`[student]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSettings {
    /// `minilm` (the pinned asset) or a Hugging Face checkpoint directory.
    #[serde(default = "default_model")]
    pub model: String,
    /// Keep only the first N encoder layers (a fast small model from the same weights).
    pub layers: Option<usize>,
    /// Teachers: the labels to learn; all labels of the training data when absent (the oracle).
    pub labels: Option<Vec<String>>,
    /// Teachers: `[i, n]` takes the i-th of n contiguous blocks of the sorted labels (the
    /// paper's split), instead of `labels`.
    pub block: Option<[usize; 2]>,
    /// Teachers: where the checkpoint goes.
    pub output: Option<PathBuf>,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Small models want more than BERT-base's 2e-5 (DESIGN.md, section 7).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Share of the steps spent warming up.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Seeds data order, dropout, the new head and the validation split.
    #[serde(default)]
    pub seed: u64,
    /// Keep the word embeddings fixed (most of a small model's weights; updating them
    /// dominated the cost of a training step).
    #[serde(default = "default_true")]
    pub freeze_word_embeddings: bool,
    /// `cls` or `mean`; absent: the checkpoint's own (mean for the pinned MiniLM, a
    /// sentence-transformers model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
}

fn default_true() -> bool {
    true
}

fn default_model() -> String {
    "minilm".into()
}
fn default_epochs() -> usize {
    4
}
fn default_learning_rate() -> f64 {
    2e-4
}
fn default_batch_size() -> usize {
    16
}
fn default_max_length() -> usize {
    128
}
fn default_warmup() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_max_grad_norm() -> f64 {
    1.0
}

impl TrainingSettings {
    /// The student's defaults: MiniLM cut to 3 layers, 3 epochs.
    pub fn student_defaults() -> Self {
        Self {
            model: default_model(),
            layers: Some(3),
            labels: None,
            block: None,
            output: None,
            epochs: 3,
            learning_rate: default_learning_rate(),
            batch_size: default_batch_size(),
            max_length: default_max_length(),
            warmup: default_warmup(),
            weight_decay: default_weight_decay(),
            max_grad_norm: default_max_grad_norm(),
            seed: 0,
            freeze_word_embeddings: true,
            pooling: None,
        }
    }
}

/// The checkpoint directory a `model` setting names.
pub fn model_dir(model: &str, cache: &Path) -> Result<PathBuf> {
    if model == assets::MINILM.name {
        return Ok(assets::MINILM.ensure(cache)?.join(assets::MINILM_MODEL_DIR));
    }
    Ok(PathBuf::from(model))
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_accuracy: f64,
    pub learning_rate: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TeachOutcome {
    pub output: PathBuf,
    pub labels: Vec<String>,
    pub epochs: Vec<EpochMetrics>,
    pub best_epoch: usize,
    pub validation_accuracy: f64,
    /// Accuracy on the test examples of the teacher's own labels.
    pub test_accuracy: f64,
}

/// The i-th of n contiguous blocks of `sorted` labels; earlier blocks take the remainder.
pub fn label_block(sorted: &[String], index: usize, blocks: usize) -> Result<Vec<String>> {
    if blocks == 0 || index >= blocks || blocks > sorted.len() {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "`block` = [{index}, {blocks}]: need 0 <= index < blocks <= {} labels",
                sorted.len()
            )],
        });
    }
    let (size, extra) = (sorted.len() / blocks, sorted.len() % blocks);
    let start = index * size + index.min(extra);
    let end = start + size + usize::from(index < extra);
    Ok(sorted[start..end].to_vec())
}

/// Checks the requested labels against the data and keeps only their examples.
pub fn select_labels(splits: &mut Splits, settings: &TrainingSettings) -> Result<Vec<String>> {
    let available = splits.labels();
    let requested = match settings.block {
        Some([index, blocks]) => Some(label_block(&available, index, blocks)?),
        None => settings.labels.clone(),
    };
    let labels = match requested.as_deref() {
        Some(labels) => {
            let unknown: Vec<&String> = labels.iter().filter(|l| !available.contains(l)).collect();
            if !unknown.is_empty() {
                return Err(Error::InvalidConfig {
                    problems: vec![format!(
                        "`teach.labels`: {unknown:?} not in the training data; its labels: {}",
                        available.join(", ")
                    )],
                });
            }
            labels.to_vec()
        }
        None => available,
    };
    splits.restrict(&labels);
    Ok(labels)
}

fn targets(examples: &[&Example], index: &HashMap<&str, u32>, device: &Device) -> Result<Tensor> {
    let ids: Vec<u32> = examples.iter().map(|e| index[e.label.as_str()]).collect();
    Ok(Tensor::from_vec(ids, examples.len(), device)?)
}

pub(crate) fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64).with_message(what.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})")
            .expect("a valid template"),
    );
    bar
}

/// One epoch of supervised fine-tuning; returns the mean training loss.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    model: &BertClassifier,
    tokenizer: &TextTokenizer,
    train: &[Example],
    index: &HashMap<&str, u32>,
    optimizer: &mut AdamW,
    schedule: &LinearSchedule,
    settings: &TrainingSettings,
    epoch: usize,
    step: &mut usize,
    bar: &ProgressBar,
) -> Result<f64> {
    let device = model.device();
    let batches = shuffled_batches(train.len(), settings.batch_size, settings.seed.wrapping_add(epoch as u64));
    let mut total = 0.0;
    for indices in &batches {
        let examples: Vec<&Example> = indices.iter().map(|&i| &train[i]).collect();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let batch = tokenizer.batch(&texts, device)?;
        let mut pass = dropout_pass(settings.seed, *step);
        let logits = model.forward(&batch, Some(&mut pass))?.logits;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets(&examples, index, device)?)?;
        let mut grads = loss.backward()?;
        clip_gradients(&mut grads, model.vars(), settings.max_grad_norm)?;
        optimizer.step(&grads, schedule.learning_rate(*step))?;
        let value = loss.to_scalar::<f32>()? as f64;
        total += value;
        *step += 1;
        bar.inc(1);
        bar.set_message(format!("epoch {} loss {value:.3}", epoch + 1));
    }
    Ok(total / batches.len().max(1) as f64)
}

/// Fine-tunes and writes the best checkpoint (by validation accuracy) to `output`.
pub fn teach(settings: &TrainingSettings, mut splits: Splits, cache: &Path) -> Result<TeachOutcome> {
    let device = Device::Cpu;
    let output = settings.output.clone().ok_or_else(|| Error::InvalidConfig {
        problems: vec!["`teach.output`: name the checkpoint directory to write".into()],
    })?;
    let labels = select_labels(&mut splits, settings)?;
    if splits.train.is_empty() {
        return Err(Error::InvalidConfig { problems: vec!["no training examples for the chosen labels".into()] });
    }
    let checkpoint = Checkpoint::open(&model_dir(&settings.model, cache)?, settings.max_length, &device)?;
    let options = ClassifierOptions {
        labels: labels.clone(),
        layers: settings.layers,
        seed: settings.seed,
        trainable: true,
        freeze_word_embeddings: settings.freeze_word_embeddings,
        pooling: settings.pooling,
    };
    let model = checkpoint.classifier_for(&options, &device)?;
    let index: HashMap<&str, u32> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
    let steps_per_epoch = splits.train.len().div_ceil(settings.batch_size.max(1));
    let total = steps_per_epoch * settings.epochs;
    let schedule = LinearSchedule {
        peak: settings.learning_rate,
        warmup: ((total as f64) * settings.warmup).round() as usize,
        total,
    };
    let mut optimizer =
        AdamW::new(model.vars(), AdamWSettings { weight_decay: settings.weight_decay, ..AdamWSettings::default() })?;
    std::fs::create_dir_all(&output).map_err(Error::io(format!("creating {}", output.display())))?;
    let metrics_path = output.join("metrics.jsonl");
    let mut metrics_file =
        std::fs::File::create(&metrics_path).map_err(Error::io(format!("creating {}", metrics_path.display())))?;
    tracing::info!(
        labels = labels.len(),
        train = splits.train.len(),
        validation = splits.validation.len(),
        layers = model.num_layers(),
        steps = total,
        "fine-tuning a teacher"
    );
    let bar = progress(total, "teaching");
    let (mut step, mut epochs, mut best) = (0, Vec::new(), (0usize, -1.0f64));
    for epoch in 0..settings.epochs {
        let started = Instant::now();
        let train_loss = train_epoch(
            &model,
            &checkpoint.tokenizer,
            &splits.train,
            &index,
            &mut optimizer,
            &schedule,
            settings,
            epoch,
            &mut step,
            &bar,
        )?;
        let validation_accuracy = accuracy(&model, &checkpoint.tokenizer, &splits.validation, 64, &device)?;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            validation_accuracy,
            learning_rate: schedule.learning_rate(step.saturating_sub(1)),
            seconds: started.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&metrics).expect("metrics serialize"))
            .map_err(Error::io(format!("writing {}", metrics_path.display())))?;
        bar.println(format!(
            "epoch {}: train loss {train_loss:.4}, validation accuracy {validation_accuracy:.4}",
            epoch + 1
        ));
        if crate::train::improves(validation_accuracy, best.1) {
            best = (epoch + 1, validation_accuracy);
            model.save(&output, &checkpoint.tokenizer)?;
        }
        epochs.push(metrics);
    }
    bar.finish_and_clear();
    let best_model = Checkpoint::open(&output, settings.max_length, &device)?;
    let test_accuracy =
        accuracy(&best_model.classifier(None, false, &device)?, &best_model.tokenizer, &splits.test, 64, &device)?;
    let outcome = TeachOutcome {
        output: output.clone(),
        labels,
        epochs,
        best_epoch: best.0,
        validation_accuracy: best.1,
        test_accuracy,
    };
    let summary = serde_json::json!({ "outcome": outcome, "settings": settings, "data_report": splits.report });
    let summary_path = output.join("teach.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary).expect("summary serializes"))
        .map_err(Error::io(format!("writing {}", summary_path.display())))?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_blocks_are_contiguous_and_cover_every_label() {
        let sorted: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(label_block(&sorted, 0, 2).unwrap(), ["a", "b", "c"]);
        assert_eq!(label_block(&sorted, 1, 2).unwrap(), ["d", "e"]);
        assert_eq!(label_block(&sorted, 3, 4).unwrap(), ["e"]);
        assert!(label_block(&sorted, 2, 2).is_err());
    }
}
