//! Feature strategies. Both add vanilla KD to feature terms whose adapters the host owns.
//! DFA (after Shen et al. 2019): one term, the concatenated teacher hidden states, matched by MSE
//! in an auto-encoded code. CFL (Luo et al. 2019): one term per teacher, matched by multi-kernel
//! MMD in a common space, with reconstruction.

use workbench_plugin_api::{
    FeatureMatch, FeatureTerm, PluginError, PluginResult, Recipe, Strategy, StrategyInput, TeacherSignals, Tensor, Term,
};

use crate::vanilla_kd_term;

#[derive(Debug, Clone, Copy)]
pub struct FeatureSettings {
    pub temperature: f32,
    pub code_dim: u32,
    pub feature_weight: f32,
    pub reconstruction_weight: f32,
}

impl FeatureSettings {
    fn term(&self, name: String, target: Tensor, matching: FeatureMatch) -> Term {
        Term::Feature(FeatureTerm {
            name: name.into(),
            target,
            matching,
            code_dim: self.code_dim,
            reconstruction_weight: self.reconstruction_weight,
            weight: self.feature_weight,
        })
    }

    fn recipe(&self, input: &StrategyInput, features: Vec<Term>) -> PluginResult<Recipe> {
        let mut terms = vec![Term::Distribution(vanilla_kd_term(input, self.temperature)?)];
        terms.extend(features);
        Ok(Recipe { terms: terms.into() })
    }
}

fn hidden<'a>(strategy: &str, teacher: &'a TeacherSignals) -> PluginResult<&'a Tensor> {
    teacher.hidden.as_ref().into_option().ok_or_else(|| {
        PluginError::invalid_input(format!("{strategy} needs hidden states, but teacher `{}` gave none", teacher.name))
    })
}

pub struct Dfa(pub FeatureSettings);

impl Strategy for Dfa {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let batch = input.batch_size();
        let states = input.teachers.iter().map(|t| hidden("dfa", t)).collect::<PluginResult<Vec<_>>>()?;
        let width: usize = states.iter().map(|h| h.shape()[1]).sum();
        let concat: Vec<f32> = (0..batch).flat_map(|b| states.iter().flat_map(move |h| h.at(&[b]).to_vec())).collect();
        let target = Tensor::new(vec![batch, width], concat)?;
        self.0.recipe(input, vec![self.0.term("dfa".into(), target, FeatureMatch::Mse)])
    }
}

pub struct Cfl(pub FeatureSettings);

impl Strategy for Cfl {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let terms = input
            .teachers
            .iter()
            .map(|t| Ok(self.0.term(format!("cfl/{}", t.name), hidden("cfl", t)?.clone(), FeatureMatch::Mmd)))
            .collect::<PluginResult<Vec<_>>>()?;
        self.0.recipe(input, terms)
    }
}
