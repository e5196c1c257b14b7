//! Amalgamation strategies: MUKA and the baselines vanilla KD, UHC, DFA and CFL. Each turns
//! teacher signals into a supervision recipe; the host owns the student, the loss and autograd.

mod features;
mod muka;
mod uhc;
mod vanilla_kd;

pub use features::{Cfl, Dfa};
pub use muka::{integration_weights, margin, Integration, Muka};
pub use uhc::Uhc;
pub use vanilla_kd::{vanilla_kd_term, VanillaKd};
use workbench_plugin_api::{
    export_plugin, math::softmax, ComponentKind, ComponentSpec, ParamSpec, ParamTable, Plugin, PluginError,
    PluginManifest, PluginResult, Signals, Strategy, TeacherSignals,
};

pub struct StrategiesPlugin;

fn component(name: &str, doc: &str, params: Vec<ParamSpec>, signals: Signals) -> ComponentSpec {
    ComponentSpec::new(name, ComponentKind::Strategy, doc, params, signals)
}

fn temperature() -> ParamSpec {
    ParamSpec::float("temperature", 1.0, "Temperature T of teacher and student distributions.").range(0.05, 100.0)
}

fn feature_params() -> Vec<ParamSpec> {
    vec![
        temperature(),
        ParamSpec::int("code_dim", 128, "Width of the shared feature space of the host-owned adapters.")
            .range(1.0, 65536.0),
        ParamSpec::float("feature_weight", 1.0, "Weight of the feature-matching loss.").at_least(0.0),
        ParamSpec::float("reconstruction_weight", 1.0, "Weight of the teacher-feature reconstruction loss.")
            .at_least(0.0),
    ]
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
                    "Distil softmax(concat(teacher logits) / T), loss scaled by T².",
                    vec![temperature()],
                    Signals::default(),
                ),
                component(
                    "uhc",
                    "Per teacher, match the student's distribution renormalized over that teacher's labels (UHC).",
                    vec![temperature()],
                    Signals::default(),
                ),
                component(
                    "muka",
                    "Model uncertainty-aware amalgamation: integrate teachers by certainty, weight instances by the score margin.",
                    vec![
                        ParamSpec::choice("integration", &["soft", "hard"], "hard: the most certain teacher; soft: softmax(scores / tau)."),
                        ParamSpec::float("tau", 0.2, "Softmax temperature over scores for soft integration.").range(1e-4, 100.0),
                        ParamSpec::bool("margin", true, "Weight each instance by |s(1) - s(2)| + 1e-6."),
                        ParamSpec::choice(
                            "margin_scale",
                            &["raw", "mean-one"],
                            "raw: the margins as they are (the paper); mean-one: divided by their batch mean, so that \
                             the loss keeps its size when scores crowd together.",
                        ),
                        ParamSpec::bool(
                            "within_blocks",
                            false,
                            "Also match each teacher on its own labels for every instance (UHC's terms, scaled by \
                             T²), so that the student learns within each teacher's labels whatever the selection.",
                        ),
                        temperature(),
                    ],
                    NEEDS_SCORES,
                ),
                component(
                    "dfa",
                    "Feature amalgamation: regress the student's hidden state onto an auto-encoded code of the concatenated teacher hidden states, plus vanilla KD.",
                    feature_params(),
                    NEEDS_HIDDEN,
                ),
                component(
                    "cfl",
                    "Common feature learning: match teacher and student features in a common space with multi-kernel MMD, plus reconstruction and vanilla KD.",
                    feature_params(),
                    NEEDS_HIDDEN,
                )]
    }

    fn create_strategy(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Strategy>> {
        let temperature = params.float("temperature")? as f32;
        let features = || -> PluginResult<features::FeatureSettings> {
            Ok(features::FeatureSettings {
                temperature,
                code_dim: params.int("code_dim")? as u32,
                feature_weight: params.float("feature_weight")? as f32,
                reconstruction_weight: params.float("reconstruction_weight")? as f32,
            })
        };
        Ok(match component {
            "vanilla-kd" => Box::new(VanillaKd { temperature }),
            "uhc" => Box::new(Uhc { temperature }),
            "muka" => Box::new(Muka {
                integration: match params.text("integration")?.as_str() {
                    "hard" => Integration::Hard,
                    _ => Integration::Soft { tau: params.float("tau")? as f32 },
                },
                margin: params.bool("margin")?,
                margin_mean_one: params.text("margin_scale")? == "mean-one",
                temperature,
                within_blocks: params.bool("within_blocks")?,
            }),
            "dfa" => Box::new(Dfa(features()?)),
            "cfl" => Box::new(Cfl(features()?)),
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
