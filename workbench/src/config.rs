//! Configuration: TOML files, then `WORKBENCH_*` environment variables, then `--set key=value`,
//! later sources winning. Every component's parameters are checked against its plugin's schema
//! before any model or data loads, and every problem names the key and where it was set.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use figment::{
    providers::{Env, Format, Toml},
    value::{magic::RelativePathBuf, Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use serde::Deserialize;
use workbench_plugin_api::{ComponentKind, ComponentSpec, ParamKind, ParamSpec, ParamTable, ParamValue, Signals};

use crate::{
    data::DataConfig,
    host::Registry,
    suggest::closest,
    training::teach::{TeachSettings, TrainingSettings},
    Error, Result,
};

/// Prefix of the environment variables that override config keys; `__` separates key parts
/// (`WORKBENCH_STRATEGY__TEMPERATURE=2` sets `strategy.temperature`).
pub const ENV_PREFIX: &str = "WORKBENCH_";

/// One `--set key=value` from the command line, as a figment provider so that errors can say
/// where a value came from.
struct CommandLineSet {
    key: String,
    value: Value,
}

impl Provider for CommandLineSet {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("--set {}", self.key))
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        match figment::util::nest(&self.key, self.value.clone()) {
            Value::Dict(_, dict) => Ok(Profile::Default.collect(dict)),
            _ => Err(figment::Error::from(format!("--set needs a key before `=`, got `{}`", self.key))),
        }
    }
}

/// Parses `key=value`; the value is read like a TOML value (number, bool, array), else a string.
fn parse_set(assignment: &str) -> Result<CommandLineSet> {
    let (key, value) =
        assignment.split_once('=').filter(|(k, _)| !k.trim().is_empty()).ok_or_else(|| Error::InvalidConfig {
            problems: vec![format!("--set `{assignment}`: expected KEY=VALUE, e.g. strategy.temperature=2")],
        })?;
    let value = match value.parse::<Value>() {
        // figment's parser reads `5e-4` as text; numbers in exponent form are numbers here.
        Ok(Value::String(..)) | Err(_) => {
            value.parse::<f64>().map_or_else(|_| Value::from(value.to_string()), Value::from)
        }
        Ok(parsed) => parsed,
    };
    Ok(CommandLineSet { key: key.trim().to_string(), value })
}

/// The environment variable that sets `key`.
fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// A problem with a run-level setting, naming the key and where it was set.
fn settings_problem(error: figment::Error) -> String {
    let key = error.path.join(".");
    let origin = match error.metadata.as_ref().map(|m| (&m.source, &m.name)) {
        Some((Some(figment::Source::File(path)), _)) => format!("`{key}` in {}", path.display()),
        Some((_, name)) if name.starts_with("--set") => format!("`{key}` (from {name})"),
        Some(_) => format!("`{key}` (from environment variable {})", env_var(&key)),
        None => format!("`{key}`"),
    };
    match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            let hint =
                closest(field, expected.iter().copied()).map_or_else(String::new, |c| format!("did you mean `{c}`? "));
            format!("{origin}: unknown key; {hint}known keys: {}", expected.join(", "))
        }
        kind => format!("{origin}: {kind}"),
    }
}

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
    plugin_dirs: Vec<RelativePathBuf>,
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
}

/// A configuration resolved from all sources and validated against the loaded plugins.
#[derive(Debug, Clone, PartialEq)]
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
    pub data: Option<DataConfig>,
    pub student: TrainingSettings,
    pub teachers: BTreeMap<String, ComponentChoice>,
    pub estimator: Option<ComponentChoice>,
    pub strategy: ComponentChoice,
    /// A teacher over all labels, evaluated as a reference row.
    pub oracle: Option<ComponentChoice>,
    /// Plugin name -> the sha256 its library must have (checked at validation).
    pub plugin_sha256: BTreeMap<String, String>,
}

/// Merges the files (in order), the environment and the `--set` assignments.
pub fn sources(files: &[PathBuf], sets: &[String]) -> Result<Figment> {
    let mut figment = Figment::new();
    for file in files {
        if !file.is_file() {
            return Err(Error::InvalidConfig {
                problems: vec![format!("config file {} does not exist", file.display())],
            });
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    for assignment in sets {
        figment = figment.merge(parse_set(assignment)?);
    }
    Ok(figment)
}

/// Extracts typed settings, every problem naming its key and source.
pub fn extract<T: serde::de::DeserializeOwned>(figment: &Figment) -> Result<T> {
    figment.extract().map_err(|e| Error::InvalidConfig { problems: e.into_iter().map(settings_problem).collect() })
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

    /// Plugin directories named by the config, relative to the file that names them.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        self.settings.plugin_dirs.iter().map(RelativePathBuf::relative).collect()
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
        let oracle = self
            .figment
            .find_value("oracle")
            .ok()
            .and_then(|value| self.component(registry, ComponentKind::Teacher, "oracle", &value, &mut problems))
            .map(|(choice, _)| choice);
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
        check_signals(
            &teacher_specs,
            estimator.as_ref().map(|(c, s)| (c, s)),
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
                cache: crate::assets::cache_dir(self.settings.cache.as_deref()),
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
                plugin_sha256: self.settings.plugin_sha256.clone(),
            }),
            _ => Err(Error::InvalidConfig { problems }),
        }
    }

    /// `key` and where its value was set: a file, an environment variable or `--set`.
    fn origin(&self, key: &str, value: &Value) -> String {
        origin(&self.figment, key, value)
    }

    /// A path set in a config file, relative to that file's directory (like `plugin_dirs`);
    /// from the environment or `--set`, relative to the working directory.
    fn relative_to_source(&self, value: &Value, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        match self.figment.get_metadata(value.tag()).and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(file)) if path.is_relative() => {
                file.parent().map_or(path.clone(), |dir| dir.join(&path))
            }
            _ => path,
        }
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

    /// Resolves one component table: its plugin and its parameters.
    fn component(
        &self,
        registry: &Registry,
        kind: ComponentKind,
        key: &str,
        value: &Value,
        problems: &mut Vec<String>,
    ) -> Option<(ComponentChoice, ComponentSpec)> {
        let Value::Dict(_, table) = value else {
            problems.push(format!("{}: must be a table with a `plugin` key", self.origin(key, value)));
            return None;
        };
        let plugin_key = format!("{key}.plugin");
        let teach = match (kind, table.get("teach")) {
            (ComponentKind::Teacher, Some(value)) => match value.deserialize::<TeachSettings>() {
                Ok(settings) => {
                    problems.extend(settings.problems().into_iter().map(|(name, reason)| {
                        format!("{} = {reason}", key_origin(&self.figment, &format!("{key}.teach.{name}")))
                    }));
                    Some(settings)
                }
                Err(e) => {
                    problems.push(format!("{}: {}", self.origin(&format!("{key}.teach"), value), e.kind));
                    return None;
                }
            },
            _ => None,
        };
        let component = match table.get("plugin") {
            Some(Value::String(_, name)) => name.clone(),
            Some(other) => {
                problems.push(format!(
                    "{}: expected the name of a {kind} plugin, found {}",
                    self.origin(&plugin_key, other),
                    describe(other)
                ));
                return None;
            }
            None => {
                problems.push(format!(
                    "{}: missing; name the {kind} plugin to use (see `workbench plugins list`)",
                    self.origin(&plugin_key, value)
                ));
                return None;
            }
        };
        let library = match table.get("library") {
            Some(value @ Value::String(_, path)) => Some(self.relative_to_source(value, path)),
            Some(other) => {
                problems.push(format!(
                    "{}: expected the path of a plugin library or its directory, found {}",
                    self.origin(&format!("{key}.library"), other),
                    describe(other)
                ));
                return None;
            }
            None => None,
        };
        let spec = match registry.find(kind, &component, library.as_deref()) {
            Ok((_, spec)) => spec.clone(),
            Err(e) => {
                problems.push(format!("{}: {e}", self.origin(&plugin_key, &table["plugin"])));
                return None;
            }
        };
        let before = problems.len();
        let mut params = ParamTable::default();
        let reserved =
            |name: &str| name == "plugin" || name == "library" || (kind == ComponentKind::Teacher && name == "teach");
        for (name, value) in table.iter().filter(|(name, _)| !reserved(name)) {
            let param_key = format!("{key}.{name}");
            let Some(param) = spec.params.iter().find(|p| p.name == name.as_str()) else {
                let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
                let hint = match closest(name, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`? "),
                    None => String::new(),
                };
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                problems.push(format!(
                    "{}: unknown parameter of {kind} `{component}`; {hint}its parameters: {known}",
                    self.origin(&param_key, value)
                ));
                continue;
            };
            match convert(param, value).and_then(|v| param.check(&v).map(|()| v)) {
                Ok(v) => params.insert(name, v),
                Err(reason) => problems.push(format!("{}: {reason}", self.origin(&param_key, value))),
            }
        }
        for param in spec.params.iter() {
            if params.get(&param.name).is_ok() {
                continue;
            }
            match param.default.clone().into_option() {
                Some(default) => params.insert(&param.name, default),
                None => problems.push(format!(
                    "`{key}.{}` is required by {kind} `{component}` ({}): {}",
                    param.name,
                    param.kind.describe(),
                    param.doc
                )),
            }
        }
        // Written out in the order the plugin declares its parameters.
        let params = ParamTable {
            entries: spec
                .params
                .iter()
                .filter_map(|p| params.entries.iter().find(|e| e.name == p.name).cloned())
                .collect(),
        };
        (problems.len() == before).then_some((ComponentChoice { component, library, params, teach }, spec))
    }
}

/// Checks that teachers can produce what the estimator and strategy need.
fn check_signals(
    teachers: &[(String, ComponentSpec)],
    estimator: Option<(&ComponentChoice, &ComponentSpec)>,
    strategy: Option<(&ComponentChoice, &ComponentSpec)>,
    problems: &mut Vec<String>,
) {
    let needs = |spec: &ComponentSpec, what: &str, needed: fn(&Signals) -> bool| {
        teachers
            .iter()
            .filter(|(_, t)| needed(&spec.signals) && !needed(&t.signals))
            .map(|(name, t)| {
                format!(
                    "{} `{}` needs {what}, but teacher `{name}` (plugin `{}`) cannot provide them",
                    spec.kind, spec.name, t.name
                )
            })
            .collect::<Vec<_>>()
    };
    for (_, spec) in estimator.iter().chain(strategy.iter()) {
        problems.extend(needs(spec, "stochastic passes", |s| s.stochastic_passes));
        problems.extend(needs(spec, "ensemble member passes", |s| s.member_passes));
        problems.extend(needs(spec, "hidden states", |s| s.hidden_states));
    }
    if let (Some((_, spec)), None) = (strategy, estimator) {
        if spec.signals.scores {
            problems.push(format!(
                "strategy `{}` needs certainty scores: add an [estimator] table (e.g. plugin = \"entropy\")",
                spec.name
            ));
        }
    }
}

/// `key` and where its value was set: a file, an environment variable or `--set`.
fn origin(figment: &Figment, key: &str, value: &Value) -> String {
    match figment.get_metadata(value.tag()) {
        Some(metadata) => match &metadata.source {
            Some(figment::Source::File(path)) => format!("`{key}` in {}", path.display()),
            _ if metadata.name.starts_with("--set") => format!("`{key}` (from {})", metadata.name),
            _ => format!("`{key}` (from environment variable {})", env_var(key)),
        },
        None => format!("`{key}`"),
    }
}

/// `key` and where it was set, when it was set at all (a default has no origin).
pub fn key_origin(figment: &Figment, key: &str) -> String {
    match figment.find_value(key) {
        Ok(value) => origin(figment, key, &value),
        Err(_) => format!("`{key}`"),
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

/// Why `name` cannot name a run directory under `output`, if it cannot.
pub fn run_name_problem(name: &str) -> Option<String> {
    let shown = format!("{name:?}");
    if name.trim().is_empty() {
        Some(format!("{shown}: a run needs a name"))
    } else if name.contains(['/', '\\', '\0']) || name == ".." || name == "." {
        Some(format!("{shown}: a run name is one directory name under `output` (no `/`, `\\` or `..`)"))
    } else {
        None
    }
}

/// A short description of a config value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("string {s:?}"),
        Value::Char(_, c) => format!("character {c:?}"),
        Value::Bool(_, b) => format!("boolean {b}"),
        Value::Num(..) => format!("number {}", number(value).map_or_else(String::new, |n| n.to_string())),
        Value::Empty(..) => "an empty value".into(),
        Value::Dict(..) => "a table".into(),
        Value::Array(..) => "a list".into(),
    }
}

/// A number in a config value: integers stay exact so that integer parameters can refuse 2.5.
enum Number {
    Int(i128),
    Float(f64),
}

fn parse_number(value: &Value) -> Option<Number> {
    let Value::Num(_, num) = value else { return None };
    match num.to_actual() {
        figment::error::Actual::Unsigned(u) => i128::try_from(u).ok().map(Number::Int),
        figment::error::Actual::Signed(i) => Some(Number::Int(i)),
        figment::error::Actual::Float(f) => Some(Number::Float(f)),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    parse_number(value).map(|n| match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    })
}

/// Converts a config value to the kind a parameter declares.
fn convert(spec: &ParamSpec, value: &Value) -> std::result::Result<ParamValue, String> {
    let wrong = || format!("expected {}, found {}", spec.kind.describe(), describe(value));
    let numbers = |items: &[Value]| items.iter().map(number).collect::<Option<Vec<f64>>>();
    let converted = match (spec.kind, value) {
        (ParamKind::Bool, Value::Bool(_, b)) => Some(ParamValue::Bool(*b)),
        (ParamKind::Int, _) => match parse_number(value) {
            Some(Number::Int(i)) => i64::try_from(i).ok().map(ParamValue::Int),
            _ => None,
        },
        (ParamKind::Float, _) => number(value).map(ParamValue::Float),
        (ParamKind::Text, Value::String(_, s)) => Some(ParamValue::Text(s.as_str().into())),
        (ParamKind::TextList, Value::Array(_, items)) => items
            .iter()
            .map(|v| v.as_str().map(Into::into))
            .collect::<Option<Vec<_>>>()
            .map(|v| ParamValue::TextList(v.into())),
        (ParamKind::FloatList, Value::Array(_, items)) => numbers(items).map(|v| ParamValue::FloatList(v.into())),
        (ParamKind::FloatMatrix, Value::Array(_, rows)) => rows
            .iter()
            .map(|row| match row {
                Value::Array(_, items) => numbers(items).map(Into::into),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|rows| ParamValue::FloatMatrix(rows.into())),
        _ => None,
    };
    converted.ok_or_else(wrong)
}

fn toml_value(value: &ParamValue) -> toml::Value {
    match value {
        ParamValue::Bool(b) => toml::Value::Boolean(*b),
        ParamValue::Int(i) => toml::Value::Integer(*i),
        ParamValue::Float(f) => toml::Value::Float(*f),
        ParamValue::Text(s) => toml::Value::String(s.to_string()),
        ParamValue::TextList(v) => toml::Value::Array(v.iter().map(|s| toml::Value::String(s.to_string())).collect()),
        ParamValue::FloatList(v) => toml::Value::Array(v.iter().map(|&x| toml::Value::Float(x)).collect()),
        ParamValue::FloatMatrix(rows) => toml::Value::Array(
            rows.iter().map(|r| toml::Value::Array(r.iter().map(|&x| toml::Value::Float(x)).collect())).collect(),
        ),
    }
}

impl ComponentChoice {
    fn to_toml(&self) -> toml::Value {
        let mut table = toml::Table::new();
        table.insert("plugin".into(), toml::Value::String(self.component.clone()));
        if let Some(library) = &self.library {
            table.insert("library".into(), path_value(library));
        }
        for param in self.params.entries.iter() {
            table.insert(param.name.to_string(), toml_value(&param.value));
        }
        if let Some(teach) = &self.teach {
            table.insert("teach".into(), toml::Value::try_from(teach).expect("training settings serialize"));
        }
        toml::Value::Table(table)
    }
}

impl ResolvedConfig {
    /// The resolved config as TOML: every default written out, so that the file alone
    /// reproduces the run.
    pub fn to_toml(&self) -> String {
        let mut root = toml::Table::new();
        root.insert("name".into(), self.name.clone().into());
        root.insert("seed".into(), toml::Value::Integer(self.seed as i64));
        root.insert("threads".into(), toml::Value::Integer(self.threads as i64));
        root.insert("output".into(), path_value(&self.output));
        root.insert("plugin_dirs".into(), toml::Value::Array(self.plugin_dirs.iter().map(|p| path_value(p)).collect()));
        root.insert("cache".into(), path_value(&self.cache));
        root.insert("mc_seed".into(), toml::Value::Integer(self.mc_seed as i64));
        root.insert("data_seed".into(), toml::Value::Integer(self.data_seed as i64));
        if let Some(data) = &self.data {
            root.insert("data".into(), toml::Value::try_from(data).expect("data settings serialize"));
        }
        root.insert("student".into(), toml::Value::try_from(&self.student).expect("training settings serialize"));
        let teachers = self.teachers.iter().map(|(name, choice)| (name.clone(), choice.to_toml())).collect();
        root.insert("teachers".into(), toml::Value::Table(teachers));
        if let Some(estimator) = &self.estimator {
            root.insert("estimator".into(), estimator.to_toml());
        }
        root.insert("strategy".into(), self.strategy.to_toml());
        if let Some(oracle) = &self.oracle {
            root.insert("oracle".into(), oracle.to_toml());
        }
        if !self.plugin_sha256.is_empty() {
            let pins = self.plugin_sha256.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
            root.insert("plugin_sha256".into(), toml::Value::Table(pins));
        }
        toml::to_string(&root).expect("a TOML table always serializes")
    }
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}
