//! `workbench predict`: a checkpoint on a few texts (a trained student, a teacher), or one
//! teacher of a config, for a look at what a teacher plugin does: its distribution over its
//! labels and, when the config has an estimator, the certainty score the estimator gives it.

use abi_stable::std_types::RString;
use workbench_plugin_api::{math::softmax, ForwardRequest, Sampling, SamplingPlan, TeacherSamples};

use crate::{config::ResolvedConfig, host::Registry, Error, Result};

/// A teacher's answer for one text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub text: String,
    /// Every label with its probability (softmax at T = 1), most probable first.
    pub probabilities: Vec<(String, f32)>,
    /// The estimator's certainty score, when the config has an estimator.
    pub score: Option<f32>,
}

/// Runs the checkpoint in `dir` over its own labels, texts cut to the length it was trained at
/// (its tokenizer_config.json's), at most the model's position table.
pub fn predict_checkpoint(dir: &std::path::Path, texts: &[String]) -> Result<Vec<Prediction>> {
    let device = candle_core::Device::Cpu;
    let length = workbench_models::trained_max_length(dir).unwrap_or(usize::MAX);
    let checkpoint = workbench_models::Checkpoint::open(dir, length, &device)?;
    let model = checkpoint.classifier(None, false, &device)?;
    let logits = model.forward(&checkpoint.tokenizer.batch(texts, &device)?, None)?.logits.to_vec2::<f32>()?;
    Ok(texts.iter().zip(logits).map(|(text, row)| prediction(text, model.labels(), &row, None)).collect())
}

/// A text's labels with their probabilities (softmax at T = 1), most probable first.
fn prediction(text: &str, labels: &[String], logits: &[f32], score: Option<f32>) -> Prediction {
    let mut probabilities: Vec<(String, f32)> = labels.iter().cloned().zip(softmax(logits, 1.0)).collect();
    probabilities.sort_by(|a, b| b.1.total_cmp(&a.1));
    Prediction { text: text.to_string(), probabilities, score }
}

/// Runs the teacher named `teacher` (a key of `[teachers]`, `oracle` or `selector`) on `texts`.
pub fn predict(
    config: &ResolvedConfig,
    registry: &Registry,
    teacher: &str,
    texts: &[String],
) -> Result<Vec<Prediction>> {
    let choice = match teacher {
        "oracle" => config.oracle.as_ref(),
        "selector" => config.selector.as_ref(),
        name => config.teachers.get(name),
    }
    .ok_or_else(|| {
        let union_models = [("oracle", &config.oracle), ("selector", &config.selector)];
        let extra = union_models.into_iter().filter(|(_, choice)| choice.is_some()).map(|(key, _)| key);
        let names: Vec<&str> = config.teachers.keys().map(String::as_str).chain(extra).collect();
        Error::InvalidConfig {
            problems: vec![format!("the config has no teacher `{teacher}`; its teachers: {}", names.join(", "))],
        }
    })?;
    let mut handle = registry.create_teacher(&choice.component, choice.library.as_deref(), &choice.params)?;
    let info = handle.info()?;
    let inputs: Vec<RString> = texts.iter().map(|t| RString::from(t.as_str())).collect();
    let deterministic = ForwardRequest { sampling: Sampling::Deterministic, want_hidden: false };
    let logits = handle.forward(&inputs, &deterministic, &info)?.logits;
    let scores = match &config.estimator {
        Some(e) => {
            let estimator = registry.create_estimator(&e.component, e.library.as_deref(), &e.params)?;
            // A share plan samples every one of these few texts: nothing is left to predict.
            let sampled = match estimator.plan()? {
                SamplingPlan::Deterministic => logits.clone(),
                plan => {
                    let request = ForwardRequest { sampling: plan.request(config.mc_seed), want_hidden: false };
                    handle.forward(&inputs, &request, &info)?.logits
                }
            };
            let samples = [TeacherSamples::of_every_text(teacher, sampled, logits.part(0))];
            Some(estimator.score(&samples)?)
        }
        None => None,
    };
    let labels: Vec<String> = info.labels.iter().map(|l| l.to_string()).collect();
    Ok(texts
        .iter()
        .enumerate()
        .map(|(i, text)| prediction(text, &labels, logits.at(&[0, i]), scores.as_ref().map(|s| s.at(&[i])[0])))
        .collect())
}
