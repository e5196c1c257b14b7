//! MUKA: integrate the teachers' distributions by their certainty scores and weight each
//! instance by the margin between the two highest scores.

use workbench_plugin_api::{
    math::{argmax, softmax},
    params, DistributionTerm, PluginError, PluginResult, Recipe, Strategy, StrategyInput, TeacherSignals, Tensor, Term,
};

use crate::{teacher_probs, temperature, Uhc};

params! {
    /// MUKA's parameters, as configs set them.
    pub struct MukaParams {
        /// hard: the most certain teacher; soft: softmax(scores / tau).
        integration: String = choice(&["soft", "hard"]),
        /// Softmax temperature over scores for soft integration.
        tau: f32 = float(0.2).range(1e-4, 100.0),
        /// Weight each instance by |s(1) - s(2)| + 1e-6.
        margin: bool = bool(true),
        /// raw: the margins as they are (the paper); mean-one: divided by their batch mean, so that
        /// the loss keeps its size when scores crowd together.
        margin_scale: String = choice(&["raw", "mean-one"]),
        /// second: s(2) is the second-highest score (the paper); rival: the highest score of a
        /// teacher that does not own the label the top teacher predicts (teachers that own it give
        /// that answer too, so they do not contest it); a text without a rival gets the batch's
        /// largest margin.
        margin_against: String = choice(&["second", "rival"]),
        /// Also match each teacher on its own labels for every instance (UHC's terms, scaled by
        /// T²), so that the student learns within each teacher's labels whatever the selection.
        within_blocks: bool = bool(false),
        temperature: f32 = temperature(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Integration {
    /// All weight on the most certain teacher (the first one on ties).
    Hard,
    /// Weights softmax(scores / tau).
    Soft { tau: f32 },
}

pub struct Muka {
    pub integration: Integration,
    pub margin: bool,
    /// Divide the margins by their batch mean, so that they average 1: the loss keeps the size
    /// it has without margins however the scores crowd (the paper's margins are unnormalised).
    pub margin_mean_one: bool,
    /// Measure the margin against the best rival teacher, not the second score (see
    /// `margin_against`): with overlapping label sets, owners of the same label agree.
    pub margin_against_rival: bool,
    pub temperature: f32,
    /// Also UHC's terms (each teacher matched on its own labels, every instance): what the
    /// student learns inside a teacher's labels then no longer rests on the selection, which
    /// still decides between the teachers through the integrated target.
    pub within_blocks: bool,
}

impl From<MukaParams> for Muka {
    fn from(params: MukaParams) -> Self {
        Muka {
            integration: match params.integration.as_str() {
                "hard" => Integration::Hard,
                _ => Integration::Soft { tau: params.tau },
            },
            margin: params.margin,
            margin_mean_one: params.margin_scale == "mean-one",
            margin_against_rival: params.margin_against == "rival",
            temperature: params.temperature,
            within_blocks: params.within_blocks,
        }
    }
}

/// The weight of each teacher for one instance's scores.
pub fn integration_weights(scores: &[f32], integration: Integration) -> Vec<f32> {
    match integration {
        Integration::Hard => {
            let best = argmax(scores);
            (0..scores.len()).map(|t| if t == best { 1.0 } else { 0.0 }).collect()
        }
        Integration::Soft { tau } => softmax(scores, tau),
    }
}

/// |s(1) - s(2)| + 1e-6 for the two highest scores; 1 with a single teacher, who cannot be
/// contested.
pub fn margin(scores: &[f32]) -> f32 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    match sorted.as_slice() {
        [first, second, ..] => (first - second).abs() + 1e-6,
        _ => 1.0,
    }
}

/// |s(top) - s(rival)| + 1e-6, where `top` is the first highest-scoring teacher and the rival the
/// highest-scoring teacher that does not own the union label `top` predicts; none when every
/// other teacher owns it.
pub fn rival_margin(scores: &[f32], teachers: &[TeacherSignals], b: usize) -> Option<f32> {
    let top = argmax(scores);
    let label = teachers[top].label_map[argmax(teachers[top].logits.at(&[b]))];
    let rivals = teachers
        .iter()
        .zip(scores)
        .enumerate()
        .filter(|(t, (teacher, _))| *t != top && !teacher.label_map.contains(&label));
    let rival = rivals.map(|(_, (_, &s))| s).reduce(f32::max)?;
    Some((scores[top] - rival).abs() + 1e-6)
}

impl Strategy for Muka {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let scores = input
            .scores()
            .ok_or_else(|| PluginError::invalid_input("muka needs certainty scores: configure an estimator"))?;
        let (batch, teachers, union) = (input.batch_size(), input.teachers.len(), input.union_labels.len());
        scores.expect_shape("scores", &[batch, teachers])?;
        let mut target = vec![0.0f32; batch * union];
        let mut margins = Vec::with_capacity(batch);
        for b in 0..batch {
            let row_scores = scores.at(&[b]);
            let row = &mut target[b * union..(b + 1) * union];
            for (teacher, weight) in input.teachers.iter().zip(integration_weights(row_scores, self.integration)) {
                if weight == 0.0 {
                    continue;
                }
                for (&label, p) in teacher.label_map.iter().zip(teacher_probs(teacher, b, self.temperature)) {
                    row[label as usize] += weight * p;
                }
            }
            margins.push(if self.margin_against_rival {
                rival_margin(row_scores, &input.teachers, b)
            } else {
                Some(margin(row_scores))
            });
        }
        // Uncontested texts are at least as certain as the most certain contested one.
        let largest = margins.iter().flatten().copied().reduce(f32::max);
        let mut weights: Vec<f32> = margins.into_iter().map(|w| w.or(largest).unwrap_or(1.0)).collect();
        if self.margin_mean_one {
            let mean = weights.iter().sum::<f32>() / batch.max(1) as f32;
            weights.iter_mut().for_each(|w| *w /= mean);
        }
        let integrated = DistributionTerm::new(
            (0..union as u32).collect(),
            Tensor::new(vec![batch, union], target)?,
            self.temperature,
            1.0,
        );
        let mut terms = vec![Term::Distribution(if self.margin { integrated.weighted(weights) } else { integrated })];
        if self.within_blocks {
            terms.extend(Uhc { temperature: self.temperature }.recipe(input)?.terms);
        }
        Ok(Recipe { terms: terms.into() })
    }
}
