//! Uncertainty estimators. Each maps teacher samples to a certainty score per instance and
//! teacher, normalized by the teacher's label count so that teachers are comparable, then
//! rescaled over the whole call (see [`Scale`]).

mod fit;
mod measures;

pub use measures::{certainty, Measure, Scale, MEASURES, SCALES};
use workbench_plugin_api::{
    export_plugin, params, ComponentKind, ComponentSpec, Estimator, ParamSpec, ParamTable, Params, Plugin, PluginError,
    PluginManifest, PluginResult, SamplingPlan, TeacherSamples, Tensor,
};

#[cfg(test)]
mod tests;

pub struct UncertaintyPlugin;

/// The measure, over the ones a component's samples can feed.
fn measure(measures: &[&str]) -> ParamSpec {
    ParamSpec::choice(
        "",
        measures,
        "entropy: 1 - H(mean p)/ln|L|; mutual-information: 1 - (H(mean p) - mean H(p))/ln|L| (BALD); \
         max-prob: (max mean p - 1/|L|)/(1 - 1/|L|); top-variance: 1 - 4 Var(p[top class]) across \
         samples; energy: mean T logsumexp(z/T) - T ln|L|; max-logit: mean max z (one pass: the \
         concat-argmax selector).",
    )
}

fn temperature() -> ParamSpec {
    ParamSpec::float(
        "",
        1.0,
        "Temperature of the teacher distributions the measure reads; set it to the strategy's T for \
         the paper's form.",
    )
    .range(0.05, 100.0)
}

fn scale() -> ParamSpec {
    ParamSpec::choice(
        "",
        &SCALES,
        "raw: the measure's own values (the paper); standard: (s - mean)/std over every score of the \
         split; rank: share of the split's scores below s, in [0, 1]. These keep each instance's most \
         certain teacher; they change the spread soft integration and the margin read. teacher-rank: \
         share of the same teacher's scores below s, each teacher calibrated against itself: this \
         one changes the selection.",
    )
}

/// The measures one deterministic pass can feed.
const SINGLE_PASS_MEASURES: [&str; 4] = ["entropy", "max-prob", "energy", "max-logit"];

params! {
    /// `entropy`: one deterministic pass per teacher.
    pub struct SinglePassParams {
        measure: Measure = measure(&SINGLE_PASS_MEASURES),
        temperature: f32 = temperature(),
        scale: Scale = scale(),
    }
}

params! {
    /// `mc-dropout`: K stochastic passes.
    pub struct MonteCarloParams {
        /// Number of stochastic passes K.
        passes: u32 = int(16).range(2.0, 1024.0),
        measure: Measure = measure(&MEASURES),
        temperature: f32 = temperature(),
        scale: Scale = scale(),
        /// 0: dropout in every layer; N: only the top N layers are stochastic and the lower ones run once.
        top_layers: u32 = int(0).range(0.0, 256.0),
        /// With top_layers = N: 0 runs the lower layers once without dropout; M runs them M times
        /// with dropout, and the K top-layer passes take those M samples in turn (cost about M
        /// passes of the lower layers).
        lower_passes: u32 = int(0).range(0.0, 1024.0),
    }
}

/// The measures, mutual information (BALD) first: what the fit was measured with.
const FITTED_MEASURES: [&str; 6] = ["mutual-information", "entropy", "max-prob", "top-variance", "energy", "max-logit"];

params! {
    /// `mc-fitted`: K stochastic passes over a share of the texts, the rest predicted.
    pub struct FittedParams {
        /// Number of stochastic passes K over each sampled text.
        passes: u32 = int(16).range(2.0, 1024.0),
        /// The share of the training texts that get the K passes, chosen by the MC seed; held-out
        /// texts (validation, test) get none, the fit on the training texts predicts them.
        share: f64 = float(0.1).range(0.001, 1.0),
        /// At least this many texts get the K passes: the fit has about 400 features with
        /// MiniLM's hidden state and is unsteady from fewer texts. A split with fewer texts is
        /// measured whole and keeps its measured values (and then each split is sampled).
        minimum: u32 = int(256).range(2.0, 1e9),
        measure: Measure = measure(&FITTED_MEASURES),
        temperature: f32 = temperature(),
        scale: Scale = scale(),
        /// Ridge penalty of the fit, on standardized features.
        ridge: f64 = float(10.0).range(1e-9, 1e9),
        /// Fit each teacher's ranks of the measured values (the share of its other sampled texts
        /// below) instead of the values: from 270 measured texts, half the spread between MC
        /// seeds and a lower mean selection on the training texts; from 90, worse (RESULTS.md).
        fit_ranks: bool = bool(false),
        /// Ridge fits averaged, each on a bootstrap resample of the measured texts (1: one fit on
        /// them all). From 270 measured texts of the grid, 5 or 10 select about 0.9 point better
        /// on the training texts and 0.6 on validation than one fit (RESULTS.md).
        bags: u32 = int(10).range(1.0, 1000.0),
    }
}

params! {
    /// `ensemble`: one deterministic pass per member.
    pub struct MembersParams {
        measure: Measure = measure(&MEASURES),
        temperature: f32 = temperature(),
        scale: Scale = scale(),
    }
}

fn component(name: &str, doc: &str, params: Vec<ParamSpec>, plan: SamplingPlan) -> ComponentSpec {
    ComponentSpec::new(name, ComponentKind::Estimator, doc, params, plan.signals())
}

impl Plugin for UncertaintyPlugin {
    fn manifest() -> PluginManifest {
        let stochastic = SamplingPlan::Stochastic { passes: 16, top_layers: 0, lower_passes: 0 };
        workbench_plugin_api::manifest![
            component(
                "entropy",
                "Certainty from one deterministic pass per teacher.",
                SinglePassParams::specs(),
                SamplingPlan::Deterministic,
            ),
            component(
                "mc-dropout",
                "Certainty from K stochastic passes with dropout on (Monte-Carlo dropout).",
                MonteCarloParams::specs(),
                stochastic,
            ),
            component(
                "mc-fitted",
                "Certainty of K stochastic passes as ridge fits predict it from each text's \
                 deterministic pass and hidden state, fitted on a share of the training texts that get the passes.",
                FittedParams::specs(),
                SamplingPlan::StochasticShare { passes: 16, per_mille: 100, minimum: 256 },
            ),
            component(
                "ensemble",
                "Certainty from the members of ensemble teachers (one deterministic pass per member).",
                MembersParams::specs(),
                SamplingPlan::Members,
            )
        ]
    }

    fn create_estimator(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Estimator>> {
        let estimator = match component {
            "entropy" => {
                let SinglePassParams { measure, temperature, scale } = SinglePassParams::parse(params)?;
                SampleEstimator { plan: SamplingPlan::Deterministic, measure, temperature, scale }
            }
            "mc-dropout" => {
                let MonteCarloParams { passes, measure, temperature, scale, top_layers, lower_passes } =
                    MonteCarloParams::parse(params)?;
                if lower_passes > 0 && top_layers == 0 {
                    return Err(PluginError::invalid_input(
                        "`lower_passes` needs `top_layers` > 0: with `top_layers` = 0 every layer is stochastic in every pass",
                    ));
                }
                if lower_passes > passes {
                    return Err(PluginError::invalid_input(format!(
                        "`lower_passes` = {lower_passes} is more than the {passes} `passes` that would use its samples"
                    )));
                }
                let plan = SamplingPlan::Stochastic { passes, top_layers, lower_passes };
                SampleEstimator { plan, measure, temperature, scale }
            }
            "ensemble" => {
                let MembersParams { measure, temperature, scale } = MembersParams::parse(params)?;
                SampleEstimator { plan: SamplingPlan::Members, measure, temperature, scale }
            }
            "mc-fitted" => {
                let FittedParams { passes, share, minimum, measure, temperature, scale, ridge, fit_ranks, bags } =
                    FittedParams::parse(params)?;
                let per_mille = (share * 1000.0).round().max(1.0) as u32;
                let plan = SamplingPlan::StochasticShare { passes, per_mille, minimum };
                return Ok(Box::new(FittedEstimator {
                    measured: SampleEstimator { plan, measure, temperature, scale },
                    ridge,
                    fit_ranks,
                    bags: bags as usize,
                }));
            }
            other => return Err(PluginError::unsupported(format!("no estimator named `{other}`"))),
        };
        Ok(Box::new(estimator))
    }
}

export_plugin!(UncertaintyPlugin);

/// Scores the samples of a plan with one measure at one temperature, then rescales them.
pub struct SampleEstimator {
    pub plan: SamplingPlan,
    pub measure: Measure,
    pub temperature: f32,
    pub scale: Scale,
}

impl Estimator for SampleEstimator {
    fn plan(&self) -> SamplingPlan {
        self.plan
    }

    fn score(&self, samples: &[TeacherSamples]) -> PluginResult<Tensor> {
        let batch = match samples.first() {
            Some(first) if first.logits.shape().len() == 3 => first.logits.shape()[1],
            Some(first) => {
                return Err(PluginError::invalid_input(format!(
                    "teacher samples must be [S, B, L], got shape {:?}",
                    first.logits.shape()
                )))
            }
            None => return Err(PluginError::invalid_input("no teacher samples to score")),
        };
        for teacher in samples {
            let shape = teacher.logits.shape();
            if shape.len() != 3 || shape[1] != batch || shape[0] == 0 {
                return Err(PluginError::invalid_input(format!(
                    "samples of teacher `{}` have shape {shape:?}, expected [S >= 1, {batch}, L]",
                    teacher.teacher
                )));
            }
            if self.plan == SamplingPlan::Members && shape[0] < 2 {
                return Err(PluginError::invalid_input(format!(
                    "the ensemble estimator needs teachers with several members, but teacher `{}` has {}",
                    teacher.teacher, shape[0]
                )));
            }
        }
        let mut scores = Vec::with_capacity(batch * samples.len());
        for b in 0..batch {
            for teacher in samples {
                scores.push(self.certainty_of_row(&teacher.logits, b));
            }
        }
        self.scale.apply(&mut scores, samples.len());
        Tensor::new(vec![batch, samples.len()], scores)
    }
}

impl SampleEstimator {
    /// The measure over the passes of row `row` of `[S, M, L]` samples.
    fn certainty_of_row(&self, samples: &Tensor, row: usize) -> f32 {
        let passes: Vec<&[f32]> = (0..samples.shape()[0]).map(|s| samples.at(&[s, row])).collect();
        certainty(self.measure, &passes, self.temperature)
    }
}

/// `mc-fitted`: the measure as ridge fits on the sampled texts predict it (the mean of `bags`
/// fits), for every text; in a split smaller than `minimum`, every text sampled, the measure itself.
pub struct FittedEstimator {
    /// Measures the sampled texts; its plan is a `StochasticShare`.
    pub measured: SampleEstimator,
    pub ridge: f64,
    pub fit_ranks: bool,
    pub bags: usize,
}

impl Estimator for FittedEstimator {
    fn plan(&self) -> SamplingPlan {
        self.measured.plan
    }

    fn score(&self, samples: &[TeacherSamples]) -> PluginResult<Tensor> {
        let texts = samples.first().ok_or_else(|| PluginError::invalid_input("no teacher samples to score"))?.texts();
        let mut columns = Vec::with_capacity(samples.len());
        for teacher in samples {
            check_sampled_rows(teacher, texts)?;
            let measured: Vec<f64> = (0..teacher.rows.len())
                .map(|m| f64::from(self.measured.certainty_of_row(&teacher.logits, m)))
                .collect();
            // Below the minimum the fit is unsteady; from it on, its prediction beats one draw of
            // K passes even on the sampled texts (it averages out their sampling noise).
            let whole_small_split = teacher.rows.len() == texts && texts < self.minimum();
            columns.push(if whole_small_split { measured } else { self.fitted(teacher, &measured)? });
        }
        let mut scores: Vec<f32> = (0..texts).flat_map(|b| columns.iter().map(move |c| c[b] as f32)).collect();
        self.measured.scale.apply(&mut scores, samples.len());
        Tensor::new(vec![texts, samples.len()], scores)
    }
}

impl FittedEstimator {
    /// The plan's minimum of sampled texts.
    fn minimum(&self) -> usize {
        match self.measured.plan {
            SamplingPlan::StochasticShare { minimum, .. } => minimum as usize,
            _ => 0,
        }
    }

    /// Every text's certainty as the fit on the sampled texts predicts it.
    fn fitted(&self, teacher: &TeacherSamples, measured: &[f64]) -> PluginResult<Vec<f64>> {
        let hidden = teacher.hidden().ok_or_else(|| {
            PluginError::invalid_input(format!(
                "teacher `{}` has samples of {} of its {} texts but no hidden states to fit their certainty on",
                teacher.teacher,
                teacher.rows.len(),
                teacher.texts()
            ))
        })?;
        let features: Vec<Vec<f64>> =
            (0..teacher.texts()).map(|b| fit::features(teacher.deterministic.at(&[b]), hidden.at(&[b]))).collect();
        let sampled: Vec<Vec<f64>> = teacher.rows.iter().map(|&r| features[r as usize].clone()).collect();
        let targets = if self.fit_ranks { measures::ranks_f64(measured) } else { measured.to_vec() };
        let fit = fit::Bagged::fit(&sampled, &targets, self.ridge, self.bags);
        Ok(features.iter().map(|f| fit.predict(f)).collect())
    }
}

/// The shapes `mc-fitted` reads: `[B, L]` deterministic, `[S >= 1, M, L]` samples of M >= 2
/// distinct texts in ascending order (or all of them), `[B, H]` hidden states.
fn check_sampled_rows(teacher: &TeacherSamples, texts: usize) -> PluginResult<()> {
    let name = &teacher.teacher;
    let deterministic = teacher.deterministic.shape();
    let labels = deterministic.get(1).copied().unwrap_or(0);
    if deterministic.len() != 2 || deterministic[0] != texts {
        return Err(PluginError::invalid_input(format!(
            "the deterministic pass of teacher `{name}` has shape {deterministic:?}, expected [{texts}, L]"
        )));
    }
    let sampled = teacher.rows.len();
    let shape = teacher.logits.shape();
    if shape.len() != 3 || shape[0] == 0 || shape[1] != sampled || shape[2] != labels {
        return Err(PluginError::invalid_input(format!(
            "samples of teacher `{name}` have shape {shape:?}, expected [S >= 1, {sampled}, {labels}] for its {sampled} sampled texts"
        )));
    }
    if sampled < 2.min(texts)
        || teacher.rows.windows(2).any(|w| w[0] >= w[1])
        || teacher.rows.last().is_some_and(|&r| r as usize >= texts)
    {
        return Err(PluginError::invalid_input(format!(
            "the sampled rows of teacher `{name}` must be at least 2 distinct texts in ascending order below {texts}, got {:?}",
            teacher.rows
        )));
    }
    if let Some(hidden) = teacher.hidden() {
        if hidden.shape().len() != 2 || hidden.shape()[0] != texts {
            return Err(PluginError::invalid_input(format!(
                "the hidden states of teacher `{name}` have shape {:?}, expected [{texts}, H]",
                hidden.shape()
            )));
        }
    }
    Ok(())
}
