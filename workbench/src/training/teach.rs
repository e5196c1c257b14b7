//! `workbench teach`: fine-tune the encoder on a subset of a dataset's labels (or all of them,
//! the oracle) and write a Hugging Face checkpoint with its metrics.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};
use figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};
use workbench_models::{Checkpoint, ClassifierOptions, Pooling, Precision};
use workbench_plugin_api::{ParamTable, ParamValue};

use crate::{
    assets,
    data::{DataConfig, Example, Splits},
    files::FileLock,
    training::learner::{remove_state, EpochRecord, Learner, Objective},
    training::train::accuracy,
    Error, Result,
};

// What the engine knows of the `bert` teacher plugin, the one teacher it teaches: the parameter
// naming its checkpoints and its length. No other module of the engine reads a teacher plugin's
// parameters.

/// The teacher component whose checkpoints `teach` tables write.
pub const TAUGHT_TEACHER: &str = "bert";

/// The checkpoint directory a teacher's `checkpoints` parameter names first, if any.
pub fn first_checkpoint(params: &ParamTable) -> Option<PathBuf> {
    match params.get("checkpoints") {
        Ok(ParamValue::TextList(list)) => list.first().map(|p| PathBuf::from(p.as_str())),
        _ => None,
    }
}

/// A teacher is taught at the length it is read at: `teach.max_length` defaults to the
/// teacher's own `max_length`, so that a config says it once.
pub fn inherit_max_length(teach: &Value, teacher: &Dict) -> Value {
    match (teach, teacher.get("max_length")) {
        (Value::Dict(tag, settings), Some(length)) if !settings.contains_key("max_length") => {
            let mut settings = settings.clone();
            settings.insert("max_length".into(), length.clone());
            Value::Dict(*tag, settings)
        }
        _ => teach.clone(),
    }
}

/// A `teach` config file: `[teach]` and `[data]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeachConfig {
    /// Asset cache; `WORKBENCH_CACHE` sets it too.
    pub cache: Option<PathBuf>,
    /// Threads; 0 means every core.
    #[serde(default)]
    pub threads: usize,
    pub teach: TeachSettings,
    pub data: DataConfig,
}

/// How to fine-tune a model: the student's settings (`[student]`), and the recipe of a
/// teacher's (see [`TeachSettings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSettings {
    /// `minilm` (the pinned asset) or a Hugging Face checkpoint directory.
    #[serde(default = "default_model")]
    pub model: String,
    /// Keep only the first N encoder layers (a fast small model from the same weights).
    pub layers: Option<usize>,
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
    /// Of the trained model's test evaluation: `fp32` or `bf16` (see the `bert` teacher's
    /// `precision`); epochs are always chosen on fp32 validation accuracy.
    #[serde(default, skip_serializing_if = "is_fp32")]
    pub eval_precision: Precision,
    /// Student only: `[k, n]` leaves out the training texts of fold k of n
    /// ([`crate::data::text_fold`]), so that this student can score them as member k of a
    /// cross-fitted selector (`selector.cross_fit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_fold: Option<[usize; 2]>,
}

fn is_fp32(precision: &Precision) -> bool {
    *precision == Precision::Fp32
}

/// How to train a teacher (`[teach]`, or `teach` in a run's teacher table): which labels,
/// where the checkpoint goes, and the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeachSettings {
    /// The labels to learn; all labels of the training data when absent (the oracle).
    pub labels: Option<Vec<String>>,
    /// `[i, n]` takes the i-th of n contiguous blocks of the sorted labels (the paper's
    /// split), instead of `labels`.
    pub block: Option<[usize; 2]>,
    /// Where the checkpoint goes.
    pub output: Option<PathBuf>,
    #[serde(flatten)]
    pub recipe: TrainingSettings,
    /// Keys neither part knows (serde cannot refuse them through a flattened part); refused
    /// by [`TeachSettings::problems`].
    #[serde(flatten, skip_serializing)]
    unknown: BTreeMap<String, serde_json::Value>,
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
            eval_precision: Precision::Fp32,
            holdout_fold: None,
        }
    }
}

/// A setting out of range: the key (under its table) and why.
pub type Problem = (String, String);

impl TrainingSettings {
    /// Values no training could use, found before any model or data loads.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, reason: String| {
            if !ok {
                problems.push((key.to_string(), reason));
            }
        };
        let rate = self.learning_rate;
        check(rate.is_finite() && rate > 0.0, "learning_rate", format!("{rate}: must be a finite number above 0"));
        check(self.batch_size >= 1, "batch_size", "0: must be at least 1".into());
        check(self.epochs >= 1, "epochs", "0: must be at least 1".into());
        check(self.max_length >= 2, "max_length", format!("{}: must be at least 2 ([CLS] and [SEP])", self.max_length));
        check(self.layers != Some(0), "layers", "0: keep at least 1 encoder layer".into());
        let warmup = self.warmup;
        check((0.0..=1.0).contains(&warmup), "warmup", format!("{warmup}: a share of the steps, from 0 to 1"));
        let decay = self.weight_decay;
        check(decay.is_finite() && decay >= 0.0, "weight_decay", format!("{decay}: must be a finite number >= 0"));
        let norm = self.max_grad_norm;
        check(norm.is_finite() && norm > 0.0, "max_grad_norm", format!("{norm}: must be a finite number above 0"));
        if let Some([fold, folds]) = self.holdout_fold {
            check(
                folds >= 2 && fold < folds,
                "holdout_fold",
                format!("[{fold}, {folds}]: [k, n] names fold k of n folds, from 0 to n - 1, with n at least 2"),
            );
        }
        problems
    }

    /// What the base checkpoint cannot give (more layers or positions than it has); reads its
    /// config.json only.
    pub fn model_problems(&self, cache: &Path) -> Result<Vec<Problem>> {
        let dir = model_dir(&self.model, cache)?;
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(vec![(
                "model".into(),
                format!("{:?}: not a checkpoint directory ({} is missing)", self.model, path.display()),
            )]);
        }
        let config = workbench_models::EncoderConfig::load(&path)?;
        let mut problems = Vec::new();
        if let Some(layers) = self.layers.filter(|&l| l > config.num_hidden_layers) {
            problems.push((
                "layers".into(),
                format!("{layers}: the model has {} encoder layers", config.num_hidden_layers),
            ));
        }
        if self.max_length > config.max_tokens() {
            problems.push((
                "max_length".into(),
                format!("{}: the model has room for {} tokens", self.max_length, config.max_tokens()),
            ));
        }
        Ok(problems)
    }
}

impl TeachSettings {
    /// The same training, into `output`.
    pub fn writing_to(&self, output: PathBuf) -> Self {
        Self { output: Some(output), ..self.clone() }
    }

    /// The recipe's problems and every key neither part knows.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = self.recipe.problems();
        if self.recipe.holdout_fold.is_some() {
            problems
                .push(("holdout_fold".into(), "a student's key: a teacher learns from all its training texts".into()));
        }
        if !self.unknown.is_empty() {
            let mut known: Vec<String> = ["labels", "block", "output", "pooling"].map(String::from).to_vec();
            if let Ok(serde_json::Value::Object(recipe)) = serde_json::to_value(&self.recipe) {
                known.extend(recipe.keys().cloned());
            }
            known.sort();
            known.dedup();
            for key in self.unknown.keys() {
                let hint = crate::suggest::closest(key, known.iter().map(String::as_str))
                    .map_or_else(String::new, |c| format!("did you mean `{c}`? "));
                problems.push((key.clone(), format!("unknown key; {hint}known keys: {}", known.join(", "))));
            }
        }
        problems
    }
}

/// Refuses settings the base checkpoint cannot give, naming each key under `table`
/// (`student`, `teachers.a.teach`).
pub fn check_model(settings: &TrainingSettings, table: &str, cache: &Path) -> Result<()> {
    let problems = settings.model_problems(cache)?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        problems: problems.into_iter().map(|(key, reason)| format!("`{table}.{key}` = {reason}")).collect(),
    })
}

/// The checkpoint directory a `model` setting names.
pub fn model_dir(model: &str, cache: &Path) -> Result<PathBuf> {
    if model == assets::MINILM.name {
        return assets::MINILM.contents_dir(cache);
    }
    Ok(PathBuf::from(model))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeachOutcome {
    pub output: PathBuf,
    pub labels: Vec<String>,
    pub epochs: Vec<EpochRecord>,
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
pub fn select_labels(splits: &mut Splits, settings: &TeachSettings, table: &str) -> Result<Vec<String>> {
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
                        "`{table}.labels`: {unknown:?} not in the training data; its labels: {}",
                        available.join(", ")
                    )],
                });
            }
            labels.to_vec()
        }
        None => available,
    };
    if let [only] = labels.as_slice() {
        return Err(Error::InvalidConfig {
            problems: vec![format!("`{table}` names one label (`{only}`): a teacher needs at least 2 classes")],
        });
    }
    splits.restrict(&labels);
    Ok(labels)
}

/// The completion record of a trained teacher, written last: a directory without it is a
/// training that did not finish.
pub const RECORD: &str = "teach.json";

/// `teach.json`: what was trained, from what, and how well.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TeachRecord {
    outcome: TeachOutcome,
    settings: TeachSettings,
    data_report: crate::data::LoadReport,
    /// sha256 of the training texts and labels; absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    train_sha256: Option<String>,
}

/// The lock that lets one process at a time train into `checkpoint`: a sibling file, since
/// the directory itself appears only when training completes.
pub fn lock_path(checkpoint: &Path) -> PathBuf {
    crate::files::sibling(checkpoint, ".lock")
}

/// Whether `dir` holds a teacher whose training completed.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(RECORD).is_file() && dir.join("model.safetensors").is_file()
}

/// Refuses a directory the workbench began to train into and never completed (a killed run
/// of an older version): used as a checkpoint, it would pass a half-trained teacher off as one.
pub fn refuse_incomplete(dir: &Path) -> Result<()> {
    if dir.join("metrics.jsonl").is_file() && !dir.join(RECORD).is_file() {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "{} holds a teacher whose training never completed (metrics.jsonl without {RECORD}); remove it, or add a `teach` table to train it again",
                dir.display()
            )],
        });
    }
    Ok(())
}

fn train_hash(train: &[Example]) -> String {
    crate::signal_cache::strings_hash(train.iter().flat_map(|e| [e.label.as_str(), e.text.as_str()]))
}

fn read_record(dir: &Path) -> Result<TeachRecord> {
    let path = dir.join(RECORD);
    crate::files::read_json(&path, |e| Error::InvalidConfig {
        problems: vec![format!(
            "{}: not a teacher record of this workbench ({e}); remove {} to train it again",
            path.display(),
            dir.display()
        )],
    })
}

/// The settings that decide what a teacher learns, as JSON: the directory and how the labels
/// were named (a list or a block) are left out, the labels themselves are compared apart.
fn recipe_json(settings: &TeachSettings) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(serde_json::to_value(&settings.recipe).expect("settings serialize")).expect("an object")
}

/// Refuses a complete teacher that `settings` (under `table`) no longer describe: other labels,
/// another recipe or other training texts.
fn check_matches(
    record: &TeachRecord,
    settings: &TeachSettings,
    labels: &[String],
    train: &[Example],
    dir: &Path,
    table: &str,
) -> Result<()> {
    let mut differences = Vec::new();
    if record.outcome.labels != labels {
        differences.push(format!("labels ({} then, {} now)", record.outcome.labels.join(", "), labels.join(", ")));
    }
    differences.extend(crate::config::changed_entries(&recipe_json(&record.settings), &recipe_json(settings)));
    if record.train_sha256.as_ref().is_some_and(|hash| *hash != train_hash(train)) {
        differences.push("the training texts (the data settings changed)".into());
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        problems: vec![format!(
            "`{table}` no longer describes the teacher in {}: it differs in {}; remove the directory to train it again, or name a new one in `checkpoints`",
            dir.display(),
            differences.join(", ")
        )],
    })
}

/// Fine-tunes and publishes the best checkpoint (by validation accuracy) as `output`: training
/// goes into a sibling directory renamed into place with its record, so that `output` is
/// complete or absent. One process at a time trains into `output`; another that waited finds
/// the teacher done and, if `settings` (under `table`) still describe it, returns its record.
pub fn teach(teach: &TeachSettings, mut splits: Splits, cache: &Path, table: &str) -> Result<TeachOutcome> {
    let device = Device::Cpu;
    let settings = &teach.recipe;
    let output = teach.output.clone().ok_or_else(|| Error::InvalidConfig {
        problems: vec![format!("`{table}.output`: name the checkpoint directory to write")],
    })?;
    let labels = select_labels(&mut splits, teach, table)?;
    if splits.train.is_empty() {
        return Err(Error::InvalidConfig { problems: vec!["no training examples for the chosen labels".into()] });
    }
    let _lock = FileLock::acquire(&lock_path(&output), &format!("training the teacher {}", output.display()))?;
    if is_complete(&output) {
        let record = read_record(&output)?;
        check_matches(&record, teach, &labels, &splits.train, &output, table)?;
        tracing::info!(dir = %output.display(), "the teacher is trained already");
        return Ok(record.outcome);
    }
    let published = output;
    // Trained beside the final place, under a name that outlives the process (the lock keeps
    // it to one process at a time), so that a killed training resumes from its last epoch.
    let partial = partial_dir(&published);
    let recipe = serde_json::to_string_pretty(&serde_json::json!({
        "settings": settings,
        "labels": labels,
        "train_sha256": train_hash(&splits.train),
    }))
    .expect("the recipe serializes");
    let recipe_path = partial.join("recipe.json");
    if partial.exists() && std::fs::read_to_string(&recipe_path).ok().as_deref() != Some(recipe.as_str()) {
        // Left by a training of something else, or killed before its first epoch: start over.
        std::fs::remove_dir_all(&partial).map_err(Error::io(format!("removing {}", partial.display())))?;
    }
    std::fs::create_dir_all(&partial).map_err(Error::io(format!("creating {}", partial.display())))?;
    crate::files::write_atomically(&recipe_path, &recipe)?;
    let checkpoint = Checkpoint::open(&model_dir(&settings.model, cache)?, settings.max_length, &device)?;
    let options = ClassifierOptions {
        labels: labels.clone(),
        layers: settings.layers,
        seed: settings.seed,
        trainable: true,
        freeze_word_embeddings: settings.freeze_word_embeddings,
        pooling: settings.pooling,
    };
    let learner = Learner { settings, dir: &partial, best: &partial, what: "teaching" };
    let model = learner.model(&checkpoint, &options, &device)?;
    // The model has copied or shares what it needs: the rest would stay resident through training.
    drop(checkpoint.weights);
    tracing::info!(
        labels = labels.len(),
        train = splits.train.len(),
        validation = splits.validation.len(),
        layers = model.num_layers(),
        "fine-tuning a teacher"
    );
    let texts: Vec<&str> = splits.train.iter().map(|e| e.text.as_str()).collect();
    let mut objective = LabelObjective::new(&labels, &splits.train, &device)?;
    let state = learner.train(&model, &checkpoint.tokenizer, &texts, &splits.validation, &mut objective)?;
    let best_model = Checkpoint::open(&partial, settings.max_length, &device)?;
    let mut classifier = best_model.classifier(None, false, &device)?;
    super::train::evaluate_at(&mut classifier, settings.eval_precision)?;
    let test_accuracy = accuracy(&classifier, &best_model.tokenizer, &splits.test, 64, &device)?;
    let outcome = TeachOutcome {
        output: published.clone(),
        labels,
        epochs: state.epochs,
        best_epoch: state.best_epoch,
        validation_accuracy: state.best_validation_accuracy,
        test_accuracy,
    };
    let record = TeachRecord {
        outcome: outcome.clone(),
        settings: TeachSettings { output: Some(published.clone()), ..teach.clone() },
        data_report: splits.report.clone(),
        train_sha256: Some(train_hash(&splits.train)),
    };
    remove_state(&partial)?;
    let card = crate::model_card::teacher_card(&partial, teach, &outcome, splits.train.len());
    crate::model_card::write(&partial, &card)?;
    std::fs::remove_file(&recipe_path).map_err(Error::io(format!("removing {}", recipe_path.display())))?;
    crate::files::write_atomically(
        &partial.join(RECORD),
        serde_json::to_string_pretty(&record).expect("record serializes"),
    )?;
    if published.exists() {
        // What is there never completed (it has no record): the finished teacher replaces it.
        std::fs::remove_dir_all(&published).map_err(Error::io(format!("removing {}", published.display())))?;
    }
    std::fs::rename(&partial, &published).map_err(Error::io(format!("publishing {}", published.display())))?;
    Ok(outcome)
}

/// `<checkpoint>.partial`: where the teacher for `checkpoint` is trained.
pub fn partial_dir(checkpoint: &Path) -> PathBuf {
    crate::files::sibling(checkpoint, ".partial")
}

/// A teacher's objective: cross-entropy against the label of each training example.
struct LabelObjective {
    /// The class index of every training example.
    targets: Vec<u32>,
    device: Device,
}

impl LabelObjective {
    fn new(labels: &[String], train: &[Example], device: &Device) -> Result<Self> {
        let index: HashMap<&str, u32> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
        Ok(Self { targets: train.iter().map(|e| index[e.label.as_str()]).collect(), device: device.clone() })
    }
}

impl Objective for LabelObjective {
    fn loss(&mut self, indices: &[usize], output: &workbench_models::ModelOutput) -> Result<Tensor> {
        let targets: Vec<u32> = indices.iter().map(|&i| self.targets[i]).collect();
        let targets = Tensor::from_vec(targets, indices.len(), &self.device)?;
        Ok(candle_nn::loss::cross_entropy(&output.logits, &targets)?)
    }
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
