//! `{{name}}`: an estimator plugin. A teacher's certainty on an instance is its top probability
//! at the temperature, from one deterministic pass. Replace the score with your measure.

use workbench_plugin_api::{
    export_plugin, math::softmax, params, ComponentKind, ComponentSpec, Estimator, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, SamplingPlan, Signals, TeacherSamples, Tensor,
};

pub struct {{Type}}Plugin;

impl Plugin for {{Type}}Plugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "{{name}}",
            ComponentKind::Estimator,
            "Certainty = the teacher's top probability, from one deterministic pass.",
            {{Type}}::specs(),
            Signals::default(),
        )]
    }

    fn create_estimator(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Estimator>> {
        match component {
            "{{name}}" => Ok(Box::new({{Type}}::parse(params)?)),
            other => Err(PluginError::unsupported(format!("no estimator named `{other}`"))),
        }
    }
}

export_plugin!({{Type}}Plugin);

params! {
    /// The estimator is its parameters, declared once: schema and parsing both come from here.
    pub struct {{Type}} {
        /// Softmax temperature.
        temperature: f32 = float(1.0).range(0.05, 100.0),
    }
}

impl Estimator for {{Type}} {
    fn plan(&self) -> SamplingPlan {
        SamplingPlan::Deterministic
    }

    /// `[B, T]`: per instance, each teacher's top probability (of its first and only pass).
    fn score(&self, samples: &[TeacherSamples]) -> PluginResult<Tensor> {
        let batch = samples.first().map_or(0, |s| s.logits.shape()[1]);
        let mut scores = vec![0.0; batch * samples.len()];
        for (t, teacher) in samples.iter().enumerate() {
            for b in 0..batch {
                let top = softmax(teacher.logits.at(&[0, b]), self.temperature).into_iter().fold(0.0, f32::max);
                scores[b * samples.len() + t] = top;
            }
        }
        Ok(Tensor::new(vec![batch, samples.len()], scores)?)
    }
}

#[cfg(test)]
mod tests {
    use workbench_plugin_testkit::{FakeTeacher, Harness};

    use super::*;

    #[test]
    fn scores_each_teachers_top_probability() {
        // news: [0, ln3] -> top 3/4; science: [ln9, 0] -> top 9/10.
        let harness = Harness::new(vec![
            FakeTeacher::new("news", &["politics", "sport"], vec![vec![0.0, 3f32.ln()]]),
            FakeTeacher::new("science", &["space", "medicine"], vec![vec![9f32.ln(), 0.0]]),
        ]);
        let scores = {{Type}} { temperature: 1.0 }.score(&harness.deterministic_samples()).unwrap();
        assert_eq!(scores.shape(), &[1, 2]);
        assert!((scores.data()[0] - 0.75).abs() < 1e-6 && (scores.data()[1] - 0.9).abs() < 1e-6, "{scores:?}");
    }
}
