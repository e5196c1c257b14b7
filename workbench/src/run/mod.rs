//! `workbench run`: resolve and check the config, load the plugins, ensure the teachers exist,
//! compute (or reuse) the cached teacher signals, train and evaluate the student, and write the
//! run directory: resolved config, manifest, metrics, report and the student checkpoint.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use workbench_plugin_api::{ComponentKind, LabelSpace, Tensor};

use crate::{
    config::ResolvedConfig,
    evaluate::{concat_predictions, row, teacher_predictions, ResultRow},
    files::{lock_holder, write_atomically, FileLock},
    host::Registry,
    model_card,
    training::learner::saved_state,
    training::student::{train_student, TrainingSignals},
    Error, Result,
};

/// A selector's accuracy (how often its top-scored teacher owns the gold label) on the
/// student's training texts, the transfer set MUKA's targets are built from (none for an
/// unlabelled transfer set), on the validation texts and on test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitSelection {
    pub train: Option<f64>,
    /// Measured by selection-only scoring (`workbench sweep --selection-only`), the column to
    /// choose a selector on: a student used as selector has learnt the training texts' picks of
    /// the selector it was trained with. Runs leave it out (their teachers do not score the
    /// validation texts); `None` too without validation rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<f64>,
    pub test: f64,
}

impl SplitSelection {
    /// `training texts / test` for reports; `–` where the transfer set has no labels.
    pub fn describe(&self) -> String {
        let train = self.train.map_or_else(|| "–".to_string(), |t| format!("{t:.4}"));
        format!("{train} / {:.4}", self.test)
    }
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
        read_artefact(&run.join("results.json"))
    }
}

/// A JSON file a run wrote, read back through its type.
fn read_artefact<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    crate::files::read_json(path, |e| Error::Artefact {
        path: path.to_path_buf(),
        reason: format!("not written by this workbench version ({e}); run it again"),
    })
}

impl Manifest {
    /// Reads `<run>/manifest.json`.
    pub fn load(run: &Path) -> Result<Self> {
        read_artefact(&run.join("manifest.json"))
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
    /// `None` for a run without labelled test texts: nothing was measured.
    pub results: Option<RunResults>,
}

/// The run directory of a config.
pub fn run_dir(config: &ResolvedConfig) -> PathBuf {
    config.output.join(&config.name)
}

/// A run is complete once its report is written.
pub fn is_complete(dir: &Path) -> bool {
    dir.join("report.md").is_file()
}

mod evaluation;
mod export;
mod prepare;
mod report;
mod signals;

pub use evaluation::{selection_only, SelectionOutcome};
use evaluation::{selection_report, warnings};
pub use prepare::{check_components, taught_teachers, teacher_is_ready, train_teacher, ComponentsCheck, UnownedRows};
use prepare::{prepare, student_examples, student_texts, texts, Prepared, StudentExamples};
pub(crate) use report::scores;
pub use report::NOT_MEASURED;
use report::{manifest, report, ManifestData};
pub use report::{DataRecord, HostRecord, Manifest, PluginRecord, SeedRecord, TeacherRecord};
pub use signals::{signal_requests, teacher_signals, SignalRecord, SignalRequest, Split};
use signals::{signals, Scorer};

fn write(path: &Path, contents: &str) -> Result<()> {
    write_atomically(path, contents)
}

/// Refuses to resume from `dir` what is not a stopped run of the workbench there: a directory
/// whose config names another run directory, or one without a saved training state.
pub fn check_resumable(config: &ResolvedConfig, dir: &Path) -> Result<()> {
    let own = run_dir(config);
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    let problem = if !same(&own, dir) {
        format!(
            "{}/config.toml names the run directory {}, not {}: resume a run from its own directory",
            dir.display(),
            own.display(),
            dir.display()
        )
    } else if is_complete(dir) {
        format!("run {} is already complete: there is nothing to resume", dir.display())
    } else if saved_state(dir)?.is_none() {
        format!(
            "{} holds no stopped run of the workbench (no saved training state in {}/state): start it with `workbench run CONFIG`",
            dir.display(),
            dir.display()
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidConfig { problems: vec![problem] })
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
        return Err(Error::Busy(format!(
            "run {} is in use by another workbench process (pid {}); wait for it or choose another `name`",
            dir.display(),
            lock_holder(&lock_path)
        )));
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

    let Prepared { splits, mut teachers, estimator, mut selector, labels } = prepare(config, registry)?;
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

    let examples = student_examples(&splits, &labels)?;
    let mut load_report = splits.report.clone();
    let (train_texts, train_gold) = student_texts(config, &examples, &mut load_report)?;
    let StudentExamples { validation, test, test_gold, unowned, .. } = examples;
    let test_texts = texts(&test);
    let mut scorer = Scorer::of(selector.as_mut(), estimator.as_ref(), &labels);
    let train_signals = signals(config, &mut teachers, &mut scorer, &train_texts, want_hidden, "train", None)?;

    let names: Vec<String> = teachers.iter().map(|t| t.name.clone()).collect();
    let training = TrainingSignals {
        names: &names,
        texts: &train_texts,
        teachers: &train_signals.deterministic,
        scores: train_signals.scores.as_ref(),
        labels: &labels,
    };
    let outcome = train_student(&config.student, &strategy, &training, &validation, &config.cache, &dir)?;
    if test.is_empty() {
        // A transfer-only run without labelled test texts: the student, its manifest, report and card.
        let data = ManifestData {
            train_texts: &train_texts,
            test_texts: &test_texts,
            validation: validation.len(),
            report: &load_report,
            provenance: train_signals.provenance.clone(),
            labels: &labels,
        };
        let manifest = manifest(config, registry, &teachers, data)?;
        write(&dir.join("manifest.json"), &serde_json::to_string_pretty(&manifest).expect("JSON serializes"))?;
        write(&dir.join("report.md"), &report(config, &names, None, &outcome.state, validation.len()))?;
        let student_dir = dir.join("student");
        let methods = method_docs(config, registry)?;
        let card = model_card::student_card(&student_dir, config, &manifest, None, outcome.state.best_epoch, &methods);
        model_card::write(&student_dir, &card)?;
        crate::training::learner::remove_state(&dir)?;
        return Ok(RunOutcome { dir, labels, results: None });
    }

    let test_signals = signals(config, &mut teachers, &mut scorer, &test_texts, false, "test", Some(&train_signals))?;
    let test_refs: Vec<&str> = test.iter().map(|e| e.text.as_str()).collect();
    let mut student_model = outcome.model;
    crate::training::train::evaluate_at(&mut student_model, config.student.eval_precision)?;
    let student_predictions =
        crate::training::train::predict(&student_model, &outcome.tokenizer, &test_refs, 64, &candle_core::Device::Cpu)?;
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
        let mut oracle = prepare::UnionModel::load(registry, "oracle", choice)?;
        let (signals, _) = oracle.signals(config, &test_texts)?;
        // A label of the oracle's outside the union is never right.
        let map: Vec<u32> = oracle.union_indices(&labels).into_iter().map(|i| i.unwrap_or(u32::MAX)).collect();
        Some(row("all-label oracle", &teacher_predictions(&signals.logits, &map), &test_gold, &labels))
    } else {
        None
    };
    let selection =
        selection_report((&train_signals, train_gold.as_deref()), None, (&test_signals, &test_gold), &labels);
    let coverage = coverage(&student, &teacher_rows);
    let min_coverage = coverage.iter().copied().fold(f64::INFINITY, f64::min);

    let warnings = warnings(&names, &teacher_rows, &selection, &coverage);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    let manifest = manifest(
        config,
        registry,
        &teachers,
        ManifestData {
            train_texts: &train_texts,
            test_texts: &test_texts,
            validation: validation.len(),
            report: &load_report,
            provenance: train_signals.provenance.iter().chain(&test_signals.provenance).cloned().collect(),
            labels: &labels,
        },
    )?;
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
    write(&dir.join("report.md"), &report(config, &names, Some(&results), &outcome.state, validation.len()))?;
    let student_dir = dir.join("student");
    let methods = method_docs(config, registry)?;
    let card =
        model_card::student_card(&student_dir, config, &manifest, Some(&results), outcome.state.best_epoch, &methods);
    model_card::write(&student_dir, &card)?;
    // A complete run cannot be resumed: its training state (the model and the optimizer's
    // moments, about 110 MB for a 3-layer MiniLM student) goes, as a published teacher's does.
    crate::training::learner::remove_state(&dir)?;
    Ok(RunOutcome { dir, labels, results: Some(results) })
}

/// The run's strategy and estimator (or selector) with their plugins' descriptions.
fn method_docs(config: &ResolvedConfig, registry: &Registry) -> Result<Vec<model_card::MethodDoc>> {
    let roles = [
        ("strategy", ComponentKind::Strategy, Some(&config.strategy)),
        ("estimator", ComponentKind::Estimator, config.estimator.as_ref().filter(|_| config.selector.is_none())),
        ("selector", ComponentKind::Teacher, config.selector.as_ref()),
    ];
    let mut docs = Vec::new();
    for (role, kind, choice) in roles {
        let Some(choice) = choice else { continue };
        let (_, spec) = registry.find(kind, &choice.component, choice.library.as_deref())?;
        docs.push(model_card::MethodDoc { role, component: choice.component.clone(), doc: spec.doc.to_string() });
    }
    Ok(docs)
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
