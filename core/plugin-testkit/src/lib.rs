//! A fake-teacher harness: teachers with fixed logits and no model, so that a strategy or
//! estimator plugin can be tested in milliseconds, in-process or loaded through the host.
//!
//! ```
//! use workbench_plugin_testkit::{FakeTeacher, Harness};
//! let harness = Harness::new(vec![
//!     FakeTeacher::new("news", &["politics", "sport"], vec![vec![2.0, 0.0]]),
//!     FakeTeacher::new("science", &["space"], vec![vec![1.0]]),
//! ]);
//! let input = harness.strategy_input(None);
//! assert_eq!(input.union_labels.len(), 3);
//! ```

use workbench_plugin_api::{
    math::softmax, LabelSpace, Recipe, Strategy, StrategyInput, TeacherSamples, TeacherSignals, Tensor,
};

/// A teacher with fixed logits (one row per instance) and optional hidden states.
#[derive(Debug, Clone)]
pub struct FakeTeacher {
    pub name: String,
    pub labels: Vec<String>,
    pub logits: Vec<Vec<f32>>,
    pub hidden: Option<Vec<Vec<f32>>>,
}

impl FakeTeacher {
    pub fn new(name: &str, labels: &[&str], logits: Vec<Vec<f32>>) -> Self {
        Self { name: name.into(), labels: labels.iter().map(|l| l.to_string()).collect(), logits, hidden: None }
    }

    pub fn with_hidden(mut self, hidden: Vec<Vec<f32>>) -> Self {
        self.hidden = Some(hidden);
        self
    }

    /// Deterministic probabilities at temperature 1, one row per instance.
    pub fn probs(&self) -> Vec<Vec<f32>> {
        self.logits.iter().map(|row| softmax(row, 1.0)).collect()
    }
}

/// Builds the inputs the host would give a strategy or estimator for a batch of fake teachers.
pub struct Harness {
    pub teachers: Vec<FakeTeacher>,
    pub labels: LabelSpace,
}

impl Harness {
    pub fn new(teachers: Vec<FakeTeacher>) -> Self {
        let labels = LabelSpace::union(teachers.iter().map(|t| t.labels.as_slice()));
        Self { teachers, labels }
    }

    pub fn batch_size(&self) -> usize {
        self.teachers.first().map_or(0, |t| t.logits.len())
    }

    /// The strategy input, with certainty `scores` (`[B][T]`) when given.
    pub fn strategy_input(&self, scores: Option<Vec<Vec<f32>>>) -> StrategyInput {
        StrategyInput {
            union_labels: self.labels.labels.iter().map(|l| l.as_str().into()).collect(),
            teachers: self
                .teachers
                .iter()
                .zip(&self.labels.maps)
                .map(|(t, map)| TeacherSignals {
                    name: t.name.as_str().into(),
                    label_map: map.clone().into(),
                    logits: Tensor::from_rows(&t.logits).expect("fake logits rows have equal widths"),
                    hidden: t
                        .hidden
                        .as_ref()
                        .map(|h| Tensor::from_rows(h).expect("fake hidden rows have equal widths"))
                        .into(),
                })
                .collect(),
            scores: scores.map(|s| Tensor::from_rows(&s).expect("one score per teacher and instance")).into(),
        }
    }

    /// One deterministic sample per teacher, `[1, B, L_t]`, as an estimator would receive it.
    pub fn deterministic_samples(&self) -> Vec<TeacherSamples> {
        self.teachers
            .iter()
            .map(|t| {
                let (texts, labels) = (t.logits.len(), t.labels.len());
                let logits = Tensor::new(vec![1, texts, labels], t.logits.concat()).unwrap();
                TeacherSamples::of_every_text(&t.name, logits.clone(), logits.part(0))
            })
            .collect()
    }

    /// Runs a strategy in-process and checks its recipe as the host would.
    pub fn run(&self, strategy: &dyn Strategy, scores: Option<Vec<Vec<f32>>>) -> Result<Recipe, String> {
        let recipe = strategy.recipe(&self.strategy_input(scores)).map_err(|e| e.to_string())?;
        recipe.validate(self.batch_size(), self.labels.labels.len())?;
        Ok(recipe)
    }
}
