//! `vanilla-kd`: distil the softmax of the concatenated teacher logits.
//!
//! target = softmax(concat_t(logits_t) / T) over the concatenation of the teachers' label maps;
//! loss T² · KL(target || softmax(student[labels] / T)).

use workbench_plugin_api::{
    abi_stable::std_types::ROption, export_plugin, math::softmax, ComponentKind, ComponentSpec,
    DistributionTerm, ParamSpec, ParamTable, Plugin, PluginError, PluginManifest, PluginResult, Recipe,
    Signals, Strategy, StrategyInput, Tensor, Term, API_VERSION,
};

pub struct VanillaKdPlugin;

impl Plugin for VanillaKdPlugin {
    fn manifest() -> PluginManifest {
        PluginManifest {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: API_VERSION,
            components: vec![ComponentSpec {
                name: "vanilla-kd".into(),
                kind: ComponentKind::Strategy,
                doc: "Distil softmax(concat(teacher logits) / T), loss scaled by T².".into(),
                params: vec![ParamSpec::float("temperature", 1.0, "Distillation temperature T.").range(0.05, 100.0)]
                    .into(),
                signals: Signals::default(),
            }]
            .into(),
        }
    }

    fn create_strategy(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Strategy>> {
        match component {
            "vanilla-kd" => Ok(Box::new(VanillaKd { temperature: params.float("temperature")? as f32 })),
            other => Err(PluginError::unsupported(format!("no strategy named `{other}`"))),
        }
    }
}

export_plugin!(VanillaKdPlugin);

pub struct VanillaKd {
    pub temperature: f32,
}

impl Strategy for VanillaKd {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let batch = input.batch_size();
        let labels: Vec<u32> = input.teachers.iter().flat_map(|t| t.label_map.iter().copied()).collect();
        let mut target = Vec::with_capacity(batch * labels.len());
        for b in 0..batch {
            let concat: Vec<f32> = input.teachers.iter().flat_map(|t| t.logits.at(&[b]).to_vec()).collect();
            target.extend(softmax(&concat, self.temperature));
        }
        Ok(Recipe {
            terms: vec![Term::Distribution(DistributionTerm {
                labels: labels.clone().into(),
                target: Tensor::new(vec![batch, labels.len()], target)?,
                weights: ROption::RNone,
                temperature: self.temperature,
                scale: self.temperature * self.temperature,
            })]
            .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use workbench_plugin_api::TeacherSignals;

    fn teacher(name: &str, label_map: Vec<u32>, rows: &[Vec<f32>]) -> TeacherSignals {
        TeacherSignals {
            name: name.into(),
            label_map: label_map.into(),
            logits: Tensor::from_rows(rows).unwrap(),
            hidden: ROption::RNone,
        }
    }

    #[test]
    fn target_is_softmax_of_concatenated_logits() {
        // Teacher A (2 labels -> union 0, 1), teacher B (1 label -> union 2); batch of 1.
        // concat = [0, ln 2, ln 5]; T = 1: exp = [1, 2, 5] / 8
        let input = StrategyInput {
            union_labels: vec!["a".into(), "b".into(), "c".into()].into(),
            teachers: vec![
                teacher("A", vec![0, 1], &[vec![0.0, 2f32.ln()]]),
                teacher("B", vec![2], &[vec![5f32.ln()]]),
            ]
            .into(),
            scores: ROption::RNone,
        };
        let recipe = VanillaKd { temperature: 1.0 }.recipe(&input).unwrap();
        let Term::Distribution(term) = &recipe.terms[0] else { panic!("expected a distribution term") };
        assert_eq!(term.labels.as_slice(), &[0, 1, 2]);
        let expected = [0.125, 0.25, 0.625];
        for (got, want) in term.target.data().iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // T = 2 halves the logits: [0, ln 2 / 2, ln 5 / 2] -> [1, √2, √5] / (1 + √2 + √5); scale 4
        let recipe = VanillaKd { temperature: 2.0 }.recipe(&input).unwrap();
        let Term::Distribution(term) = &recipe.terms[0] else { panic!() };
        let z = 1.0 + 2f32.sqrt() + 5f32.sqrt();
        assert!((term.target.data()[2] - 5f32.sqrt() / z).abs() < 1e-6);
        assert_eq!(term.scale, 4.0);
    }
}
