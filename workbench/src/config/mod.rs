//! Configuration: TOML files, then `WORKBENCH_*` environment variables, then `--set key=value`,
//! later sources winning ([`sources`]). Every component's parameters are checked against its
//! plugin's schema before any model or data loads ([`components`]), and every problem names the
//! key and where it was set. The result is a [`ResolvedConfig`], written out whole ([`resolved`]).

mod components;
mod resolved;
mod sources;

use std::{collections::BTreeMap, path::PathBuf};

use figment::{value::Value, Figment};
use serde::Deserialize;
use workbench_plugin_api::{ComponentKind, ParamTable, ParamValue};

use components::{check_signals, ScoreTables};
use sources::origin;
pub use sources::{extract, key_origin, sources, ENV_PREFIX};

use crate::{
    data::DataConfig,
    host::Registry,
    training::teach::{TeachSettings, TrainingSettings},
    Error, Result,
};

/// Run-level settings; components are read separately so their values keep their origin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    name: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    threads: usize,
    #[serde(default)]
    plugin_dirs: Vec<PathBuf>,
    output: Option<PathBuf>,
    cache: Option<PathBuf>,
    #[serde(default)]
    mc_seed: u64,
    #[serde(default)]
    data_seed: u64,
    /// Plugin name -> the sha256 its library must have.
    #[serde(default)]
    plugin_sha256: BTreeMap<String, String>,
    /// Run every plugin library in a worker process of its own.
    #[serde(default)]
    isolate_plugins: bool,
    /// With isolated plugins: seconds a plugin call may take.
    plugin_timeout: Option<u64>,
    sweep: Option<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    oracle: Option<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    selector: Option<serde::de::IgnoredAny>,
    data: Option<DataConfig>,
    student: Option<TrainingSettings>,
    #[allow(dead_code)]
    teachers: Option<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    estimator: Option<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    strategy: Option<serde::de::IgnoredAny>,
}

/// The merged sources, not yet checked against plugins.
pub struct LoadedConfig {
    figment: Figment,
    settings: Settings,
    default_name: String,
}

/// A component chosen by a config, with validated parameters and defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentChoice {
    pub component: String,
    /// The plugin library (a file, or the directory holding it) to take the component from,
    /// when several provide it.
    pub library: Option<PathBuf>,
    pub params: ParamTable,
    /// Teachers only: how to train the teacher when its checkpoint does not exist yet.
    pub teach: Option<TeachSettings>,
    /// `[selector]` only: member k of its checkpoints (a student trained with
    /// `student.holdout_fold = [k, n]`, n the number of members) scores the texts of fold k,
    /// the texts it never saw, instead of the members' mean scoring every text.
    pub cross_fit: bool,
}

impl ComponentChoice {
    /// The values of its text parameters: the paths it may read (checkpoints, data files).
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.params.entries.iter().flat_map(|param| texts(&param.value))
    }
}

/// The texts a parameter value holds (none unless it is a text or a list of them).
pub fn texts(value: &ParamValue) -> Vec<&str> {
    match value {
        ParamValue::Text(text) => vec![text.as_str()],
        ParamValue::TextList(list) => list.iter().map(|text| text.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// A configuration resolved from all sources and validated against the loaded plugins; it
/// serializes to the TOML that reproduces the run ([`ResolvedConfig::to_toml`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResolvedConfig {
    pub name: String,
    /// Seed of data order, dropout and MC sampling.
    pub seed: u64,
    /// Threads for host and plugins; 0 in the file means every core.
    pub threads: usize,
    pub plugin_dirs: Vec<PathBuf>,
    pub output: PathBuf,
    /// Asset and teacher-signal cache.
    pub cache: PathBuf,
    /// Seed of the Monte-Carlo passes; kept apart from `seed` so that runs over several
    /// training seeds share their cached teacher signals.
    pub mc_seed: u64,
    /// Seed of subsampling and the validation split; kept apart from `seed` too, so that every
    /// training seed sees the same data.
    pub data_seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataConfig>,
    pub student: TrainingSettings,
    pub teachers: BTreeMap<String, ComponentChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimator: Option<ComponentChoice>,
    pub strategy: ComponentChoice,
    /// A teacher over all labels, evaluated as a reference row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle: Option<ComponentChoice>,
    /// Instead of an estimator: a model over the union labels (a teacher plugin, e.g. an earlier
    /// run's student) whose probability mass on each teacher's labels is that teacher's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<ComponentChoice>,
    /// Plugin name -> the sha256 its library must have (checked at validation).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_sha256: BTreeMap<String, String>,
}

/// Reads a `workbench teach` config and refuses values out of range, naming key and source.
pub fn load_teach(files: &[PathBuf], sets: &[String]) -> Result<crate::training::teach::TeachConfig> {
    let figment = sources(files, sets)?;
    let config: crate::training::teach::TeachConfig = extract(&figment)?;
    let found = config.teach.problems().into_iter().map(|(key, reason)| (format!("teach.{key}"), reason));
    let data = config.data.problems().into_iter().map(|(key, reason)| (format!("data.{key}"), reason));
    let problems: Vec<String> =
        found.chain(data).map(|(key, reason)| format!("{} = {reason}", key_origin(&figment, &key))).collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Error::InvalidConfig { problems })
    }
}

/// Reads a run config: files, environment and `--set`.
pub fn load(files: &[PathBuf], sets: &[String]) -> Result<LoadedConfig> {
    let default_name = files
        .last()
        .and_then(|f| f.file_stem())
        .map_or_else(|| "run".to_string(), |s| s.to_string_lossy().into_owned());
    LoadedConfig::from_figment(sources(files, sets)?, &default_name)
}

impl LoadedConfig {
    pub fn from_figment(figment: Figment, default_name: &str) -> Result<Self> {
        let settings: Settings = extract(&figment)?;
        Ok(LoadedConfig { figment, settings, default_name: default_name.to_string() })
    }

    /// Plugin directories named by the config (relative to the working directory, as every path).
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        self.settings.plugin_dirs.clone()
    }

    /// The asset and signal cache: the `cache` key, else `WORKBENCH_CACHE`, else the user's.
    pub fn cache_dir(&self) -> PathBuf {
        crate::assets::cache_dir(self.settings.cache.as_deref())
    }

    /// The `[data]` table with the seed of its subsampling, when there is one (read without
    /// the plugins, for `workbench texts`).
    pub fn data(&self) -> Option<(&DataConfig, u64)> {
        self.settings.data.as_ref().map(|data| (data, self.settings.data_seed))
    }

    /// Whether this is a sweep file (a `[sweep]` table): a base config and methods.
    pub fn is_sweep(&self) -> bool {
        self.settings.sweep.is_some()
    }

    pub fn threads(&self) -> usize {
        crate::host::thread_budget(self.settings.threads)
    }

    /// Whether the config asks for isolated plugins, and the call timeout it sets (seconds).
    pub fn plugin_isolation(&self) -> (bool, Option<u64>) {
        (self.settings.isolate_plugins, self.settings.plugin_timeout)
    }

    /// Checks every component and parameter against the plugins' manifests; reports all
    /// problems at once.
    pub fn validate(&self, registry: &Registry) -> Result<ResolvedConfig> {
        let mut problems = Vec::new();
        let mut teachers = BTreeMap::new();
        let mut teacher_specs = Vec::new();
        match self.figment.find_value("teachers") {
            Ok(Value::Dict(_, dict)) if !dict.is_empty() => {
                for (name, value) in &dict {
                    let key = format!("teachers.{name}");
                    if let Some((choice, spec)) =
                        self.component(registry, ComponentKind::Teacher, &key, value, &mut problems)
                    {
                        teacher_specs.push((name.clone(), spec));
                        teachers.insert(name.clone(), choice);
                    }
                }
            }
            Ok(other) if !matches!(other, Value::Dict(..)) => problems.push(format!(
                "{}: must be a table of teachers, e.g. [teachers.sports]",
                self.origin("teachers", &other)
            )),
            _ => problems.push("no teachers: add at least one [teachers.NAME] table with a `plugin` key".into()),
        }
        // Teachers over the union labels, under keys of their own.
        let mut union_model = |key: &str| {
            let value = self.figment.find_value(key).ok()?;
            self.component(registry, ComponentKind::Teacher, key, &value, &mut problems).map(|(choice, _)| choice)
        };
        let (oracle, selector) = (union_model("oracle"), union_model("selector"));
        let estimator =
            self.figment.find_value("estimator").ok().and_then(|value| {
                self.component(registry, ComponentKind::Estimator, "estimator", &value, &mut problems)
            });
        let strategy = match self.figment.find_value("strategy") {
            Ok(value) => self.component(registry, ComponentKind::Strategy, "strategy", &value, &mut problems),
            Err(_) => {
                problems.push("no strategy: add a [strategy] table with a `plugin` key".into());
                None
            }
        };
        let tables = ScoreTables {
            estimator: self.figment.find_value("estimator").is_ok(),
            selector: self.figment.find_value("selector").is_ok(),
        };
        check_signals(
            &teacher_specs,
            estimator.as_ref().map(|(c, s)| (c, s)),
            tables,
            strategy.as_ref().map(|(c, s)| (c, s)),
            &mut problems,
        );
        let name = self.settings.name.clone().unwrap_or_else(|| self.default_name.clone());
        problems.extend(self.settings_problems(&name));
        problems.extend(self.pin_problems(registry));
        match (problems.is_empty(), strategy) {
            (true, Some((strategy, _))) => Ok(ResolvedConfig {
                name,
                seed: self.settings.seed,
                threads: self.threads(),
                plugin_dirs: self.plugin_dirs(),
                output: self.settings.output.clone().unwrap_or_else(|| PathBuf::from("runs")),
                cache: self.cache_dir(),
                mc_seed: self.settings.mc_seed,
                data_seed: self.settings.data_seed,
                data: self.settings.data.clone(),
                // The student is seeded by the run's seed.
                student: TrainingSettings {
                    seed: self.settings.seed,
                    ..self.settings.student.clone().unwrap_or_else(TrainingSettings::student_defaults)
                },
                teachers,
                estimator: estimator.map(|(choice, _)| choice),
                strategy,
                oracle,
                selector,
                plugin_sha256: self.settings.plugin_sha256.clone(),
            }),
            _ => Err(Error::InvalidConfig { problems }),
        }
    }

    /// `key` and where its value was set: a file, an environment variable or `--set`.
    fn origin(&self, key: &str, value: &Value) -> String {
        origin(&self.figment, key, value)
    }

    /// Plugins whose library is not the binary `plugin_sha256` pins.
    fn pin_problems(&self, registry: &Registry) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, pinned) in &self.settings.plugin_sha256 {
            let key = format!("plugin_sha256.{name}");
            let libraries: Vec<_> = registry.libraries().iter().filter(|l| l.name() == name).collect();
            if libraries.is_empty() {
                problems.push(format!("{}: no plugin named `{name}` is loaded", key_origin(&self.figment, &key)));
            }
            for library in libraries {
                match library.sha256() {
                    Ok(actual) if actual == pinned.to_ascii_lowercase() => {}
                    Ok(actual) => problems.push(format!(
                        "{}: plugin `{name}` ({}) has sha256 {actual}, not the pinned {pinned}: the library changed since it was pinned",
                        key_origin(&self.figment, &key),
                        library.path.display()
                    )),
                    Err(e) => problems.push(format!("{}: {e}", key_origin(&self.figment, &key))),
                }
            }
        }
        problems
    }

    /// Settings out of range and run names that are not one directory name.
    fn settings_problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(reason) = run_name_problem(name) {
            problems.push(format!("{} = {reason}", key_origin(&self.figment, "name")));
        }
        let paths = [("output", &self.settings.output), ("cache", &self.settings.cache)];
        for (key, path) in paths {
            if let Some(reason) = path.as_ref().and_then(|p| control_character_problem(&p.display().to_string())) {
                problems.push(format!("{} = {reason}", key_origin(&self.figment, key)));
            }
        }
        let mut add =
            |table: &str, found: Vec<crate::training::teach::Problem>| {
                problems.extend(found.into_iter().map(|(key, reason)| {
                    format!("{} = {reason}", key_origin(&self.figment, &format!("{table}.{key}")))
                }));
            };
        if let Some(student) = &self.settings.student {
            add("student", student.problems());
        }
        if let Some(data) = &self.settings.data {
            add("data", data.problems());
        }
        problems
    }
}

/// The keys whose values differ between two settings, each as "`key` (old then, new now)";
/// a key on one side only shows `absent` on the other.
pub fn changed_entries<V: PartialEq + std::fmt::Display>(
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let shown = |v: Option<&V>| v.map_or_else(|| "absent".to_string(), ToString::to_string);
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("`{k}` ({} then, {} now)", shown(before.get(k)), shown(after.get(k))))
        .collect()
}

/// Why `value`, which reaches files other programs read (a directory name, a line of a job
/// script), is refused: a control character. A newline would end the line it is written on, and
/// the rest would be read as the next line (a shell command, in a job script).
pub fn control_character_problem(value: &str) -> Option<String> {
    value.chars().find(|c| c.is_control()).map(|c| {
        let shown: String = value.chars().take(60).collect();
        format!("{shown:?} holds the control character {c:?}: it must be one line of printable characters")
    })
}

/// The longest run name: a directory name.
const MAX_NAME_BYTES: usize = 255;

/// Why `name` cannot name a run directory under `output`, if it cannot.
pub fn run_name_problem(name: &str) -> Option<String> {
    let shown = format!("{name:?}");
    if let Some(problem) = control_character_problem(name) {
        return Some(problem);
    }
    if name.len() > MAX_NAME_BYTES {
        let start: String = name.chars().take(40).collect();
        Some(format!(
            "{start:?}... has {} bytes: a run name is one directory name, at most {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name.trim().is_empty() {
        Some(format!("{shown}: a run needs a name"))
    } else if name.contains(['/', '\\', '\0']) || name == ".." || name == "." {
        Some(format!("{shown}: a run name is one directory name under `output` (no `/`, `\\` or `..`)"))
    } else {
        None
    }
}
