//! The run's human report and its manifest.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use abi_stable::std_types::RString;
use serde::{Deserialize, Serialize};
use workbench_plugin_api::{ComponentKind, LabelSpace};

use super::{prepare::Teacher, signals::SignalRecord, RunResults, UnownedRows};
use crate::{
    config::ResolvedConfig,
    data::LoadReport,
    host::{PluginLibrary, Registry},
    signal_cache::texts_hash,
    Result,
};

/// `manifest.json`: what a run was made from (versions, host, seeds, plugin and asset hashes,
/// teachers, data hashes) and where each teacher output came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub workbench_version: String,
    pub host: HostRecord,
    pub seeds: SeedRecord,
    pub plugins: Vec<PluginRecord>,
    /// Asset name -> the sha256 of its verified file record.
    pub assets: BTreeMap<String, String>,
    pub teachers: Vec<TeacherRecord>,
    pub data: DataRecord,
    pub signals: Vec<SignalRecord>,
    pub union_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub os: String,
    pub arch: String,
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub data_order: u64,
    pub dropout: u64,
    pub subsampling_and_validation_split: u64,
    pub mc_sampling: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub file: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRecord {
    pub name: String,
    /// The teacher's identity: plugin, parameters and the files they name.
    pub sha256: String,
    pub labels: Vec<String>,
    pub members: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Of the student's training texts (the transfer set when there is one).
    pub train_sha256: String,
    pub test_sha256: String,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub report: LoadReport,
}

/// What the manifest records of a run's data and teacher outputs.
pub(super) struct ManifestData<'a> {
    pub train_texts: &'a [RString],
    pub test_texts: &'a [RString],
    pub validation: usize,
    pub report: &'a LoadReport,
    pub provenance: Vec<SignalRecord>,
    pub labels: &'a LabelSpace,
}

pub(super) fn manifest(
    config: &ResolvedConfig,
    registry: &Registry,
    teachers: &[Teacher],
    data: ManifestData,
) -> Result<Manifest> {
    let plugins = used_libraries(config, registry)?
        .iter()
        .map(|lib| {
            Ok(PluginRecord {
                name: lib.manifest.name.to_string(),
                version: lib.manifest.version.to_string(),
                api_version: lib.manifest.api_version.to_string(),
                file: lib.path.clone(),
                sha256: lib.sha256()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Manifest {
        workbench_version: env!("CARGO_PKG_VERSION").into(),
        host: HostRecord {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            threads: config.threads,
        },
        seeds: SeedRecord {
            data_order: config.seed,
            dropout: config.seed,
            subsampling_and_validation_split: config.data_seed,
            mc_sampling: config.mc_seed,
        },
        plugins,
        assets: crate::assets::verified().into_iter().map(|(name, sha)| (name.to_string(), sha)).collect(),
        teachers: teachers
            .iter()
            .map(|t| TeacherRecord {
                name: t.name.clone(),
                sha256: t.identity.clone(),
                labels: t.info.labels.iter().map(|l| l.to_string()).collect(),
                members: t.info.members,
            })
            .collect(),
        data: DataRecord {
            train_sha256: texts_hash(data.train_texts),
            test_sha256: texts_hash(data.test_texts),
            train: data.train_texts.len(),
            validation: data.validation,
            test: data.test_texts.len(),
            report: data.report.clone(),
        },
        signals: data.provenance,
        union_labels: data.labels.labels.clone(),
    })
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

/// What the report and the card say of a run without labelled test texts.
pub const NOT_MEASURED: &str =
    "Not measured: the run had no labelled test texts (`data.test`), so it reports no accuracy, coverage or \
     selection.\n";

/// The human report; `results` is `None` for a run without labelled test texts.
pub(super) fn report(
    config: &ResolvedConfig,
    teachers: &[String],
    results: Option<&RunResults>,
    state: &crate::training::learner::TrainingState,
    validation: usize,
) -> String {
    let mut out = format!("# Run `{}`\n\n", config.name);
    out += &format!(
        "Strategy `{}`, estimator `{}`, {} teachers, seed {}, MC seed {}, data seed {}. Student: {} ({} layers), best epoch {} of {}.\n\n",
        config.strategy.component,
        match (&config.selector, &config.estimator) {
            (Some(selector), _) => format!("none (selector `{}`)", selector.component),
            (None, Some(estimator)) => estimator.component.clone(),
            (None, None) => "none".into(),
        },
        teachers.len(),
        config.seed,
        config.mc_seed,
        config.data_seed,
        config.student.model,
        config.student.layers.map_or_else(|| "all".to_string(), |l| l.to_string()),
        state.best_epoch,
        config.student.epochs,
    );
    if validation == 0 {
        out += &format!(
            "No labelled validation texts: the student trained a fixed {} epochs and the last was kept.\n\n",
            config.student.epochs
        );
    }
    let Some(results) = results else {
        return out + NOT_MEASURED;
    };
    out += &scores(teachers, results);
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

/// The run's test accuracies (student, references, each teacher), the coverage and the
/// selection accuracies, as Markdown: the heart of the report and of the student's model card.
pub(crate) fn scores(teachers: &[String], results: &RunResults) -> String {
    let mut out =
        "Test accuracy on the union of the teachers' labels, and on each teacher's label subset:\n\n".to_string();
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
        out += &format!("| {name} | {} |\n", s.describe().replace(" / ", " | "));
    }
    out
}
