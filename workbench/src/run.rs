//! `workbench run`: resolve, load, check, and write the run directory. Training and evaluation
//! fill in the steps after the component check.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::json;

use crate::{config::ResolvedConfig, host::Registry, Error, Result};

/// The student's label space: the union of the teachers' labels, with each teacher's labels
/// mapped to union indices by name (never by position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSpace {
    pub labels: Vec<String>,
    /// For each teacher, in config order, the union index of each of its labels.
    pub maps: Vec<Vec<u32>>,
}

impl LabelSpace {
    /// Labels in order of first appearance, teacher by teacher.
    pub fn union<'a>(teacher_labels: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut labels: Vec<String> = Vec::new();
        let mut index: BTreeMap<String, u32> = BTreeMap::new();
        let maps = teacher_labels
            .into_iter()
            .map(|own| {
                own.iter()
                    .map(|label| {
                        *index.entry(label.clone()).or_insert_with(|| {
                            labels.push(label.clone());
                            labels.len() as u32 - 1
                        })
                    })
                    .collect()
            })
            .collect();
        Self { labels, maps }
    }
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub labels: LabelSpace,
}

/// Creates every component (the first point where plugins may load models), checks that they
/// fit together, and writes the run directory's config and manifest.
pub fn run(config: &ResolvedConfig, registry: &Registry) -> Result<RunOutcome> {
    let mut teacher_labels = Vec::new();
    let mut teachers_manifest = serde_json::Map::new();
    for (name, choice) in &config.teachers {
        let teacher = registry.create_teacher(&choice.component, &choice.params)?;
        let info = teacher.info()?;
        let labels: Vec<String> = info.labels.iter().map(|l| l.to_string()).collect();
        tracing::info!(teacher = %name, labels = labels.len(), members = info.members, "teacher ready");
        teachers_manifest.insert(name.clone(), json!({ "component": choice.component, "labels": labels }));
        teacher_labels.push(labels);
    }
    if let Some(estimator) = &config.estimator {
        let plan = registry.create_estimator(&estimator.component, &estimator.params)?.plan()?;
        tracing::info!(estimator = %estimator.component, ?plan, "estimator ready");
    }
    registry.create_strategy(&config.strategy.component, &config.strategy.params)?;
    let labels = LabelSpace::union(teacher_labels.iter().map(Vec::as_slice));
    tracing::info!(union = labels.labels.len(), "student label space");

    let dir = config.output.join(&config.name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating run directory {}", dir.display())))?;
    write(&dir.join("config.toml"), &config.to_toml())?;
    let plugins = registry
        .libraries()
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

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_maps_labels_by_name() {
        let a = vec!["sport".to_string(), "tech".to_string()];
        let b = vec!["politics".to_string(), "sport".to_string()];
        let space = LabelSpace::union([a.as_slice(), b.as_slice()]);
        assert_eq!(space.labels, ["sport", "tech", "politics"]);
        assert_eq!(space.maps, vec![vec![0, 1], vec![2, 0]]);
    }
}
