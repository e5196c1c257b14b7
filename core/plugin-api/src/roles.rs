//! The role interfaces plugin authors implement, in plain Rust.

use abi_stable::std_types::RString;

use crate::{
    ComponentKind, ForwardRequest, ParamTable, PluginError, PluginManifest, PluginResult, Recipe, SamplingPlan,
    StrategyInput, TeacherInfo, TeacherOutput, TeacherSamples, Tensor,
};

/// A teacher: a model fine-tuned on its own label set. It tokenizes its own input.
pub trait Teacher: Send {
    fn info(&self) -> PluginResult<TeacherInfo>;
    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput>;
}

/// An uncertainty estimator: declares the passes it needs, then scores them.
pub trait Estimator: Send {
    fn plan(&self) -> SamplingPlan;
    /// Maps the samples of every teacher (`[S, B, L_t]` each) to certainty scores `[B, T]`,
    /// high = certain, comparable across teachers with different label counts.
    fn score(&self, samples: &[TeacherSamples]) -> PluginResult<Tensor>;
}

/// An amalgamation strategy: turns teacher signals into a supervision recipe.
pub trait Strategy: Send {
    fn recipe(&self, input: &StrategyInput) -> PluginResult<Recipe>;
}

/// A plugin: a manifest and constructors for the components it declares.
///
/// The host validates `params` against the declared schema and fills in defaults before it
/// calls a constructor, so constructors can read every declared parameter.
pub trait Plugin {
    fn manifest() -> PluginManifest;

    /// Called once after loading, with the number of threads the plugin may use.
    fn init(_threads: usize) -> PluginResult<()> {
        Ok(())
    }

    fn create_teacher(component: &str, _params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        Err(not_provided(ComponentKind::Teacher, component))
    }

    fn create_estimator(component: &str, _params: &ParamTable) -> PluginResult<Box<dyn Estimator>> {
        Err(not_provided(ComponentKind::Estimator, component))
    }

    fn create_strategy(component: &str, _params: &ParamTable) -> PluginResult<Box<dyn Strategy>> {
        Err(not_provided(ComponentKind::Strategy, component))
    }
}

fn not_provided(kind: ComponentKind, component: &str) -> PluginError {
    PluginError::unsupported(format!("this plugin provides no {kind} named `{component}`"))
}
