//! `workbench run`: resolve and check the config, load the plugins, ensure the teachers exist,
//! compute (or reuse) the cached teacher signals, train and evaluate the student, and write the
//! run directory: resolved config, manifest, metrics, report and the student checkpoint.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::std_types::RString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use workbench_plugin_api::{ComponentKind, LabelSpace, ParamValue, SamplingPlan, TeacherSamples, Tensor};

use crate::{
    config::{ComponentChoice, ResolvedConfig},
    data::{Example, Splits},
    evaluate::{accuracy, concat_predictions, row, teacher_predictions, ResultRow},
    files::{lock_holder, write_atomically, FileLock},
    host::{PluginLibrary, Registry, TeacherHandle},
    learner::saved_state,
    metrics::{adequate_picks, concat_argmax_scores, selection_accuracy, share},
    signals::{teacher_hash, texts_hash, Provenance, SignalCache, TeacherSignalSet},
    student::{train_student, TrainingSignals},
    Error, Result,
};

/// Below these, the report warns: weak teachers or a weak selection make the comparison
/// meaningless (DESIGN.md, section 7), and a student below the coverage has all but lost a
/// teacher's classes.
const WEAK_TEACHER: f64 = 0.7;
const WEAK_SELECTION: f64 = 0.6;
const WEAK_COVERAGE: f64 = 0.7;

/// A selector's accuracy (how often its top-scored teacher owns the gold label) on the
/// student's training texts, the transfer set MUKA's targets are built from, and on test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitSelection {
    pub train: f64,
    pub test: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionReport {
    /// The configured estimator's; none without one.
    pub estimator: Option<SplitSelection>,
    /// The concat-argmax selector's: the teacher whose block holds the argmax of the
    /// concatenated logits, the bar every certainty selector must clear.
    pub concat_argmax: SplitSelection,
}

/// `results.json` of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub student: ResultRow,
    pub teacher_concat: ResultRow,
    /// Each teacher alone, in config order.
    pub teachers: Vec<ResultRow>,
    pub oracle: Option<ResultRow>,
    pub selection: SelectionReport,
    /// Per teacher: the student's accuracy on its labels divided by the teacher's own there.
    pub coverage: Vec<f64>,
    /// The smallest coverage: near 0 when the student has lost a teacher's classes.
    pub min_coverage: f64,
    pub best_epoch: usize,
    /// Rows left out because no teacher owns their label.
    #[serde(default)]
    pub unowned: UnownedRows,
    pub warnings: Vec<String>,
}

impl RunResults {
    /// Every row, student first, as the report lists them.
    pub fn rows(&self) -> impl Iterator<Item = &ResultRow> {
        [&self.student, &self.teacher_concat].into_iter().chain(&self.teachers).chain(&self.oracle)
    }

    /// Reads `<run>/results.json`.
    pub fn load(run: &Path) -> Result<Self> {
        let path = run.join("results.json");
        let text = std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::Artefact {
            path: path.clone(),
            reason: format!("not a results file of this workbench version ({e}); run it again"),
        })
    }
}

/// Per teacher, the student's accuracy on its labels over the teacher's own accuracy there.
pub fn coverage(student: &ResultRow, teachers: &[ResultRow]) -> Vec<f64> {
    teachers
        .iter()
        .enumerate()
        .map(|(i, t)| if t.per_teacher[i] > 0.0 { student.per_teacher[i] / t.per_teacher[i] } else { 0.0 })
        .collect()
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub labels: LabelSpace,
    pub results: RunResults,
}

/// The run directory of a config.
pub fn run_dir(config: &ResolvedConfig) -> PathBuf {
    config.output.join(&config.name)
}

/// A run is complete once its report is written.
pub fn is_complete(dir: &Path) -> bool {
    dir.join("report.md").is_file()
}

struct Teacher {
    name: String,
    handle: TeacherHandle,
    info: workbench_plugin_api::TeacherInfo,
    identity: String,
}

/// The checkpoint directory a teacher's `checkpoints` parameter names first, if any.
fn first_checkpoint(choice: &ComponentChoice) -> Option<PathBuf> {
    match choice.params.get("checkpoints") {
        Ok(ParamValue::TextList(list)) => list.first().map(|p| PathBuf::from(p.as_str())),
        _ => None,
    }
}

/// Every teacher table with its config key: the teachers in order, then the oracle.
fn teacher_tables(config: &ResolvedConfig) -> impl Iterator<Item = (String, &ComponentChoice)> {
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
    let Some(checkpoint) = first_checkpoint(choice) else {
        if choice.teach.is_some() {
            return Err(Error::InvalidConfig {
                problems: vec![format!("`{key}.teach` needs `checkpoints` naming where the teacher goes")],
            });
        }
        return Ok(false);
    };
    let Some(teach) = &choice.teach else {
        crate::teach::refuse_incomplete(&checkpoint)?;
        return Ok(false);
    };
    let missing = !crate::teach::is_complete(&checkpoint);
    if missing {
        tracing::info!(teacher = %key, dir = %checkpoint.display(), "training the missing teacher");
    }
    let settings = teach.writing_to(checkpoint);
    crate::teach::teach(&settings, splits.clone(), &config.cache, &format!("{key}.teach"))?;
    Ok(missing)
}

/// The config keys of the teachers that are trained from a `teach` table: `teachers.NAME`
/// and `oracle`.
pub fn taught_teachers(config: &ResolvedConfig) -> Vec<String> {
    teacher_tables(config).filter(|(_, choice)| choice.teach.is_some()).map(|(key, _)| key).collect()
}

/// Whether the teacher under config key `key` has a complete checkpoint (or needs none).
pub fn teacher_is_ready(config: &ResolvedConfig, key: &str) -> bool {
    teacher_tables(config)
        .find(|(k, _)| k == key)
        .is_some_and(|(_, choice)| first_checkpoint(choice).is_none_or(|dir| crate::teach::is_complete(&dir)))
}

/// A sweep's teacher job: trains the teacher under config key `key` when it is missing; true
/// when it did.
pub fn train_teacher(config: &ResolvedConfig, key: &str) -> Result<bool> {
    let (key, choice) = teacher_tables(config)
        .find(|(k, _)| k == key)
        .ok_or_else(|| Error::InvalidConfig { problems: vec![format!("no teacher table `{key}` in the config")] })?;
    let data = data_config(config)?;
    if let Some(teach) = &choice.teach {
        crate::teach::check_model(&teach.recipe, &format!("{key}.teach"), &config.cache)?;
    }
    let splits = data.load(&config.cache, config.data_seed)?;
    ensure_teacher(config, &key, choice, &splits)
}

fn data_config(config: &ResolvedConfig) -> Result<&crate::data::DataConfig> {
    config.data.as_ref().ok_or_else(|| Error::InvalidConfig {
        problems: vec![
            "no [data] table: name the dataset the student learns from (e.g. dataset = \"20newsgroups\")".into()
        ],
    })
}

/// The data, the teachers (trained first where missing) and the estimator of a config.
struct Prepared {
    splits: Splits,
    teachers: Vec<Teacher>,
    estimator: Option<crate::host::EstimatorHandle>,
    /// The union of the teachers' labels.
    labels: LabelSpace,
}

fn prepare(config: &ResolvedConfig, registry: &Registry) -> Result<Prepared> {
    let data = data_config(config)?;
    crate::teach::check_model(&config.student, "student", &config.cache)?;
    for (key, choice) in teacher_tables(config) {
        if let Some(teach) = &choice.teach {
            crate::teach::check_model(&teach.recipe, &format!("{key}.teach"), &config.cache)?;
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
    Ok(Prepared { splits, teachers, estimator, labels })
}

/// What identifies a teacher's outputs: its parameters, the files they name and the plugin
/// library's own bytes (a rebuilt plugin may compute other outputs from the same files).
fn teacher_identity(registry: &Registry, choice: &ComponentChoice) -> Result<String> {
    let (library, _) = registry.find(ComponentKind::Teacher, &choice.component, choice.library.as_deref())?;
    teacher_hash(choice, &library.sha256()?)
}

fn texts(examples: &[Example]) -> Vec<RString> {
    examples.iter().map(|e| RString::from(e.text.as_str())).collect()
}

/// Union indices of the examples' labels; examples outside the union are dropped and counted.
fn gold(examples: &[Example], labels: &LabelSpace, dropped: &mut usize) -> (Vec<Example>, Vec<u32>) {
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
struct StudentExamples {
    train: Vec<Example>,
    train_gold: Vec<u32>,
    validation: Vec<Example>,
    test: Vec<Example>,
    test_gold: Vec<u32>,
    unowned: UnownedRows,
}

fn student_examples(splits: &Splits, labels: &LabelSpace) -> Result<StudentExamples> {
    let mut unowned = UnownedRows::default();
    let (train, train_gold) = gold(&splits.train, labels, &mut unowned.train);
    let (validation, _) = gold(&splits.validation, labels, &mut unowned.validation);
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
    Ok(StudentExamples { train, train_gold, validation, test, test_gold, unowned })
}

struct Signals {
    deterministic: Vec<TeacherSignalSet>,
    scores: Option<Tensor>,
    provenance: Vec<serde_json::Value>,
}

/// Every teacher's deterministic signals over `texts`, and the estimator's scores.
fn signals(
    config: &ResolvedConfig,
    teachers: &mut [Teacher],
    estimator: Option<&crate::host::EstimatorHandle>,
    texts: &[RString],
    want_hidden: bool,
    split: &str,
) -> Result<Signals> {
    let cache = SignalCache::new(&config.cache);
    let plan = estimator.map(|e| e.plan()).transpose()?;
    let (mut deterministic, mut samples, mut provenance) = (Vec::new(), Vec::new(), Vec::new());
    for teacher in teachers.iter_mut() {
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
        provenance
            .push(json!({ "teacher": teacher.name, "split": split, "plan": "deterministic", "provenance": from }));
        if let Some(plan) = plan {
            let sampled = if plan == SamplingPlan::Deterministic {
                det.logits.clone()
            } else {
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
                provenance.push(
                    json!({ "teacher": teacher.name, "split": split, "plan": format!("{plan:?}"), "provenance": from }),
                );
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
fn oracle_signals(
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
    let texts = texts(match request.split {
        Split::Train => &examples.train,
        Split::Test => &examples.test,
    });
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

fn used_libraries(config: &ResolvedConfig, registry: &Registry) -> Result<Vec<Arc<PluginLibrary>>> {
    let teachers = config.teachers.values().map(|c| (ComponentKind::Teacher, c));
    let estimator = config.estimator.iter().map(|c| (ComponentKind::Estimator, c));
    let strategy = std::iter::once((ComponentKind::Strategy, &config.strategy));
    let mut libraries: Vec<Arc<PluginLibrary>> = Vec::new();
    for (kind, choice) in teachers.chain(estimator).chain(strategy) {
        let (library, _) = registry.find(kind, &choice.component, choice.library.as_deref())?;
        if !libraries.iter().any(|l| Arc::ptr_eq(l, library)) {
            libraries.push(Arc::clone(library));
        }
    }
    Ok(libraries)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    write_atomically(path, contents)
}

/// Runs a config end to end into its run directory; `resume` continues a killed run.
pub fn run(config: &ResolvedConfig, registry: &Registry, resume: bool) -> Result<RunOutcome> {
    let dir = run_dir(config);
    let fresh = !dir.exists();
    let result = run_in(config, registry, resume, &dir);
    if result.is_err() && fresh && matches!(saved_state(&dir), Ok(None)) {
        // A run that failed before its first epoch has nothing to resume: it leaves no directory.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(config: &ResolvedConfig, registry: &Registry, resume: bool, dir: &Path) -> Result<RunOutcome> {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating run directory {}", dir.display())))?;
    let lock_path = dir.join(".lock");
    let Some(_lock) = FileLock::try_acquire(&lock_path)? else {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "run {} is in use by another workbench process (pid {}); wait for it or choose another `name`",
                dir.display(),
                lock_holder(&lock_path)
            )],
        });
    };
    if is_complete(&dir) {
        return Err(Error::InvalidConfig {
            problems: vec![format!("run {} is already complete; choose another `name` or remove it", dir.display())],
        });
    }
    if !resume && saved_state(&dir)?.is_some() {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "{} holds a stopped run; continue it with `workbench run --resume {}`",
                dir.display(),
                dir.display()
            )],
        });
    }
    let resolved = config.to_toml();
    let written = dir.join("config.toml");
    if resume && written.is_file() {
        let before = std::fs::read_to_string(&written).map_err(Error::io(format!("reading {}", written.display())))?;
        let changed = changed_keys(&before, &resolved);
        if !changed.is_empty() {
            return Err(Error::InvalidConfig {
                problems: vec![format!(
                    "cannot resume {}: its config differs in {}; resume with the config it was started with, or start a new run under another `name`",
                    dir.display(),
                    changed.join(", ")
                )],
            });
        }
    } else {
        write(&written, &resolved)?;
    }

    let Prepared { splits, mut teachers, estimator, labels } = prepare(config, registry)?;
    let strategy = registry.create_strategy(
        &config.strategy.component,
        config.strategy.library.as_deref(),
        &config.strategy.params,
    )?;
    let (_, strategy_spec) =
        registry.find(ComponentKind::Strategy, &config.strategy.component, config.strategy.library.as_deref())?;
    let want_hidden = strategy_spec.signals.hidden_states;
    tracing::info!(
        teachers = teachers.len(),
        union = labels.labels.len(),
        train = splits.train.len(),
        test = splits.test.len(),
        "run ready"
    );

    let StudentExamples { train: train_examples, train_gold, validation, test, test_gold, unowned } =
        student_examples(&splits, &labels)?;
    let train_texts = texts(&train_examples);
    let test_texts = texts(&test);
    let train_signals = signals(config, &mut teachers, estimator.as_ref(), &train_texts, want_hidden, "train")?;
    let test_signals = signals(config, &mut teachers, estimator.as_ref(), &test_texts, false, "test")?;

    let names: Vec<String> = teachers.iter().map(|t| t.name.clone()).collect();
    let training = TrainingSignals {
        names: &names,
        texts: &train_texts,
        teachers: &train_signals.deterministic,
        scores: train_signals.scores.as_ref(),
        labels: &labels,
    };
    let outcome = train_student(&config.student, &strategy, &training, &validation, &config.cache, &dir)?;

    let test_refs: Vec<&str> = test.iter().map(|e| e.text.as_str()).collect();
    let student_predictions =
        crate::train::predict(&outcome.model, &outcome.tokenizer, &test_refs, 64, &candle_core::Device::Cpu)?;
    let student = row(&format!("student ({})", config.strategy.component), &student_predictions, &test_gold, &labels);
    let test_logits: Vec<&Tensor> = test_signals.deterministic.iter().map(|s| &s.logits).collect();
    let teacher_concat =
        row("teacher-concat ensemble", &concat_predictions(&test_logits, &labels), &test_gold, &labels);
    let teacher_rows: Vec<ResultRow> = teachers
        .iter()
        .zip(test_logits.iter().zip(&labels.maps))
        .map(|(teacher, (logits, map))| {
            row(&format!("teacher `{}` alone", teacher.name), &teacher_predictions(logits, map), &test_gold, &labels)
        })
        .collect();
    let oracle = if let Some(choice) = &config.oracle {
        let (signals, info, _) = oracle_signals(config, registry, choice, &test_texts)?;
        // The oracle's labels map to the union by name; one outside the union is never right.
        let map: Vec<u32> = info.labels.iter().map(|l| labels.index_of(l).unwrap_or(u32::MAX)).collect();
        Some(row("all-label oracle", &teacher_predictions(&signals.logits, &map), &test_gold, &labels))
    } else {
        None
    };
    let selected = |scores: &Tensor, gold: &[u32]| f64::from(selection_accuracy(scores, gold, &labels.maps));
    let concat_scores =
        |signals: &Signals| concat_argmax_scores(&signals.deterministic.iter().map(|s| &s.logits).collect::<Vec<_>>());
    let selection = SelectionReport {
        estimator: train_signals.scores.as_ref().zip(test_signals.scores.as_ref()).map(|(train, test)| {
            SplitSelection { train: selected(train, &train_gold), test: selected(test, &test_gold) }
        }),
        concat_argmax: SplitSelection {
            train: selected(&concat_scores(&train_signals), &train_gold),
            test: selected(&concat_scores(&test_signals), &test_gold),
        },
    };
    let coverage = coverage(&student, &teacher_rows);
    let min_coverage = coverage.iter().copied().fold(f64::INFINITY, f64::min);

    let mut warnings = Vec::new();
    for (i, teacher) in teachers.iter().enumerate() {
        let own = teacher_rows[i].per_teacher[i];
        if own < WEAK_TEACHER {
            warnings.push(format!(
                "teacher `{}` reaches only {own:.3} on its own classes: the comparison means little with weak teachers",
                teacher.name
            ));
        }
    }
    if let Some(s) = selection.estimator.filter(|s| s.test < WEAK_SELECTION) {
        warnings.push(format!("the estimator picks an adequate teacher for only {:.3} of the test instances", s.test));
    }
    for (teacher, c) in teachers.iter().zip(&coverage).filter(|(_, &c)| c < WEAK_COVERAGE) {
        warnings.push(format!(
            "the student keeps only {c:.3} of teacher `{}`'s accuracy on its classes (coverage below {WEAK_COVERAGE})",
            teacher.name
        ));
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    let plugins = used_libraries(config, registry)?
        .iter()
        .map(|lib| {
            Ok(json!({
                "name": lib.manifest.name.as_str(),
                "version": lib.manifest.version.as_str(),
                "api_version": lib.manifest.api_version.to_string(),
                "file": lib.path.display().to_string(),
                "sha256": lib.sha256()?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = json!({
        "workbench_version": env!("CARGO_PKG_VERSION"),
        "host": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH, "threads": config.threads },
        "seeds": { "data_order": config.seed, "dropout": config.seed, "subsampling_and_validation_split": config.data_seed, "mc_sampling": config.mc_seed },
        "plugins": plugins,
        "assets": crate::assets::verified(),
        "teachers": teachers.iter().map(|t| json!({ "name": t.name, "sha256": t.identity, "labels": t.info.labels.iter().map(|l| l.as_str()).collect::<Vec<_>>(), "members": t.info.members })).collect::<Vec<_>>(),
        "data": { "train_sha256": texts_hash(&train_texts), "test_sha256": texts_hash(&test_texts), "train": train_texts.len(), "validation": validation.len(), "test": test_texts.len(), "report": splits.report },
        "signals": train_signals.provenance.iter().chain(&test_signals.provenance).collect::<Vec<_>>(),
        "union_labels": labels.labels,
    });
    write(&dir.join("manifest.json"), &serde_json::to_string_pretty(&manifest).expect("JSON serializes"))?;
    let results = RunResults {
        student,
        teacher_concat,
        teachers: teacher_rows,
        oracle,
        selection,
        coverage,
        min_coverage,
        best_epoch: outcome.state.best_epoch,
        unowned,
        warnings,
    };
    write(&dir.join("results.json"), &serde_json::to_string_pretty(&results).expect("JSON serializes"))?;
    write(&dir.join("report.md"), &report(config, &names, &results, &outcome.state))?;
    Ok(RunOutcome { dir, labels, results })
}

/// The keys (dotted) whose values differ between two resolved configs, with both values;
/// `threads` is left out, since it changes only the speed.
pub fn changed_keys(before: &str, after: &str) -> Vec<String> {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&key, value, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let parse = |text: &str| {
        let mut keys = BTreeMap::new();
        if let Ok(table) = text.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(table), &mut keys);
        }
        keys.remove("threads");
        keys
    };
    crate::config::changed_entries(&parse(before), &parse(after))
}

/// What an estimator achieves on the test split, without a student.
pub struct SelectionOutcome {
    /// How often the highest-scored teacher owns the gold label.
    pub accuracy: f64,
    /// Each teacher's name and accuracy on the test instances of its own labels.
    pub own_class: Vec<(String, f64)>,
    /// Per teacher, the selection accuracy on the test instances of its labels: a low one
    /// beside a high one means the other teacher is picked almost everywhere.
    pub by_teacher: Vec<f64>,
    /// Wall time of the scoring; `None` when every signal came from the cache.
    pub seconds: Option<f64>,
}

/// Scores the test split with the config's estimator and measures its teacher-selection
/// accuracy; no student is trained and no run directory is written.
pub fn selection_only(config: &ResolvedConfig, registry: &Registry) -> Result<SelectionOutcome> {
    let Prepared { splits, mut teachers, estimator, labels } = prepare(config, registry)?;
    let Some(estimator) = estimator else {
        return Err(Error::InvalidConfig { problems: vec!["no `estimator` table: nothing selects a teacher".into()] });
    };
    let (test, test_gold) = gold(&splits.test, &labels, &mut 0);
    let started = std::time::Instant::now();
    let scored = signals(config, &mut teachers, Some(&estimator), &texts(&test), false, "test")?;
    let computed = scored.provenance.iter().any(|p| p["provenance"] == json!(Provenance::Computed));
    let scores = scored.scores.expect("an estimator scores");
    let own_class = teachers
        .iter()
        .zip(scored.deterministic.iter().zip(&labels.maps))
        .map(|(teacher, (signals, map))| {
            let predictions = teacher_predictions(&signals.logits, map);
            (teacher.name.clone(), accuracy(&predictions, &test_gold, Some(map)))
        })
        .collect();
    let picks = adequate_picks(&scores, &test_gold, &labels.maps);
    let by_teacher = labels
        .maps
        .iter()
        .map(|map| share(picks.iter().zip(&test_gold).filter(|(_, g)| map.contains(g)).map(|(&p, _)| p)) as f64)
        .collect();
    Ok(SelectionOutcome {
        accuracy: share(picks.into_iter()) as f64,
        own_class,
        by_teacher,
        seconds: computed.then(|| started.elapsed().as_secs_f64()),
    })
}

/// The human report.
fn report(
    config: &ResolvedConfig,
    teachers: &[String],
    results: &RunResults,
    state: &crate::learner::TrainingState,
) -> String {
    let mut out = format!("# Run `{}`\n\n", config.name);
    out += &format!(
        "Strategy `{}`, estimator `{}`, {} teachers, seed {}, MC seed {}, data seed {}. Student: {} ({} layers), best epoch {} of {}.\n\n",
        config.strategy.component,
        config.estimator.as_ref().map_or("none", |e| e.component.as_str()),
        teachers.len(),
        config.seed,
        config.mc_seed,
        config.data_seed,
        config.student.model,
        config.student.layers.map_or_else(|| "all".to_string(), |l| l.to_string()),
        state.best_epoch,
        config.student.epochs,
    );
    out += "Test accuracy on the union of the teachers' labels, and on each teacher's label subset:\n\n";
    out += &format!(
        "| method | union | {} |\n",
        teachers.iter().map(|t| format!("on `{t}`'s labels")).collect::<Vec<_>>().join(" | ")
    );
    out += &format!("|---|---|{}\n", "---|".repeat(teachers.len()));
    for r in results.rows() {
        let subsets: Vec<String> = r.per_teacher.iter().map(|a| format!("{a:.4}")).collect();
        out += &format!("| {} | {:.4} | {} |\n", r.method, r.accuracy, subsets.join(" | "));
    }
    let coverage: Vec<String> = teachers.iter().zip(&results.coverage).map(|(t, c)| format!("`{t}` {c:.3}")).collect();
    out += &format!(
        "\nCoverage (the student's accuracy on a teacher's labels over the teacher's own): {}; minimum {:.3}.\n",
        coverage.join(", "),
        results.min_coverage
    );
    out += "\nTeacher-selection accuracy (the top-scored teacher owns the gold label), on the student's training \
            texts and on test:\n\n| selector | training texts | test |\n|---|---|---|\n";
    let selectors = results.selection.estimator.iter().map(|s| ("the estimator", s));
    for (name, s) in selectors.chain([("concat-argmax (reference)", &results.selection.concat_argmax)]) {
        out += &format!("| {name} | {:.4} | {:.4} |\n", s.train, s.test);
    }
    let unowned = results.unowned;
    if unowned != UnownedRows::default() {
        out += &format!(
            "\nRows left out because no teacher owns their label: {} train, {} validation, {} test.\n",
            unowned.train, unowned.validation, unowned.test
        );
    }
    if !results.warnings.is_empty() {
        out += "\n## Warnings\n\n";
        for w in &results.warnings {
            out += &format!("- {w}\n");
        }
    }
    out
}
