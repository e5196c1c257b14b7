//! The teachers' outputs a run reads (deterministic passes, the estimator's samples, the
//! oracle's), through the signal cache, and the estimator's scores.

use abi_stable::std_types::RString;
use workbench_plugin_api::{SamplingPlan, TeacherSamples, Tensor};

use super::prepare::{prepare, student_examples, student_texts, teacher_identity, texts, Prepared, Teacher};
use crate::{
    config::{ComponentChoice, ResolvedConfig},
    host::{EstimatorHandle, Registry},
    signal_cache::{Provenance, SignalCache, TeacherSignalSet},
    Error, Result,
};

pub(super) struct Signals {
    pub deterministic: Vec<TeacherSignalSet>,
    pub scores: Option<Tensor>,
    pub provenance: Vec<SignalRecord>,
}

/// Where one teacher output of a run came from, as the manifest records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignalRecord {
    pub teacher: String,
    pub split: String,
    /// `deterministic`, or the estimator's sampling plan.
    pub plan: String,
    pub provenance: Provenance,
    /// Wall time of the computation; none when the cache had it.
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// Every teacher's deterministic signals over `texts`, and the estimator's scores.
pub(super) fn signals(
    config: &ResolvedConfig,
    teachers: &mut [Teacher],
    estimator: Option<&EstimatorHandle>,
    texts: &[RString],
    want_hidden: bool,
    split: &str,
) -> Result<Signals> {
    let cache = SignalCache::new(&config.cache);
    let plan = estimator.map(|e| e.plan()).transpose()?;
    let (mut deterministic, mut samples, mut provenance) = (Vec::new(), Vec::new(), Vec::new());
    for teacher in teachers.iter_mut() {
        let started = std::time::Instant::now();
        let (det, from) = cache.get(
            &teacher.name,
            &mut teacher.handle,
            &teacher.info,
            &teacher.identity,
            texts,
            SamplingPlan::Deterministic,
            config.mc_seed,
            want_hidden,
        )?;
        let record = |plan: String, provenance, started: std::time::Instant| SignalRecord {
            teacher: teacher.name.clone(),
            split: split.to_string(),
            plan,
            provenance,
            seconds: (provenance == Provenance::Computed).then(|| started.elapsed().as_secs_f64()),
        };
        provenance.push(record("deterministic".into(), from, started));
        if let Some(plan) = plan {
            let sampled = if plan == SamplingPlan::Deterministic {
                det.logits.clone()
            } else {
                let started = std::time::Instant::now();
                let (s, from) = cache.get(
                    &teacher.name,
                    &mut teacher.handle,
                    &teacher.info,
                    &teacher.identity,
                    texts,
                    plan,
                    config.mc_seed,
                    false,
                )?;
                provenance.push(record(format!("{plan:?}"), from, started));
                s.logits
            };
            samples.push(TeacherSamples { teacher: teacher.name.as_str().into(), logits: sampled });
        }
        deterministic.push(det);
    }
    let scores = match estimator {
        Some(estimator) => Some(estimator.score(&samples)?),
        None => None,
    };
    Ok(Signals { deterministic, scores, provenance })
}

/// The oracle's deterministic signals over the test texts, with its labels.
pub(super) fn oracle_signals(
    config: &ResolvedConfig,
    registry: &Registry,
    choice: &ComponentChoice,
    test_texts: &[RString],
) -> Result<(TeacherSignalSet, workbench_plugin_api::TeacherInfo, Provenance)> {
    let mut handle = registry.create_teacher(&choice.component, choice.library.as_deref(), &choice.params)?;
    let info = handle.info()?;
    let (signals, provenance) = SignalCache::new(&config.cache).get(
        "oracle",
        &mut handle,
        &info,
        &teacher_identity(registry, choice)?,
        test_texts,
        SamplingPlan::Deterministic,
        config.mc_seed,
        false,
    )?;
    Ok((signals, info, provenance))
}

/// The split whose texts a teacher's signals cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One cached teacher output: which teacher (its config key, `teachers.NAME` or `oracle`),
/// over which split, under which sampling plan, with hidden states or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignalRequest {
    pub teacher: String,
    pub split: Split,
    pub plan: SamplingPlan,
    pub hidden: bool,
}

/// The signals each teacher output a run of `config` reads; `hidden` when its strategy needs
/// hidden states, `plan` its estimator's sampling plan.
pub fn signal_requests(config: &ResolvedConfig, plan: Option<SamplingPlan>, hidden: bool) -> Vec<SignalRequest> {
    let mut requests = Vec::new();
    for name in config.teachers.keys() {
        let teacher = format!("teachers.{name}");
        let request = |split, plan, hidden| SignalRequest { teacher: teacher.clone(), split, plan, hidden };
        requests.push(request(Split::Train, SamplingPlan::Deterministic, hidden));
        requests.push(request(Split::Test, SamplingPlan::Deterministic, false));
        if let Some(plan) = plan.filter(|p| *p != SamplingPlan::Deterministic) {
            requests.push(request(Split::Train, plan, false));
            requests.push(request(Split::Test, plan, false));
        }
    }
    if config.oracle.is_some() {
        requests.push(SignalRequest {
            teacher: "oracle".into(),
            split: Split::Test,
            plan: SamplingPlan::Deterministic,
            hidden: false,
        });
    }
    requests
}

/// A sweep's signal job: computes one teacher output into the cache (or finds it there), the
/// same entry a run of `config` reads.
pub fn teacher_signals(config: &ResolvedConfig, registry: &Registry, request: &SignalRequest) -> Result<Provenance> {
    let Prepared { splits, mut teachers, labels, .. } = prepare(config, registry)?;
    let examples = student_examples(&splits, &labels)?;
    let texts = match request.split {
        Split::Train => student_texts(config, &examples)?.0,
        Split::Test => texts(&examples.test),
    };
    if request.teacher == "oracle" {
        let choice = config
            .oracle
            .as_ref()
            .ok_or_else(|| Error::InvalidConfig { problems: vec!["no [oracle] table in the config".into()] })?;
        return Ok(oracle_signals(config, registry, choice, &texts)?.2);
    }
    let teacher =
        teachers.iter_mut().find(|t| request.teacher.strip_prefix("teachers.") == Some(t.name.as_str())).ok_or_else(
            || Error::InvalidConfig { problems: vec![format!("no teacher table `{}` in the config", request.teacher)] },
        )?;
    let (_, provenance) = SignalCache::new(&config.cache).get(
        &teacher.name,
        &mut teacher.handle,
        &teacher.info,
        &teacher.identity,
        &texts,
        request.plan,
        config.mc_seed,
        request.hidden,
    )?;
    Ok(provenance)
}
