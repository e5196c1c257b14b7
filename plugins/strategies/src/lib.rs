//! Amalgamation strategies: MUKA and the baselines vanilla KD, UHC, DFA and CFL. Each turns
//! teacher signals into a supervision recipe; the host owns the student, the loss and autograd.

mod features;
mod muka;
mod uhc;
mod vanilla_kd;

pub use features::{Cfl, Dfa, FeatureSettings};
pub use muka::{integration_weights, margin, Integration, Muka, MukaParams};
pub use uhc::Uhc;
pub use vanilla_kd::{vanilla_kd_term, VanillaKd};
use workbench_plugin_api::{
    export_plugin, math::softmax, params, ComponentKind, ComponentSpec, ParamSpec, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, Signals, Strategy, TeacherSignals,
};

pub struct StrategiesPlugin;

fn component(name: &str, doc: &str, params: Vec<ParamSpec>, signals: Signals) -> ComponentSpec {
    ComponentSpec::new(name, ComponentKind::Strategy, doc, params, signals)
}

/// The temperature every strategy takes.
fn temperature() -> ParamSpec {
    ParamSpec::float("", 1.0, "Temperature T of teacher and student distributions.").range(0.05, 100.0)
}

params! {
    /// The parameters of vanilla KD and UHC.
    pub struct DistillationParams {
        temperature: f32 = temperature(),
    }
}

const NEEDS_HIDDEN: Signals =
    Signals { stochastic_passes: false, member_passes: false, hidden_states: true, scores: false };
const NEEDS_SCORES: Signals =
    Signals { stochastic_passes: false, member_passes: false, hidden_states: false, scores: true };

impl Plugin for StrategiesPlugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![
            component(
                "vanilla-kd",
                "Distil softmax(concat(teacher logits) / T), loss scaled by T² (Hinton et al. 2015, arXiv:1503.02531).",
                DistillationParams::specs(),
                Signals::default(),
            ),
            component(
                "uhc",
                "Per teacher, match the student's distribution renormalized over that teacher's labels (UHC: Vongkulbhisal et al., CVPR 2019).",
                DistillationParams::specs(),
                Signals::default(),
            ),
            component(
                "muka",
                "Model uncertainty-aware amalgamation: integrate teachers by certainty, weight instances by the score margin (MUKA: Li et al. 2021, arXiv:2112.07327).",
                MukaParams::specs(),
                NEEDS_SCORES,
            ),
            component(
                "dfa",
                "Feature amalgamation: regress the student's hidden state onto an auto-encoded code of the concatenated teacher hidden states, plus vanilla KD (after Shen et al., AAAI 2019).",
                FeatureSettings::specs(),
                NEEDS_HIDDEN,
            ),
            component(
                "cfl",
                "Common feature learning: match teacher and student features in a common space with multi-kernel MMD, plus reconstruction and vanilla KD (CFL: Luo et al., IJCAI 2019).",
                FeatureSettings::specs(),
                NEEDS_HIDDEN,
            )
        ]
    }

    fn create_strategy(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Strategy>> {
        Ok(match component {
            "vanilla-kd" => Box::new(VanillaKd { temperature: DistillationParams::parse(params)?.temperature }),
            "uhc" => Box::new(Uhc { temperature: DistillationParams::parse(params)?.temperature }),
            "muka" => Box::new(Muka::from(MukaParams::parse(params)?)),
            "dfa" => Box::new(Dfa(FeatureSettings::parse(params)?)),
            "cfl" => Box::new(Cfl(FeatureSettings::parse(params)?)),
            other => return Err(PluginError::unsupported(format!("no strategy named `{other}`"))),
        })
    }
}

export_plugin!(StrategiesPlugin);

/// A teacher's distribution for instance `b` at temperature `temperature`.
fn teacher_probs(teacher: &TeacherSignals, b: usize, temperature: f32) -> Vec<f32> {
    softmax(teacher.logits.at(&[b]), temperature)
}

#[cfg(test)]
mod example;
