//! The run's human report and its manifest.

use std::sync::Arc;

use abi_stable::std_types::RString;
use serde_json::json;
use workbench_plugin_api::{ComponentKind, LabelSpace};

use super::{prepare::Teacher, RunResults, UnownedRows};
use crate::{
    config::ResolvedConfig,
    data::LoadReport,
    host::{PluginLibrary, Registry},
    signals::texts_hash,
    Result,
};

/// What the manifest records of a run's data and teacher outputs.
pub(super) struct ManifestData<'a> {
    pub train_texts: &'a [RString],
    pub test_texts: &'a [RString],
    pub validation: usize,
    pub report: &'a LoadReport,
    /// Where each teacher output came from (computed or cached).
    pub provenance: Vec<&'a serde_json::Value>,
    pub labels: &'a LabelSpace,
}

/// `manifest.json`: versions, host, seeds, plugin and asset hashes, teachers, data hashes and
/// the provenance of every teacher output.
pub(super) fn manifest(
    config: &ResolvedConfig,
    registry: &Registry,
    teachers: &[Teacher],
    data: ManifestData,
) -> Result<serde_json::Value> {
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
    Ok(json!({
        "workbench_version": env!("CARGO_PKG_VERSION"),
        "host": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH, "threads": config.threads },
        "seeds": { "data_order": config.seed, "dropout": config.seed, "subsampling_and_validation_split": config.data_seed, "mc_sampling": config.mc_seed },
        "plugins": plugins,
        "assets": crate::assets::verified(),
        "teachers": teachers.iter().map(|t| json!({ "name": t.name, "sha256": t.identity, "labels": t.info.labels.iter().map(|l| l.as_str()).collect::<Vec<_>>(), "members": t.info.members })).collect::<Vec<_>>(),
        "data": { "train_sha256": texts_hash(data.train_texts), "test_sha256": texts_hash(data.test_texts), "train": data.train_texts.len(), "validation": data.validation, "test": data.test_texts.len(), "report": data.report },
        "signals": data.provenance,
        "union_labels": data.labels.labels,
    }))
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

/// The human report.
pub(super) fn report(
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
        out += &format!("| {name} | {} |\n", s.describe().replace(" / ", " | "));
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
