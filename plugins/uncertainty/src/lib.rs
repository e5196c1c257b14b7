//! Uncertainty estimators. Each maps teacher samples to a certainty score per instance and
//! teacher, normalized by the teacher's label count so that teachers are comparable.

mod measures;

pub use measures::{certainty, Measure};
use workbench_plugin_api::{
    export_plugin, ComponentKind, ComponentSpec, Estimator, ParamSpec, ParamTable, Plugin, PluginError,
    PluginManifest, PluginResult, SamplingPlan, TeacherSamples, Tensor, API_VERSION,
};

pub struct UncertaintyPlugin;

impl Plugin for UncertaintyPlugin {
    fn manifest() -> PluginManifest {
        PluginManifest {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: API_VERSION,
            components: vec![ComponentSpec {
                name: "entropy".into(),
                kind: ComponentKind::Estimator,
                doc: "Certainty from one deterministic pass per teacher.".into(),
                params: vec![ParamSpec::choice(
                    "measure",
                    &["entropy", "max-prob"],
                    "entropy: 1 - H(p)/log|L|; max-prob: (max p - 1/|L|) / (1 - 1/|L|).",
                )]
                .into(),
                signals: SamplingPlan::Deterministic.signals(),
            }]
            .into(),
        }
    }

    fn create_estimator(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Estimator>> {
        match component {
            "entropy" => Ok(Box::new(SampleEstimator {
                plan: SamplingPlan::Deterministic,
                measure: Measure::parse(&params.text("measure")?)?,
            })),
            other => Err(PluginError::unsupported(format!("no estimator named `{other}`"))),
        }
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
        for (t, teacher) in samples.iter().enumerate() {
            let shape = teacher.probs.shape();
            if shape.len() != 3 || shape[1] != batch || shape[0] == 0 {
                return Err(PluginError::invalid_input(format!(
                    "samples of teacher {t} have shape {shape:?}, expected [S >= 1, {batch}, L]"
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
