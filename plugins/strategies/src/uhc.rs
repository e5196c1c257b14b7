//! UHC (Vongkulbhisal et al. 2019): for each teacher, the student's distribution renormalized
//! over that teacher's labels matches the teacher there; the terms add up, each scaled by T²
//! as in distillation, so that its gradients keep their size whatever the temperature.

use workbench_plugin_api::{DistributionTerm, PluginResult, Recipe, Strategy, StrategyInput, Tensor, Term};

use crate::teacher_probs;

pub struct Uhc {
    pub temperature: f32,
}

impl Strategy for Uhc {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe> {
        let batch = input.batch_size();
        let terms = input
            .teachers
            .iter()
            .map(|teacher| {
                let target: Vec<f32> = (0..batch).flat_map(|b| teacher_probs(teacher, b, self.temperature)).collect();
                let target = Tensor::new(vec![batch, teacher.label_map.len()], target)?;
                let (labels, temperature) = (teacher.label_map.to_vec(), self.temperature);
                Ok(Term::Distribution(DistributionTerm::new(labels, target, temperature, temperature * temperature)))
            })
            .collect::<PluginResult<Vec<_>>>()?;
        Ok(Recipe { terms: terms.into() })
    }
}
