//! Vanilla KD: target = softmax(concat_t(logits_t) / T) over the concatenation of the teachers'
//! label maps; loss T² · KL(target || softmax(student[labels] / T)).
//!
//! Overlapping labels: a union label that several teachers own appears once in the term, with
//! the sum of its copies' probabilities in the softmax of the concatenation (the mass the
//! teachers together give it); the student's softmax then runs over distinct labels only.

use workbench_plugin_api::{
    math::softmax, DistributionTerm, PluginResult, Recipe, Strategy, StrategyInput, Tensor, Term,
};

pub struct VanillaKd {
    pub temperature: f32,
}

/// The vanilla KD term, shared by the feature strategies that add it to their own terms.
pub fn vanilla_kd_term(input: &StrategyInput, temperature: f32) -> PluginResult<DistributionTerm> {
    let batch = input.batch_size();
    let copies: Vec<u32> = input.teachers.iter().flat_map(|t| t.label_map.iter().copied()).collect();
    let mut labels: Vec<u32> = Vec::with_capacity(copies.len());
    for &label in &copies {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    // Where each copy's probability goes in the term.
    let slot: Vec<usize> =
        copies.iter().map(|c| labels.iter().position(|l| l == c).expect("every copy has a slot")).collect();
    let mut target = vec![0.0f32; batch * labels.len()];
    for (b, row) in target.chunks_mut(labels.len()).enumerate() {
        let concat: Vec<f32> = input.teachers.iter().flat_map(|t| t.logits.at(&[b]).to_vec()).collect();
        for (&at, p) in slot.iter().zip(softmax(&concat, temperature)) {
            row[at] += p;
        }
    }
    let target = Tensor::new(vec![batch, labels.len()], target)?;
    Ok(DistributionTerm::new(labels, target, temperature, temperature * temperature))
}

impl Strategy for VanillaKd {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        Ok(Recipe { terms: vec![Term::Distribution(vanilla_kd_term(input, self.temperature)?)].into() })
    }
}
