//! `{{name}}`: a strategy plugin. For each instance it distils the teacher whose own prediction
//! is most confident (highest top probability). Replace the recipe with your method.

use workbench_plugin_api::{
    export_plugin, math::softmax, params, ComponentKind, ComponentSpec, DistributionTerm,
    ParamTable, Params, Plugin, PluginError, PluginManifest, PluginResult, Recipe, Signals, Strategy, StrategyInput,
    Tensor, Term,
};

pub struct {{Type}}Plugin;

impl Plugin for {{Type}}Plugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "{{name}}",
            ComponentKind::Strategy,
            "Distil, per instance, the teacher with the highest top probability.",
            {{Type}}::specs(),
            Signals::default(),
        )]
    }

    fn create_strategy(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Strategy>> {
        match component {
            "{{name}}" => Ok(Box::new({{Type}}::parse(params)?)),
            other => Err(PluginError::unsupported(format!("no strategy named `{other}`"))),
        }
    }
}

export_plugin!({{Type}}Plugin);

params! {
    /// The strategy is its parameters, declared once: schema and parsing both come from here.
    pub struct {{Type}} {
        /// Distillation temperature.
        temperature: f32 = float(1.0).range(0.05, 100.0),
    }
}

impl Strategy for {{Type}} {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let (batch, union) = (input.batch_size(), input.union_labels.len());
        let mut target = vec![0.0; batch * union];
        for b in 0..batch {
            let confidence = |probs: &[f32]| probs.iter().copied().fold(0.0, f32::max);
            let (teacher, probs) = input
                .teachers
                .iter()
                .map(|t| (t, softmax(t.logits.at(&[b]), self.temperature)))
                .max_by(|(_, p), (_, q)| confidence(p).total_cmp(&confidence(q)))
                .ok_or_else(|| PluginError::invalid_input("no teachers"))?;
            for (&label, p) in teacher.label_map.iter().zip(probs) {
                target[b * union + label as usize] = p;
            }
        }
        Ok(Recipe {
            terms: vec![Term::Distribution(DistributionTerm::new(
                (0..union as u32).collect(),
                Tensor::new(vec![batch, union], target)?,
                self.temperature,
                1.0,
            ))]
            .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use workbench_plugin_testkit::{FakeTeacher, Harness};

    use super::*;

    #[test]
    fn distils_the_most_confident_teacher() {
        // news: [0, ln3] -> [1/4, 3/4] (top 0.75); science: [ln9, 0] -> [0.9, 0.1] (top 0.9).
        let harness = Harness::new(vec![
            FakeTeacher::new("news", &["politics", "sport"], vec![vec![0.0, 3f32.ln()]]),
            FakeTeacher::new("science", &["space", "medicine"], vec![vec![9f32.ln(), 0.0]]),
        ]);
        let recipe = harness.run(&{{Type}} { temperature: 1.0 }, None).unwrap();
        let Term::Distribution(term) = &recipe.terms[0] else { panic!("a distribution term") };
        let expected = [0.0, 0.0, 0.9, 0.1];
        assert!(term.target.data().iter().zip(expected).all(|(g, w)| (g - w).abs() < 1e-6), "{:?}", term.target);
    }
}
