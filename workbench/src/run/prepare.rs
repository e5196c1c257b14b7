//! Before a run: the data, the teachers (trained where missing), the estimator, and the rows the
//! student learns from.

use abi_stable::std_types::RString;
use serde::{Deserialize, Serialize};
use workbench_plugin_api::{ComponentKind, LabelSpace, SamplingPlan, TeacherInfo};

use crate::{
    config::{ComponentChoice, ResolvedConfig},
    data::{text_fold, DataConfig, Example, Splits},
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
    /// Cross-fitted: member k scores the texts of fold k ([`ComponentChoice::cross_fit`]).
    pub cross_fit: bool,
}

impl UnionModel {
    pub fn load(registry: &Registry, key: &'static str, choice: &ComponentChoice) -> Result<Self> {
        let handle = registry.create_teacher(&choice.component, choice.library.as_deref(), &choice.params)?;
        let info = handle.info()?;
        if choice.cross_fit {
            let (_, spec) = registry.find(ComponentKind::Teacher, &choice.component, choice.library.as_deref())?;
            let problem = if !spec.signals.member_passes {
                Some(format!("teacher plugin `{}` cannot run its members one by one", choice.component))
            } else if info.members < 2 {
                Some(format!("it needs one member per fold, at least 2; it has {}", info.members))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Error::InvalidConfig { problems: vec![format!("`{key}.cross_fit`: {problem}")] });
            }
        }
        Ok(Self { key, handle, info, identity: teacher_identity(registry, choice)?, cross_fit: choice.cross_fit })
    }

    /// What it runs over a split: every member apart when cross-fitted, else one pass (the
    /// members' mean).
    pub fn plan(cross_fit: bool) -> SamplingPlan {
        if cross_fit {
            SamplingPlan::Members
        } else {
            SamplingPlan::Deterministic
        }
    }

    /// Its signals over `texts` under [`UnionModel::plan`], through the signal cache.
    pub fn signals(&mut self, config: &ResolvedConfig, texts: &[RString]) -> Result<(TeacherSignalSet, Provenance)> {
        SignalCache::new(&config.cache).get(
            self.key,
            &mut self.handle,
            &self.info,
            &self.identity,
            texts,
            Self::plan(self.cross_fit),
            config.mc_seed,
            false,
        )
    }

    /// Per text, the row of [`UnionModel::signals`]' logits that scores it: the member that
    /// left out the text's fold when cross-fitted, else the one row.
    pub fn scoring_rows(&self, texts: &[RString]) -> Vec<usize> {
        scoring_rows(texts, self.cross_fit.then_some(self.info.members))
    }

    /// The union index of each of its labels, matched by name; none for a label outside the union.
    pub fn union_indices(&self, labels: &LabelSpace) -> Vec<Option<u32>> {
        self.info.labels.iter().map(|l| labels.index_of(l)).collect()
    }
}

/// Per text, the row of a union model's logits that scores it: with `cross_fit_members` n, the
/// member that was trained without the text's fold (member k left out fold k); else row 0.
fn scoring_rows(texts: &[RString], cross_fit_members: Option<usize>) -> Vec<usize> {
    texts.iter().map(|t| cross_fit_members.map_or(0, |members| text_fold(t, members))).collect()
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

/// What `config check` found when it created every component of a config: each teacher (its
/// checkpoints found and loadable), estimator and strategy as its plugin builds it for a run,
/// so that the plugins' own checks run before any data or training; and the student's base
/// checkpoint when it is a directory.
pub struct ComponentsCheck {
    /// One line per component that was created or checked.
    pub checked: Vec<String>,
    /// Teachers whose checkpoint is missing and will be taught on first use.
    pub to_teach: Vec<String>,
}

/// Creates every component of `config`, as a run would, without data or training: every
/// problem found, each naming its config key. Teachers in `seen` (those an earlier method of a
/// sweep checked) are not loaded again; the ones checked here are added.
pub fn check_components(
    config: &ResolvedConfig,
    registry: &Registry,
    seen: &mut Vec<ComponentChoice>,
) -> Result<ComponentsCheck> {
    let mut problems = Vec::new();
    let mut outcome = ComponentsCheck { checked: Vec::new(), to_teach: Vec::new() };
    let selector = config.selector.iter().map(|s| ("selector".to_string(), s));
    for (key, choice) in teacher_tables(config).chain(selector) {
        if seen.contains(choice) {
            continue;
        }
        seen.push(choice.clone());
        let untaught = crate::training::teach::first_checkpoint(&choice.params)
            .is_some_and(|dir| !crate::training::teach::is_complete(&dir));
        match &choice.teach {
            Some(teach) if untaught => {
                let table = format!("{key}.teach");
                match crate::training::teach::check_model(&teach.recipe, &table, &config.cache) {
                    Ok(()) => outcome.to_teach.push(key),
                    Err(e) => problems.push(format!("`{table}`: {}", unlisted(e))),
                }
                continue;
            }
            _ => {}
        }
        let created = registry
            .create_teacher(&choice.component, choice.library.as_deref(), &choice.params)
            .and_then(|handle| handle.info());
        match created {
            Ok(info) => {
                outcome.checked.push(format!("{key}: `{}` over {} labels", choice.component, info.labels.len()))
            }
            Err(e) => problems.push(format!("`{key}`: {}", unlisted(e))),
        }
    }
    if let Some(estimator) = config.estimator.as_ref().filter(|_| config.selector.is_none()) {
        match registry.create_estimator(&estimator.component, estimator.library.as_deref(), &estimator.params) {
            Ok(_) => outcome.checked.push(format!("estimator: `{}`", estimator.component)),
            Err(e) => problems.push(format!("`estimator`: {}", unlisted(e))),
        }
    }
    // A pinned asset is fetched and checked on first use; a checkpoint directory is read here.
    if crate::assets::named(&config.student.model).is_err() {
        match crate::training::teach::check_model(&config.student, "student", &config.cache) {
            Ok(()) => outcome.checked.push(format!("student: `{}`", config.student.model)),
            Err(e) => problems.push(unlisted(e)),
        }
    }
    let strategy = &config.strategy;
    match registry.create_strategy(&strategy.component, strategy.library.as_deref(), &strategy.params) {
        Ok(_) => outcome.checked.push(format!("strategy: `{}`", strategy.component)),
        Err(e) => problems.push(format!("`strategy`: {}", unlisted(e))),
    }
    if problems.is_empty() {
        Ok(outcome)
    } else {
        Err(Error::InvalidConfig { problems })
    }
}

/// An error's message without the list framing of an invalid config, to list it among others.
fn unlisted(error: Error) -> String {
    match error {
        Error::InvalidConfig { problems } => problems.join("; "),
        other => other.to_string(),
    }
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
    // A transfer-only run has no labelled training rows: its student learns from the transfer set.
    let transfer_only = splits.train.is_empty();
    // A transfer-only run without a test file trains a student it does not measure.
    let unmeasured = transfer_only && splits.test.is_empty();
    if (train.is_empty() && !transfer_only) || (test.is_empty() && !unmeasured) {
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
/// else the labelled training rows with their union labels (for the selection accuracy on them);
/// without the held-out fold where `student.holdout_fold` names one.
/// What reading a transfer set did is added to `report`.
pub(super) fn student_texts(
    config: &ResolvedConfig,
    examples: &StudentExamples,
    report: &mut crate::data::LoadReport,
) -> Result<(Vec<RString>, Option<Vec<u32>>)> {
    let (texts, gold) = match data_config(config)?.transfer_texts_reported(report)? {
        Some(transfer) => (transfer.iter().map(|t| RString::from(t.as_str())).collect(), None),
        None => (texts(&examples.train), Some(examples.train_gold.clone())),
    };
    let Some([fold, folds]) = config.student.holdout_fold else {
        return Ok((texts, gold));
    };
    let kept: Vec<bool> = texts.iter().map(|t| text_fold(t, folds) != fold).collect();
    let gold = gold.map(|gold| gold.into_iter().zip(&kept).filter_map(|(g, &k)| k.then_some(g)).collect());
    let texts: Vec<RString> = texts.into_iter().zip(&kept).filter_map(|(t, &k)| k.then_some(t)).collect();
    if texts.is_empty() {
        return Err(Error::InvalidConfig {
            problems: vec![format!("`student.holdout_fold` = [{fold}, {folds}] leaves no training text")],
        });
    }
    tracing::info!(fold, folds, kept = texts.len(), "the student leaves out one fold of its training texts");
    Ok((texts, gold))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "a" falls in fold 0 of 2 and "dog" in fold 1 (data.rs checks the hashes by hand): member
    /// 0, which left out fold 0, scores "a".
    #[test]
    fn each_text_is_scored_by_the_member_that_left_out_its_fold() {
        let texts: Vec<RString> = ["dog", "a", "dog"].map(RString::from).to_vec();
        assert_eq!(scoring_rows(&texts, Some(2)), [1, 0, 1]);
        assert_eq!(scoring_rows(&texts, None), [0, 0, 0]);
    }

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
