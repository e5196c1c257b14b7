//! Before a run: the data, the teachers (trained where missing), the estimator, and the rows the
//! student learns from.

use abi_stable::std_types::RString;
use serde::{Deserialize, Serialize};
use workbench_plugin_api::{ComponentKind, LabelSpace, SamplingPlan, TeacherInfo};

use crate::{
    config::{ComponentChoice, ResolvedConfig},
    data::{DataConfig, Example, Splits},
    host::{EstimatorHandle, Registry, TeacherHandle},
    signal_cache::{teacher_hash, Provenance, SignalCache, TeacherSignalSet},
    Error, Result,
};

pub(super) struct Teacher {
    pub name: String,
    pub handle: TeacherHandle,
    pub info: workbench_plugin_api::TeacherInfo,
    pub identity: String,
}

/// A model over the union labels (`[oracle]` or `[selector]`, its config key), run through a
/// teacher plugin.
pub(super) struct UnionModel {
    pub key: &'static str,
    pub handle: TeacherHandle,
    pub info: TeacherInfo,
    pub identity: String,
}

impl UnionModel {
    pub fn load(registry: &Registry, key: &'static str, choice: &ComponentChoice) -> Result<Self> {
        let handle = registry.create_teacher(&choice.component, choice.library.as_deref(), &choice.params)?;
        let info = handle.info()?;
        Ok(Self { key, handle, info, identity: teacher_identity(registry, choice)? })
    }

    /// Its deterministic signals over `texts`, through the signal cache.
    pub fn signals(&mut self, config: &ResolvedConfig, texts: &[RString]) -> Result<(TeacherSignalSet, Provenance)> {
        SignalCache::new(&config.cache).get(
            self.key,
            &mut self.handle,
            &self.info,
            &self.identity,
            texts,
            SamplingPlan::Deterministic,
            config.mc_seed,
            false,
        )
    }

    /// The union index of each of its labels, matched by name; none for a label outside the union.
    pub fn union_indices(&self, labels: &LabelSpace) -> Vec<Option<u32>> {
        self.info.labels.iter().map(|l| labels.index_of(l)).collect()
    }
}

/// Refuses a selector that has none of some teacher's labels: it could never pick that teacher.
/// `union`: the union index of each selector label; `teachers`: the teachers' names in order.
fn check_selector_sees_every_teacher(union: &[Option<u32>], teachers: &[&str], labels: &LabelSpace) -> Result<()> {
    let blind: Vec<String> = teachers
        .iter()
        .zip(&labels.maps)
        .filter(|(_, map)| !union.iter().flatten().any(|u| map.contains(u)))
        .map(|(teacher, _)| format!("`{teacher}`"))
        .collect();
    if blind.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        problems: vec![format!(
            "the selector has none of the labels of teacher {}: its labels must name the teachers' labels",
            blind.join(", ")
        )],
    })
}

/// Every teacher table with its config key: the teachers in order, then the oracle.
pub(super) fn teacher_tables(config: &ResolvedConfig) -> impl Iterator<Item = (String, &ComponentChoice)> {
    let oracle = config.oracle.iter().map(|o| ("oracle".to_string(), o));
    config.teachers.iter().map(|(n, c)| (format!("teachers.{n}"), c)).chain(oracle)
}

/// Trains the teachers whose config has a `teach` table and whose checkpoint is not complete;
/// refuses a complete one the table no longer describes, and one left half-trained.
fn ensure_teachers(config: &ResolvedConfig, splits: &Splits) -> Result<()> {
    for (key, choice) in teacher_tables(config) {
        ensure_teacher(config, &key, choice, splits)?;
    }
    Ok(())
}

/// Trains one teacher when its checkpoint is missing (true when it did), or checks that its
/// `teach` table still describes the trained teacher.
fn ensure_teacher(config: &ResolvedConfig, key: &str, choice: &ComponentChoice, splits: &Splits) -> Result<bool> {
    let Some(checkpoint) = crate::training::teach::first_checkpoint(&choice.params) else {
        if choice.teach.is_some() {
            return Err(Error::InvalidConfig {
                problems: vec![format!("`{key}.teach` needs `checkpoints` naming where the teacher goes")],
            });
        }
        return Ok(false);
    };
    let Some(teach) = &choice.teach else {
        crate::training::teach::refuse_incomplete(&checkpoint)?;
        return Ok(false);
    };
    let missing = !crate::training::teach::is_complete(&checkpoint);
    if missing {
        tracing::info!(teacher = %key, dir = %checkpoint.display(), "training the missing teacher");
    }
    let settings = teach.writing_to(checkpoint);
    crate::training::teach::teach(&settings, splits.clone(), &config.cache, &format!("{key}.teach"))?;
    Ok(missing)
}

/// The config keys of the teachers that are trained from a `teach` table: `teachers.NAME`
/// and `oracle`.
pub fn taught_teachers(config: &ResolvedConfig) -> Vec<String> {
    teacher_tables(config).filter(|(_, choice)| choice.teach.is_some()).map(|(key, _)| key).collect()
}

/// Whether the teacher under config key `key` has a complete checkpoint (or needs none).
pub fn teacher_is_ready(config: &ResolvedConfig, key: &str) -> bool {
    teacher_tables(config).find(|(k, _)| k == key).is_some_and(|(_, choice)| {
        crate::training::teach::first_checkpoint(&choice.params)
            .is_none_or(|dir| crate::training::teach::is_complete(&dir))
    })
}

/// A sweep's teacher job: trains the teacher under config key `key` when it is missing; true
/// when it did.
pub fn train_teacher(config: &ResolvedConfig, key: &str) -> Result<bool> {
    let (key, choice) = teacher_tables(config)
        .find(|(k, _)| k == key)
        .ok_or_else(|| Error::InvalidConfig { problems: vec![format!("no teacher table `{key}` in the config")] })?;
    let data = data_config(config)?;
    if let Some(teach) = &choice.teach {
        crate::training::teach::check_model(&teach.recipe, &format!("{key}.teach"), &config.cache)?;
    }
    let splits = data.load(&config.cache, config.data_seed)?;
    ensure_teacher(config, &key, choice, &splits)
}

fn data_config(config: &ResolvedConfig) -> Result<&DataConfig> {
    config.data.as_ref().ok_or_else(|| Error::InvalidConfig {
        problems: vec![
            "no [data] table: name the dataset the student learns from (e.g. dataset = \"20newsgroups\")".into()
        ],
    })
}

/// The data, the teachers (trained first where missing) and the estimator of a config.
pub(super) struct Prepared {
    pub splits: Splits,
    pub teachers: Vec<Teacher>,
    pub estimator: Option<EstimatorHandle>,
    /// The `[selector]` model, checked to know a label of every teacher.
    pub selector: Option<UnionModel>,
    /// The union of the teachers' labels.
    pub labels: LabelSpace,
}

pub(super) fn prepare(config: &ResolvedConfig, registry: &Registry) -> Result<Prepared> {
    let data = data_config(config)?;
    crate::training::teach::check_model(&config.student, "student", &config.cache)?;
    for (key, choice) in teacher_tables(config) {
        if let Some(teach) = &choice.teach {
            crate::training::teach::check_model(&teach.recipe, &format!("{key}.teach"), &config.cache)?;
        }
    }
    let splits = data.load(&config.cache, config.data_seed)?;
    ensure_teachers(config, &splits)?;

    let mut teachers = Vec::new();
    for (name, choice) in &config.teachers {
        let handle = registry.create_teacher(&choice.component, choice.library.as_deref(), &choice.params)?;
        let info = handle.info()?;
        let identity = teacher_identity(registry, choice)?;
        teachers.push(Teacher { name: name.clone(), handle, info, identity });
    }
    let estimator = config
        .estimator
        .as_ref()
        .map(|e| registry.create_estimator(&e.component, e.library.as_deref(), &e.params))
        .transpose()?;
    if let Some(plan) = estimator.as_ref().map(|e| e.plan()).transpose()? {
        if plan == SamplingPlan::Members {
            if let Some(t) = teachers.iter().find(|t| t.info.members < 2) {
                return Err(Error::InvalidConfig {
                    problems: vec![format!(
                        "the ensemble estimator scores members, but teacher `{}` has {}: give it several checkpoints or use mc-dropout",
                        t.name, t.info.members
                    )],
                });
            }
        }
    }
    let teacher_labels: Vec<Vec<String>> =
        teachers.iter().map(|t| t.info.labels.iter().map(|l| l.to_string()).collect()).collect();
    let labels = LabelSpace::union(teacher_labels.iter().map(Vec::as_slice));
    let selector = config.selector.as_ref().map(|choice| UnionModel::load(registry, "selector", choice)).transpose()?;
    if let Some(selector) = &selector {
        let names: Vec<&str> = teachers.iter().map(|t| t.name.as_str()).collect();
        check_selector_sees_every_teacher(&selector.union_indices(&labels), &names, &labels)?;
    }
    Ok(Prepared { splits, teachers, estimator, selector, labels })
}

/// What identifies a teacher's outputs: its parameters, the files they name and the plugin
/// library's own bytes (a rebuilt plugin may compute other outputs from the same files).
pub(super) fn teacher_identity(registry: &Registry, choice: &ComponentChoice) -> Result<String> {
    let (library, _) = registry.find(ComponentKind::Teacher, &choice.component, choice.library.as_deref())?;
    teacher_hash(choice, &library.sha256()?)
}

pub(super) fn texts(examples: &[Example]) -> Vec<RString> {
    examples.iter().map(|e| RString::from(e.text.as_str())).collect()
}

/// Union indices of the examples' labels; examples outside the union are dropped and counted.
pub(super) fn gold(examples: &[Example], labels: &LabelSpace, dropped: &mut usize) -> (Vec<Example>, Vec<u32>) {
    let kept: (Vec<Example>, Vec<u32>) =
        examples.iter().filter_map(|e| labels.index_of(&e.label).map(|i| (e.clone(), i))).unzip();
    *dropped = examples.len() - kept.0.len();
    kept
}

/// Rows of each split whose label no teacher owns: left out of training and evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnownedRows {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

/// The rows the student learns from and is tested on: those whose label a teacher owns.
pub(super) struct StudentExamples {
    pub train: Vec<Example>,
    pub train_gold: Vec<u32>,
    pub validation: Vec<Example>,
    pub validation_gold: Vec<u32>,
    pub test: Vec<Example>,
    pub test_gold: Vec<u32>,
    pub unowned: UnownedRows,
}

pub(super) fn student_examples(splits: &Splits, labels: &LabelSpace) -> Result<StudentExamples> {
    let mut unowned = UnownedRows::default();
    let (train, train_gold) = gold(&splits.train, labels, &mut unowned.train);
    let (validation, validation_gold) = gold(&splits.validation, labels, &mut unowned.validation);
    let (test, test_gold) = gold(&splits.test, labels, &mut unowned.test);
    if unowned != UnownedRows::default() {
        tracing::warn!(
            train = unowned.train,
            validation = unowned.validation,
            test = unowned.test,
            "rows whose label no teacher owns are left out"
        );
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "no train or no test rows carry a label of the teachers ({} train and {} test rows left out): check that the data's labels are the teachers' ({})",
                unowned.train, unowned.test, labels.labels.join(", ")
            )],
        });
    }
    Ok(StudentExamples { train, train_gold, validation, validation_gold, test, test_gold, unowned })
}

/// The texts the student learns from: the transfer set when the config names one (unlabelled),
/// else the labelled training rows with their union labels (for the selection accuracy on them).
pub(super) fn student_texts(
    config: &ResolvedConfig,
    examples: &StudentExamples,
) -> Result<(Vec<RString>, Option<Vec<u32>>)> {
    Ok(match data_config(config)?.transfer_texts()? {
        Some(transfer) => (transfer.iter().map(|t| RString::from(t.as_str())).collect(), None),
        None => (texts(&examples.train), Some(examples.train_gold.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Teachers `a` over x, y and `b` over y, z: a selector over z, x, y, w sees both; one over
    /// w, v, x, u (x is `a`'s only) never sees `b`.
    #[test]
    fn a_selector_without_a_label_of_some_teacher_is_refused_naming_it() {
        let labels = LabelSpace::union([&["x".to_string(), "y".into()][..], &["y".to_string(), "z".into()][..]]);
        let union = |names: [&str; 4]| names.iter().map(|l| labels.index_of(l)).collect::<Vec<_>>();
        check_selector_sees_every_teacher(&union(["z", "x", "y", "w"]), &["a", "b"], &labels).unwrap();
        let blind = check_selector_sees_every_teacher(&union(["w", "v", "x", "u"]), &["a", "b"], &labels).unwrap_err();
        assert_eq!(
            blind.to_string(),
            "configuration is invalid:\n  - the selector has none of the labels of teacher `b`: its labels must name the teachers' labels"
        );
    }
}
