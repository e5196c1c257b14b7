//! `workbench run`: resolve, load, check, and write the run directory. Training and evaluation
//! fill in the steps after the component check.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::json;
use workbench_plugin_api::{ComponentKind, LabelSpace, SamplingPlan};

use crate::{
    config::ResolvedConfig,
    host::{PluginLibrary, Registry},
    Error, Result,
};

pub struct RunOutcome {
    pub dir: PathBuf,
    pub labels: LabelSpace,
}

/// Creates every component (the first point where plugins may load models), checks that they
/// fit together, and writes the run directory's config and manifest.
pub fn run(config: &ResolvedConfig, registry: &Registry) -> Result<RunOutcome> {
    let mut teacher_labels = Vec::new();
    let mut teacher_infos = Vec::new();
    let mut teachers_manifest = serde_json::Map::new();
    for (name, choice) in &config.teachers {
        let teacher = registry.create_teacher(&choice.component, &choice.params)?;
        let info = teacher.info()?;
        let labels: Vec<String> = info.labels.iter().map(|l| l.to_string()).collect();
        tracing::info!(teacher = %name, labels = labels.len(), members = info.members, "teacher ready");
        teachers_manifest.insert(name.clone(), json!({ "component": choice.component, "labels": labels }));
        teacher_labels.push(labels);
        teacher_infos.push((name, info));
    }
    if let Some(estimator) = &config.estimator {
        let plan = registry.create_estimator(&estimator.component, &estimator.params)?.plan()?;
        if plan == SamplingPlan::Members {
            if let Some((name, info)) = teacher_infos.iter().find(|(_, info)| info.members < 2) {
                return Err(Error::InvalidConfig {
                    problems: vec![format!(
                        "estimator `{}` scores ensemble members, but teacher `{name}` has {} member(s): give it several checkpoints or use mc-dropout",
                        estimator.component, info.members
                    )],
                });
            }
        }
        tracing::info!(estimator = %estimator.component, ?plan, "estimator ready");
    }
    registry.create_strategy(&config.strategy.component, &config.strategy.params)?;
    let labels = LabelSpace::union(teacher_labels.iter().map(Vec::as_slice));
    tracing::info!(union = labels.labels.len(), "student label space");

    let dir = config.output.join(&config.name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating run directory {}", dir.display())))?;
    write(&dir.join("config.toml"), &config.to_toml())?;
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
        "seeds": { "run": config.seed },
        "threads": config.threads,
        "plugins": plugins,
        "teachers": teachers_manifest,
        "union_labels": labels.labels,
    });
    write(&dir.join("manifest.json"), &serde_json::to_string_pretty(&manifest).expect("JSON values serialize"))?;
    Ok(RunOutcome { dir, labels })
}

/// The plugin libraries a config's components come from, each once.
fn used_libraries(config: &ResolvedConfig, registry: &Registry) -> Result<Vec<Arc<PluginLibrary>>> {
    let teachers = config.teachers.values().map(|c| (ComponentKind::Teacher, c));
    let others = config.estimator.iter().map(|c| (ComponentKind::Estimator, c));
    let strategy = std::iter::once((ComponentKind::Strategy, &config.strategy));
    let mut libraries: Vec<Arc<PluginLibrary>> = Vec::new();
    for (kind, choice) in teachers.chain(others).chain(strategy) {
        let (library, _) = registry.find(kind, &choice.component)?;
        if !libraries.iter().any(|l| Arc::ptr_eq(l, library)) {
            libraries.push(Arc::clone(library));
        }
    }
    Ok(libraries)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}
