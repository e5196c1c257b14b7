//! Uncertainty estimators. Each maps teacher samples to a certainty score per instance and
//! teacher, normalized by the teacher's label count so that teachers are comparable.

mod measures;

pub use measures::{certainty, Measure};
use workbench_plugin_api::{
    export_plugin, ComponentKind, ComponentSpec, Estimator, ParamSpec, ParamTable, Plugin, PluginError, PluginManifest,
    PluginResult, SamplingPlan, TeacherSamples, Tensor,
};

#[cfg(test)]
mod tests;

pub struct UncertaintyPlugin;

fn measure_param(choices: &[&str]) -> ParamSpec {
    ParamSpec::choice(
        "measure",
        choices,
        "entropy: 1 - H(mean p)/ln|L|; mutual-information: 1 - (H(mean p) - mean H(p))/ln|L| (BALD); \
         max-prob: (max mean p - 1/|L|)/(1 - 1/|L|).",
    )
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
                    vec![measure_param(&["entropy", "max-prob"])],
                    SamplingPlan::Deterministic,
                ),
                component(
                    "mc-dropout",
                    "Certainty from K stochastic passes with dropout on (Monte-Carlo dropout).",
                    vec![
                        ParamSpec::int("passes", 16, "Number of stochastic passes K.").range(2.0, 1024.0),
                        measure_param(&["entropy", "mutual-information", "max-prob"]),
                        ParamSpec::int(
                            "top_layers",
                            0,
                            "0: dropout in every layer; N: only the top N layers are stochastic and the lower ones run once.",
                        )
                        .range(0.0, 256.0),
                        ParamSpec::int(
                            "lower_passes",
                            0,
                            "With top_layers = N: 0 runs the lower layers once without dropout; M runs them M times \
                             with dropout, and the K top-layer passes take those M samples in turn (cost about M \
                             passes of the lower layers).",
                        )
                        .range(0.0, 1024.0),
                    ],
                    stochastic,
                ),
                component(
                    "ensemble",
                    "Certainty from the members of ensemble teachers (one deterministic pass per member).",
                    vec![measure_param(&["entropy", "mutual-information", "max-prob"])],
                    SamplingPlan::Members,
                )]
    }

    fn create_estimator(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Estimator>> {
        let plan = match component {
            "entropy" => SamplingPlan::Deterministic,
            "mc-dropout" => {
                let (passes, top_layers, lower_passes) =
                    (params.int("passes")?, params.int("top_layers")?, params.int("lower_passes")?);
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
                SamplingPlan::Stochastic {
                    passes: passes as u32,
                    top_layers: top_layers as u32,
                    lower_passes: lower_passes as u32,
                }
            }
            "ensemble" => SamplingPlan::Members,
            other => return Err(PluginError::unsupported(format!("no estimator named `{other}`"))),
        };
        Ok(Box::new(SampleEstimator { plan, measure: Measure::parse(&params.text("measure")?)? }))
    }
}

export_plugin!(UncertaintyPlugin);

/// Scores the samples of a plan with one measure.
pub struct SampleEstimator {
    pub plan: SamplingPlan,
    pub measure: Measure,
}

impl Estimator for SampleEstimator {
    fn plan(&self) -> SamplingPlan {
        self.plan
    }

    fn score(&self, samples: &[TeacherSamples]) -> PluginResult<Tensor> {
        let batch = match samples.first() {
            Some(first) if first.probs.shape().len() == 3 => first.probs.shape()[1],
            Some(first) => {
                return Err(PluginError::invalid_input(format!(
                    "teacher samples must be [S, B, L], got shape {:?}",
                    first.probs.shape()
                )))
            }
            None => return Err(PluginError::invalid_input("no teacher samples to score")),
        };
        for teacher in samples {
            let shape = teacher.probs.shape();
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
                let passes: Vec<&[f32]> = (0..teacher.probs.shape()[0]).map(|s| teacher.probs.at(&[s, b])).collect();
                scores.push(certainty(self.measure, &passes));
            }
        }
        Tensor::new(vec![batch, samples.len()], scores)
    }
}
