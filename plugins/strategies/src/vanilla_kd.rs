//! Vanilla KD: target = softmax(concat_t(logits_t) / T) over the concatenation of the teachers'
//! label maps; loss T² · KL(target || softmax(student[labels] / T)).

use workbench_plugin_api::{
    abi_stable::std_types::ROption, math::softmax, DistributionTerm, PluginResult, Recipe, Strategy, StrategyInput,
    Tensor, Term,
};

pub struct VanillaKd {
    pub temperature: f32,
}

/// The vanilla KD term, shared by the feature strategies that add it to their own terms.
pub fn vanilla_kd_term(input: &StrategyInput, temperature: f32) -> PluginResult<DistributionTerm> {
    let batch = input.batch_size();
    let labels: Vec<u32> = input.teachers.iter().flat_map(|t| t.label_map.iter().copied()).collect();
    let mut target = Vec::with_capacity(batch * labels.len());
    for b in 0..batch {
        let concat: Vec<f32> = input.teachers.iter().flat_map(|t| t.logits.at(&[b]).to_vec()).collect();
        target.extend(softmax(&concat, temperature));
    }
    Ok(DistributionTerm {
        target: Tensor::new(vec![batch, labels.len()], target)?,
        labels: labels.into(),
        weights: ROption::RNone,
        temperature,
        scale: temperature * temperature,
    })
}

impl Strategy for VanillaKd {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        Ok(Recipe { terms: vec![Term::Distribution(vanilla_kd_term(input, self.temperature)?)].into() })
    }
}
