//! Plain data exchanged between host and plugins.

use abi_stable::{
    std_types::{ROption, RStr, RString, RVec},
    StableAbi,
};

use crate::{ApiVersion, ParamSpec, PluginError, PluginResult};

/// A dense row-major `f32` tensor: the only numeric type that crosses the boundary.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: RVec<usize>,
    #[serde(with = "crate::floats::vec")]
    data: RVec<f32>,
}

impl Tensor {
    /// Builds a tensor, refusing data whose length does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> PluginResult<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(PluginError::invalid_input(format!(
                "tensor of shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape: shape.into(), data: data.into() })
    }

    /// A `[rows.len(), width]` tensor from rows of equal width.
    pub fn from_rows(rows: &[Vec<f32>]) -> PluginResult<Self> {
        let width = rows.first().map_or(0, Vec::len);
        if let Some(bad) = rows.iter().position(|row| row.len() != width) {
            return Err(PluginError::invalid_input(format!(
                "row {bad} has {} values, row 0 has {width}",
                rows[bad].len()
            )));
        }
        Self::new(vec![rows.len(), width], rows.concat())
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        Self { shape: shape.into(), data: vec![0.0; len].into() }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data.into_vec()
    }

    /// The contiguous slice at `index` along the leading dimensions (`t.at(&[s, b])` of a
    /// `[S, B, L]` tensor is one row of `L` values).
    pub fn at(&self, index: &[usize]) -> &[f32] {
        assert!(index.len() <= self.shape.len(), "index {index:?} deeper than shape {:?}", self.shape);
        let inner: usize = self.shape[index.len()..].iter().product();
        let mut offset = 0;
        for (axis, &i) in index.iter().enumerate() {
            assert!(i < self.shape[axis], "index {index:?} out of shape {:?}", self.shape);
            offset = offset * self.shape[axis] + i;
        }
        &self.data[offset * inner..(offset + 1) * inner]
    }

    /// The sub-tensor at `index` along the first dimension, as a tensor of its own (the
    /// `[B, L]` of a `[1, B, L]` pass).
    pub fn part(&self, index: usize) -> Tensor {
        Tensor { shape: self.shape[1..].to_vec().into(), data: self.at(&[index]).to_vec().into() }
    }

    /// Refuses NaN and infinities, naming `what` and the first bad position.
    pub fn check_finite(&self, what: &str) -> Result<(), String> {
        check_finite(what, &self.data)
    }

    /// Checks the shape against an expectation, naming `what` in the error.
    pub fn expect_shape(&self, what: &str, expected: &[usize]) -> PluginResult<()> {
        if self.shape() == expected {
            Ok(())
        } else {
            Err(PluginError::invalid_input(format!("{what} has shape {:?}, expected {expected:?}", self.shape())))
        }
    }
}

/// The three roles a component can play.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentKind {
    Teacher,
    Estimator,
    Strategy,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Teacher => "teacher",
            ComponentKind::Estimator => "estimator",
            ComponentKind::Strategy => "strategy",
        }
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Teacher signals. For a teacher: what it can produce. For an estimator or strategy: what it
/// needs. The host matches the two when it checks a config, before any model loads.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Seeded stochastic passes (dropout on).
    pub stochastic_passes: bool,
    /// One pass per ensemble member.
    pub member_passes: bool,
    /// Pooled hidden states next to the logits.
    pub hidden_states: bool,
    /// Per-instance certainty scores from an estimator (strategies only).
    pub scores: bool,
}

/// One component of a plugin, as declared in its manifest.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct ComponentSpec {
    /// The name configs use to refer to it, unique among all loaded plugins.
    pub name: RString,
    pub kind: ComponentKind,
    /// One line on what it does.
    pub doc: RString,
    pub params: RVec<ParamSpec>,
    pub signals: Signals,
}

impl ComponentSpec {
    pub fn new(name: &str, kind: ComponentKind, doc: &str, params: Vec<ParamSpec>, signals: Signals) -> Self {
        Self { name: name.into(), kind, doc: doc.into(), params: params.into(), signals }
    }
}

/// What a plugin declares about itself; read by the host before anything is created.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct PluginManifest {
    pub name: RString,
    pub version: RString,
    pub api_version: ApiVersion,
    pub components: RVec<ComponentSpec>,
}

impl PluginManifest {
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components.iter().find(|c| c.name == name)
    }
}

/// Severity of a log line forwarded from a plugin to the host.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What the host tells a plugin once, right after loading it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostContext {
    /// Threads the plugin may use for its own compute pools.
    pub threads: u32,
    /// The most verbose level the host will print.
    pub max_log_level: LogLevel,
    /// The host's logger, called with level, target and message. Plugins have their own
    /// `tracing` dispatcher, so their events are forwarded through this to the host's log.
    pub log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
}

// ----- teachers -----

/// What a loaded teacher reports about itself.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct TeacherInfo {
    /// Its label names, in the order of its logits.
    pub labels: RVec<RString>,
    /// Size of the pooled hidden state, 0 when it has none.
    pub hidden_size: usize,
    /// Number of ensemble members (1 for a single model).
    pub members: usize,
}

/// How the host asks a teacher to run.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// One pass with dropout off; members, if any, are averaged.
    Deterministic,
    /// `passes` passes with dropout on, reproducible from `seed`. `top_layers` > 0 asks that only
    /// the top layers be stochastic; 0 means every layer. The lower layers then run once
    /// deterministically (`lower_passes` = 0) or `lower_passes` times with dropout on, the
    /// top-layer passes taking those lower samples in turn.
    Stochastic { passes: u32, seed: u64, top_layers: u32, lower_passes: u32 },
    /// One deterministic pass per ensemble member.
    Members,
}

#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardRequest {
    pub sampling: Sampling,
    /// Also return the pooled hidden state of the deterministic pass.
    pub want_hidden: bool,
}

/// A teacher's answer to a [`ForwardRequest`] over `B` texts.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct TeacherOutput {
    /// `[S, B, L]`: S = 1 for a deterministic pass, the number of passes or members otherwise.
    pub logits: Tensor,
    /// `[B, H]` when asked for and available.
    pub hidden: ROption<Tensor>,
}

impl TeacherOutput {
    pub fn new(logits: Tensor, hidden: Option<Tensor>) -> Self {
        Self { logits, hidden: hidden.into() }
    }

    pub fn hidden(&self) -> Option<&Tensor> {
        self.hidden.as_ref().into_option()
    }
}

// ----- estimators -----

/// The passes an estimator needs from every teacher; the host runs them.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplingPlan {
    Deterministic,
    Stochastic {
        passes: u32,
        top_layers: u32,
        lower_passes: u32,
    },
    Members,
    /// `passes` stochastic passes over a share of the texts only (`per_mille` of them, at least
    /// `minimum`, chosen by the MC seed), beside every text's deterministic pass with its pooled
    /// hidden state: the estimator predicts the certainty of the texts it was not given samples of.
    /// A run samples its training texts; held-out texts (validation, test) get no passes of their
    /// own and are scored after the training texts, in one call with their samples (but where
    /// the training split has fewer than `minimum` texts: then each split is sampled on its own).
    StochasticShare {
        passes: u32,
        per_mille: u32,
        minimum: u32,
    },
}

/// The plan in words, for progress lines and logs (`16 dropout passes`).
impl std::fmt::Display for SamplingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SamplingPlan::Deterministic => write!(f, "one deterministic pass"),
            SamplingPlan::Members => write!(f, "one pass per ensemble member"),
            SamplingPlan::Stochastic { passes, top_layers: 0, .. } => write!(f, "{passes} dropout passes"),
            SamplingPlan::Stochastic { passes, top_layers, lower_passes: 0 } => {
                write!(f, "{passes} dropout passes through the top {top_layers} layers")
            }
            SamplingPlan::Stochastic { passes, top_layers, lower_passes } => write!(
                f,
                "{passes} dropout passes through the top {top_layers} layers over {lower_passes} dropout passes below"
            ),
            SamplingPlan::StochasticShare { passes, per_mille, minimum } => write!(
                f,
                "{passes} dropout passes over {:.1} % of the texts (at least {minimum})",
                f64::from(per_mille) / 10.0
            ),
        }
    }
}

impl SamplingPlan {
    /// The request for this plan; `seed` comes from the run's MC seed.
    pub fn request(self, seed: u64) -> Sampling {
        match self {
            SamplingPlan::Deterministic => Sampling::Deterministic,
            SamplingPlan::Stochastic { passes, top_layers, lower_passes } => {
                Sampling::Stochastic { passes, seed, top_layers, lower_passes }
            }
            SamplingPlan::Members => Sampling::Members,
            SamplingPlan::StochasticShare { .. } => self.per_text().request(seed),
        }
    }

    /// The plan each sampled text runs under: plain MC for a share plan's texts, the plan itself
    /// otherwise.
    pub fn per_text(self) -> SamplingPlan {
        match self {
            SamplingPlan::StochasticShare { passes, .. } => {
                SamplingPlan::Stochastic { passes, top_layers: 0, lower_passes: 0 }
            }
            other => other,
        }
    }

    /// How many of `texts` texts get sampled passes: all of them but under `StochasticShare`.
    pub fn sampled_texts(self, texts: usize) -> usize {
        match self {
            SamplingPlan::StochasticShare { per_mille, minimum, .. } => {
                (texts * per_mille as usize).div_ceil(1000).max(minimum as usize).min(texts)
            }
            _ => texts,
        }
    }

    /// The teacher signals this plan needs.
    pub fn signals(self) -> Signals {
        Signals {
            stochastic_passes: matches!(self, SamplingPlan::Stochastic { .. } | SamplingPlan::StochasticShare { .. }),
            member_passes: matches!(self, SamplingPlan::Members),
            hidden_states: matches!(self, SamplingPlan::StochasticShare { .. }),
            ..Signals::default()
        }
    }
}

/// The sampled outputs of one teacher over `B` texts.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct TeacherSamples {
    /// The teacher's name in the config, for messages.
    pub teacher: RString,
    /// `[S, M, L_t]`, the sampled logits of M texts (M = B but under
    /// [`SamplingPlan::StochasticShare`]): an estimator chooses its own temperature, and measures
    /// such as the energy read the logits themselves.
    pub logits: Tensor,
    /// For each of the M sampled rows, the index of its text among the B, ascending.
    pub rows: RVec<u32>,
    /// `[B, L_t]`, the deterministic pass over every text.
    pub deterministic: Tensor,
    /// `[B, H]`, its pooled hidden state, under a plan whose signals ask for hidden states (a
    /// share plan: what `mc-fitted` fits on).
    pub hidden: ROption<Tensor>,
}

impl TeacherSamples {
    /// Samples of every text (`logits` `[S, B, L_t]`), beside the deterministic pass `[B, L_t]`.
    pub fn of_every_text(teacher: &str, logits: Tensor, deterministic: Tensor) -> Self {
        let rows = (0..deterministic.shape()[0] as u32).collect();
        Self { teacher: teacher.into(), logits, rows, deterministic, hidden: ROption::RNone }
    }

    /// Samples of the texts `rows` only, and the hidden state of every text where the teacher has one.
    pub fn of_some_texts(
        teacher: &str,
        logits: Tensor,
        rows: Vec<u32>,
        deterministic: Tensor,
        hidden: Option<Tensor>,
    ) -> Self {
        Self { teacher: teacher.into(), logits, rows: rows.into(), deterministic, hidden: hidden.into() }
    }

    /// The number of texts B.
    pub fn texts(&self) -> usize {
        self.deterministic.shape()[0]
    }

    pub fn hidden(&self) -> Option<&Tensor> {
        self.hidden.as_ref().into_option()
    }
}

// ----- strategies -----

/// Everything a strategy sees of one teacher for one batch.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct TeacherSignals {
    pub name: RString,
    /// For each of the teacher's labels, its index in the union label space.
    pub label_map: RVec<u32>,
    /// `[B, L_t]`, deterministic pass.
    pub logits: Tensor,
    /// `[B, H_t]` when the strategy asked for hidden states.
    pub hidden: ROption<Tensor>,
}

/// The input of a strategy for one batch of `B` instances.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct StrategyInput {
    /// Names of the union labels; the student predicts over these.
    pub union_labels: RVec<RString>,
    pub teachers: RVec<TeacherSignals>,
    /// `[B, T]` certainty scores (high = certain) when the strategy asked for them.
    pub scores: ROption<Tensor>,
}

impl TeacherSignals {
    pub fn hidden(&self) -> Option<&Tensor> {
        self.hidden.as_ref().into_option()
    }
}

impl StrategyInput {
    pub fn scores(&self) -> Option<&Tensor> {
        self.scores.as_ref().into_option()
    }

    pub fn batch_size(&self) -> usize {
        self.teachers.first().map_or(0, |t| t.logits.shape()[0])
    }
}

/// Match the student's distribution over `labels` to `target`.
///
/// Loss: `scale * mean_b(weight_b * KL(target_b || softmax(student_logits_b[labels] / temperature)))`.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct DistributionTerm {
    /// Union label indices; the student's logits are restricted to these, in this order.
    pub labels: RVec<u32>,
    /// `[B, labels.len()]`, each row a probability distribution.
    pub target: Tensor,
    /// `[B]` per-instance weights; `None` means all ones.
    #[serde(with = "crate::floats::option_vec")]
    pub weights: ROption<RVec<f32>>,
    #[serde(with = "crate::floats::scalar")]
    pub temperature: f32,
    #[serde(with = "crate::floats::scalar")]
    pub scale: f32,
}

impl DistributionTerm {
    /// A term with every instance weighted 1.
    pub fn new(labels: Vec<u32>, target: Tensor, temperature: f32, scale: f32) -> Self {
        Self { labels: labels.into(), target, weights: ROption::RNone, temperature, scale }
    }

    /// The same term with per-instance weights, one per row of the target.
    pub fn weighted(self, weights: Vec<f32>) -> Self {
        Self { weights: ROption::RSome(weights.into()), ..self }
    }

    pub fn weights(&self) -> Option<&[f32]> {
        self.weights.as_ref().into_option().map(|w| w.as_slice())
    }
}

/// How a feature term compares student and teacher features in the shared space.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureMatch {
    /// Mean squared error, instance by instance.
    Mse,
    /// Multi-kernel maximum mean discrepancy between the two batches.
    Mmd,
}

/// Match the student's pooled hidden state to teacher features through host-owned adapters.
///
/// The host keeps, per `name`, a learnable encoder from the target's width to `code_dim` (with a
/// decoder back) and a projection of the student's hidden state to `code_dim`. Loss:
/// `weight * match(project(student), encode(target)) + reconstruction_weight * mse(decode(encode(target)), target)`.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct FeatureTerm {
    /// Identifies the adapters, stable across batches.
    pub name: RString,
    /// `[B, D]` teacher features.
    pub target: Tensor,
    pub matching: FeatureMatch,
    pub code_dim: u32,
    #[serde(with = "crate::floats::scalar")]
    pub reconstruction_weight: f32,
    #[serde(with = "crate::floats::scalar")]
    pub weight: f32,
}

#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub enum Term {
    Distribution(DistributionTerm),
    Feature(FeatureTerm),
}

/// The supervision a strategy asks for; the host turns it into a differentiable loss.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Recipe {
    pub terms: RVec<Term>,
}

fn check_finite(what: &str, values: &[f32]) -> Result<(), String> {
    match values.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!("{what} contains a non-finite value ({}) at flat index {i}", values[i])),
        None => Ok(()),
    }
}

impl Recipe {
    /// Checks every term against the batch size and the size of the union label space: the
    /// host refuses a recipe it could not turn into a loss, and strategy authors can test with it.
    pub fn validate(&self, batch: usize, union_size: usize) -> Result<(), String> {
        if self.terms.is_empty() {
            return Err("the recipe has no terms".into());
        }
        for (i, term) in self.terms.iter().enumerate() {
            term.validate(batch, union_size).map_err(|reason| format!("term {i}: {reason}"))?;
        }
        Ok(())
    }
}

impl Term {
    fn validate(&self, batch: usize, union_size: usize) -> Result<(), String> {
        match self {
            Term::Distribution(d) => {
                if let Some(&bad) = d.labels.iter().find(|&&l| l as usize >= union_size) {
                    return Err(format!("label index {bad} is outside the union of {union_size} labels"));
                }
                d.target.expect_shape("target", &[batch, d.labels.len()]).map_err(|e| e.message.into_string())?;
                d.target.check_finite("target")?;
                if let Some(weights) = d.weights() {
                    if weights.len() != batch {
                        return Err(format!("{} weights for a batch of {batch}", weights.len()));
                    }
                    check_finite("weights", weights)?;
                }
                if !(d.temperature.is_finite() && d.temperature > 0.0 && d.scale.is_finite()) {
                    return Err(format!(
                        "temperature {} and scale {} must be finite, temperature > 0",
                        d.temperature, d.scale
                    ));
                }
            }
            Term::Feature(f) => {
                if f.target.shape().len() != 2 || f.target.shape()[0] != batch {
                    return Err(format!("feature target has shape {:?}, expected [{batch}, D]", f.target.shape()));
                }
                f.target.check_finite("feature target")?;
                if f.code_dim == 0 || !f.weight.is_finite() || !f.reconstruction_weight.is_finite() {
                    return Err("a feature term needs code_dim > 0 and finite weights".into());
                }
            }
        }
        Ok(())
    }
}
