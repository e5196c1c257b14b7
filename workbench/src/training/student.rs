//! Student training: batches of cached teacher signals go through the strategy plugin; the
//! recipe becomes a loss against the student; state is saved after every epoch so that a
//! killed run resumes where it stopped and ends with the same numbers.

use std::path::Path;

use abi_stable::std_types::RString;
use candle_core::{Device, Tensor as CandleTensor, Var};
use workbench_models::{Checkpoint, ClassifierOptions, EncoderClassifier, ModelOutput};
use workbench_plugin_api::{LabelSpace, StrategyInput, TeacherSignals, Tensor};

use crate::{
    data::Example,
    host::StrategyHandle,
    signal_cache::TeacherSignalSet,
    training::learner::{Learner, Objective, TrainingState},
    training::loss::{recipe_loss, FeatureAdapters, StudentOutput},
    training::teach::{model_dir, TrainingSettings},
    Result,
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
            scores: self.scores.map(|s| rows(s.data(), s.shape()[1], indices)).into(),
        }
    }
}

pub struct StudentOutcome {
    pub model: EncoderClassifier,
    pub tokenizer: workbench_models::TextTokenizer,
    pub state: TrainingState,
}

/// The student's objective: the strategy's recipe for each batch, turned into a loss.
struct RecipeObjective<'a> {
    strategy: &'a StrategyHandle,
    signals: &'a TrainingSignals<'a>,
    adapters: FeatureAdapters,
}

impl Objective for RecipeObjective<'_> {
    fn loss(&mut self, indices: &[usize], output: &ModelOutput) -> Result<CandleTensor> {
        let recipe = self.strategy.recipe(&self.signals.strategy_input(indices))?;
        let student = StudentOutput { logits: &output.logits, hidden: Some(&output.pooled) };
        recipe_loss(&recipe, &student, &mut self.adapters)
    }

    fn extra_vars(&self) -> Vec<Var> {
        self.adapters.vars().to_vec()
    }

    fn restore(&mut self, saved: &[CandleTensor]) -> Result<()> {
        self.adapters.restore(saved)
    }
}

/// Trains the student from `signals` with `strategy` in the run directory `run` (its state in
/// `<run>/state`, its best epoch in `<run>/student`), resuming from a saved state.
pub fn train_student(
    settings: &TrainingSettings,
    strategy: &StrategyHandle,
    signals: &TrainingSignals<'_>,
    validation: &[Example],
    cache: &Path,
    run: &Path,
) -> Result<StudentOutcome> {
    let device = Device::Cpu;
    let base = Checkpoint::open(&model_dir(&settings.model, cache)?, settings.max_length, &device)?;
    let options = ClassifierOptions {
        labels: signals.labels.labels.clone(),
        layers: settings.layers,
        seed: settings.seed,
        trainable: true,
        freeze_word_embeddings: settings.freeze_word_embeddings,
        pooling: settings.pooling,
    };
    let best = run.join("student");
    let learner = Learner { settings, dir: run, best: &best, what: "training the student" };
    let model = learner.model(&base, &options, &device)?;
    // The model has copied or shares what it needs: the rest would stay resident through training.
    drop(base.weights);
    let tokenizer = base.tokenizer;
    // One recipe on a first batch creates the feature adapters, whose variables must join the optimizer.
    let mut objective =
        RecipeObjective { strategy, signals, adapters: FeatureAdapters::new(settings.seed ^ 0xada9, &device) };
    let probe: Vec<usize> = (0..signals.texts.len().min(settings.batch_size)).collect();
    let probe_texts: Vec<&str> = probe.iter().map(|&i| signals.texts[i].as_str()).collect();
    objective.loss(&probe, &model.forward(&tokenizer.batch(&probe_texts, &device)?, None)?)?;
    let texts: Vec<&str> = signals.texts.iter().map(RString::as_str).collect();
    let state = learner.train(&model, &tokenizer, &texts, validation, &mut objective)?;
    let best = Checkpoint::open(&best, settings.max_length, &device)?;
    Ok(StudentOutcome { model: best.classifier(None, false, &device)?, tokenizer, state })
}
