//! `fixed-logits`: a teacher with fixed logits and no model.
//!
//! The i-th text of every call gets row `i % rows.len()` of the configured logits. Stochastic
//! passes and ensemble members add seeded Gaussian noise, so every estimator can be exercised
//! without a model; the hidden state is the deterministic logit row itself.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use workbench_plugin_api::{
    export_plugin, params, ComponentKind, ComponentSpec, ForwardRequest, ParamKind, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, RString, Sampling, Signals, Teacher, TeacherInfo, TeacherOutput, Tensor,
};

pub struct FixedTeacherPlugin;

params! {
    /// What a config sets of a `fixed-logits` teacher.
    pub struct FixedLogitsParams {
        /// The teacher's label names, in logit order.
        labels: Vec<String> = required(ParamKind::TextList),
        /// Logit rows; the i-th text of a call gets row i mod rows.
        rows: Vec<Vec<f64>> = required(ParamKind::FloatMatrix),
        /// Std of the seeded Gaussian noise of stochastic passes and members.
        noise: f32 = float(0.5).at_least(0.0),
        /// Number of simulated ensemble members.
        members: usize = int(1).range(1.0, 64.0),
    }
}

impl Plugin for FixedTeacherPlugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "fixed-logits",
            ComponentKind::Teacher,
            "A teacher with fixed logits per input position and no model (tests, strategy development).",
            FixedLogitsParams::specs(),
            Signals { stochastic_passes: true, member_passes: true, hidden_states: true, scores: false },
        )]
    }

    fn create_teacher(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        if component != "fixed-logits" {
            return Err(PluginError::unsupported(format!("no teacher named `{component}`")));
        }
        Ok(Box::new(FixedTeacher::from_params(params)?))
    }
}

export_plugin!(FixedTeacherPlugin);

pub struct FixedTeacher {
    labels: Vec<String>,
    rows: Vec<Vec<f32>>,
    noise: f32,
    members: usize,
}

impl FixedTeacher {
    pub fn new(labels: Vec<String>, rows: Vec<Vec<f32>>, noise: f32, members: usize) -> PluginResult<Self> {
        if rows.is_empty() {
            return Err(PluginError::invalid_input("`rows` is empty: give at least one row of logits"));
        }
        if let Some(bad) = rows.iter().position(|row| row.len() != labels.len()) {
            return Err(PluginError::invalid_input(format!(
                "row {bad} of `rows` has {} logits, but there are {} labels",
                rows[bad].len(),
                labels.len()
            )));
        }
        Ok(Self { labels, rows, noise, members })
    }

    fn from_params(params: &ParamTable) -> PluginResult<Self> {
        let FixedLogitsParams { labels, rows, noise, members } = FixedLogitsParams::parse(params)?;
        let rows = rows.into_iter().map(|row| row.into_iter().map(|x| x as f32).collect()).collect();
        Self::new(labels, rows, noise, members)
    }

    fn row(&self, position: usize) -> &[f32] {
        &self.rows[position % self.rows.len()]
    }

    /// The logits of `batch` texts plus noise drawn from `seed` (no noise when `seed` is None).
    fn noisy_logits(&self, batch: usize, seed: Option<u64>) -> Vec<f32> {
        let mut logits: Vec<f32> = (0..batch).flat_map(|i| self.row(i).to_vec()).collect();
        if let Some(seed) = seed {
            let mut rng = StdRng::seed_from_u64(seed);
            let normal = Normal::new(0.0, self.noise).expect("noise is validated to be >= 0");
            logits.iter_mut().for_each(|x| *x += normal.sample(&mut rng));
        }
        logits
    }

    fn member_seed(member: usize) -> u64 {
        0x6d65_6d62_6572 ^ member as u64
    }
}

impl Teacher for FixedTeacher {
    fn info(&self) -> PluginResult<TeacherInfo> {
        Ok(TeacherInfo {
            labels: self.labels.iter().map(|l| l.as_str().into()).collect(),
            hidden_size: self.labels.len(),
            members: self.members,
        })
    }

    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput> {
        let batch = texts.len();
        let labels = self.labels.len();
        let samples: Vec<Vec<f32>> = match request.sampling {
            Sampling::Deterministic if self.members == 1 => vec![self.noisy_logits(batch, None)],
            Sampling::Deterministic => {
                let mut mean = vec![0.0; batch * labels];
                for member in 0..self.members {
                    let logits = self.noisy_logits(batch, Some(Self::member_seed(member)));
                    mean.iter_mut().zip(logits).for_each(|(m, x)| *m += x / self.members as f32);
                }
                vec![mean]
            }
            Sampling::Stochastic { passes, seed, .. } => (0..passes as u64)
                .map(|pass| self.noisy_logits(batch, Some(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(pass))))
                .collect(),
            Sampling::Members => {
                (0..self.members).map(|member| self.noisy_logits(batch, Some(Self::member_seed(member)))).collect()
            }
        };
        let hidden = if request.want_hidden {
            Some(Tensor::new(vec![batch, labels], self.noisy_logits(batch, None))?)
        } else {
            None
        };
        let passes = samples.len();
        Ok(TeacherOutput::new(Tensor::new(vec![passes, batch, labels], samples.concat())?, hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teacher(members: usize) -> FixedTeacher {
        FixedTeacher::new(vec!["a".into(), "b".into()], vec![vec![1.0, 2.0], vec![3.0, -1.0]], 0.5, members).unwrap()
    }

    fn texts(n: usize) -> Vec<RString> {
        (0..n).map(|i| RString::from(format!("text {i}"))).collect()
    }

    fn forward(t: &mut FixedTeacher, sampling: Sampling) -> TeacherOutput {
        t.forward(&texts(3), &ForwardRequest { sampling, want_hidden: true }).unwrap()
    }

    #[test]
    fn deterministic_pass_cycles_through_rows() {
        let out = forward(&mut teacher(1), Sampling::Deterministic);
        assert_eq!(out.logits.shape(), &[1, 3, 2]);
        assert_eq!(out.logits.data(), &[1.0, 2.0, 3.0, -1.0, 1.0, 2.0]);
        assert_eq!(out.hidden.unwrap().data(), &[1.0, 2.0, 3.0, -1.0, 1.0, 2.0]);
    }

    #[test]
    fn stochastic_passes_are_seeded() {
        let mut t = teacher(1);
        let stochastic = |seed| Sampling::Stochastic { passes: 4, seed, top_layers: 0, lower_passes: 0 };
        let a = forward(&mut t, stochastic(7));
        let b = forward(&mut t, stochastic(7));
        let c = forward(&mut t, stochastic(8));
        assert_eq!(a.logits.shape(), &[4, 3, 2]);
        assert_eq!(a, b);
        assert_ne!(a.logits, c.logits);
        assert_ne!(a.logits.at(&[0]), a.logits.at(&[1]), "passes of one call differ");
    }

    #[test]
    fn members_average_to_the_deterministic_pass() {
        let mut t = teacher(3);
        let members = forward(&mut t, Sampling::Members).logits;
        let mean = forward(&mut t, Sampling::Deterministic).logits;
        assert_eq!(members.shape(), &[3, 3, 2]);
        for i in 0..6 {
            let avg = (0..3).map(|m| members.at(&[m])[i]).sum::<f32>() / 3.0;
            assert!((avg - mean.data()[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn rows_must_match_labels() {
        let err = FixedTeacher::new(vec!["a".into()], vec![vec![1.0, 2.0]], 0.0, 1).err().unwrap();
        assert!(err.message.contains("row 0"), "{err}");
    }
}
