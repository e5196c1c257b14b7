//! Feature strategies. Both add vanilla KD to feature terms whose adapters the host owns.
//! DFA (after Shen et al. 2019): one term, the concatenated teacher hidden states, matched by MSE
//! in an auto-encoded code. CFL (Luo et al. 2019): one term per teacher, matched by multi-kernel
//! MMD in a common space, with reconstruction.

use workbench_plugin_api::{
    params, FeatureMatch, FeatureTerm, PluginError, PluginResult, Recipe, Strategy, StrategyInput, TeacherSignals,
    Tensor, Term,
};

use crate::{temperature, vanilla_kd_term};

params! {
    /// The parameters of DFA and CFL.
    pub struct FeatureSettings {
        temperature: f32 = temperature(),
        /// Width of the shared feature space of the host-owned adapters.
        code_dim: u32 = int(128).range(1.0, 65536.0),
        /// Weight of the feature-matching loss.
        feature_weight: f32 = float(1.0).at_least(0.0),
        /// Weight of the teacher-feature reconstruction loss.
        reconstruction_weight: f32 = float(1.0).at_least(0.0),
    }
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
    teacher.hidden().ok_or_else(|| {
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
