//! Where values come from: TOML files, then `WORKBENCH_*` environment variables, then
//! `--set key=value`, later sources winning; and how a problem names the key and its source.

use std::path::PathBuf;

use figment::{
    providers::{Env, Format, Toml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};

use crate::{suggest::closest, Error, Result};

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

/// A source with the keys taken out that a later `--set key={ ... }` replaces whole: a table
/// given on the command line replaces the table, so that switching a component
/// (`--set estimator='{ plugin = "entropy" }'`) drops the old component's parameters.
struct Without<P> {
    source: P,
    /// Dotted keys.
    replaced: Vec<String>,
}

impl<P: Provider> Provider for Without<P> {
    fn metadata(&self) -> Metadata {
        self.source.metadata()
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.source.data()?;
        for dict in data.values_mut() {
            for key in &self.replaced {
                remove_key(dict, key);
            }
        }
        Ok(data)
    }
}

fn remove_key(dict: &mut Dict, key: &str) {
    match key.split_once('.') {
        None => {
            dict.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Dict(_, inner)) = dict.get_mut(head) {
                remove_key(inner, rest);
            }
        }
    }
}

/// Merges the files (in order), the environment and the `--set` assignments; a table-valued
/// `--set` replaces what the sources before it say under its key.
pub fn sources(files: &[PathBuf], sets: &[String]) -> Result<Figment> {
    let sets = sets.iter().map(|assignment| parse_set(assignment)).collect::<Result<Vec<_>>>()?;
    // The keys that the sets from index i on replace whole, for i from 0 to the number of sets.
    let replaced: Vec<Vec<String>> = (0..=sets.len())
        .map(|i| {
            sets[i..].iter().filter(|set| matches!(set.value, Value::Dict(..))).map(|set| set.key.clone()).collect()
        })
        .collect();
    let mut figment = Figment::new();
    for file in files {
        if file.is_dir() {
            return Err(Error::InvalidConfig {
                problems: vec![format!("config file {} is a directory: name a TOML file", file.display())],
            });
        }
        if !file.is_file() {
            let problem = if file.exists() { "is not a regular file: name a TOML file" } else { "does not exist" };
            return Err(Error::InvalidConfig { problems: vec![format!("config file {} {problem}", file.display())] });
        }
        figment = figment.merge(Without { source: Toml::file_exact(file), replaced: replaced[0].clone() });
    }
    figment = figment.merge(Without { source: Env::prefixed(ENV_PREFIX).split("__"), replaced: replaced[0].clone() });
    for (set, replaced) in sets.into_iter().zip(&replaced[1..]) {
        figment = figment.merge(Without { source: set, replaced: replaced.clone() });
    }
    Ok(figment)
}

/// Extracts typed settings, every problem naming its key and source.
pub fn extract<T: serde::de::DeserializeOwned>(figment: &Figment) -> Result<T> {
    figment.extract().map_err(|e| Error::InvalidConfig { problems: e.into_iter().map(settings_problem).collect() })
}

/// `key` and where its value was set: a file, an environment variable or `--set`.
pub(super) fn origin(figment: &Figment, key: &str, value: &Value) -> String {
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
