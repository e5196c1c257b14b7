//! A component table checked against its plugin's schema: the plugin, its parameters converted
//! to their declared kinds and ranges, and the signals the chosen components need.

use figment::value::Value;
use workbench_plugin_api::{ComponentKind, ComponentSpec, ParamKind, ParamSpec, ParamTable, ParamValue, Signals};

use super::{key_origin, ComponentChoice, LoadedConfig};
use crate::{
    host::Registry,
    suggest::closest,
    training::teach::{self, TeachSettings},
};

/// The `[selector]` key that makes it cross-fitted (`ComponentChoice::cross_fit`).
pub(super) const CROSS_FIT: &str = "cross_fit";

impl LoadedConfig {
    /// Resolves one component table: its plugin and its parameters.
    pub(super) fn component(
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
            (ComponentKind::Teacher, Some(value)) => {
                match teach::inherit_max_length(value, table).deserialize::<TeachSettings>() {
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
                }
            }
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
        if teach.is_some() && component != teach::TAUGHT_TEACHER {
            problems.push(format!(
                "{}: the workbench teaches `{}` teachers only; train a `{component}` teacher with its own tools and \
                 name what it reads in its parameters",
                self.origin(&format!("{key}.teach"), &table["teach"]),
                teach::TAUGHT_TEACHER
            ));
        }
        let library = match table.get("library") {
            Some(Value::String(_, path)) => Some(std::path::PathBuf::from(path)),
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
        let cross_fit = match table.get(CROSS_FIT) {
            None => false,
            Some(Value::Bool(_, on)) if key == "selector" => *on,
            Some(other) => {
                let reason = if key == "selector" {
                    format!("expected true or false, found {}", describe(other))
                } else {
                    "a key of [selector] only (its members score the folds they were not trained on)".into()
                };
                problems.push(format!("{}: {reason}", self.origin(&format!("{key}.{CROSS_FIT}"), other)));
                return None;
            }
        };
        let before = problems.len();
        let mut params = ParamTable::default();
        let reserved = |name: &str| {
            name == "plugin"
                || name == "library"
                || name == CROSS_FIT
                || (kind == ComponentKind::Teacher && name == "teach")
        };
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
        (problems.len() == before).then_some((ComponentChoice { component, library, params, teach, cross_fit }, spec))
    }
}

/// Which tables of the config give certainty scores, valid or not: a strategy that needs scores
/// is not told to add a table that is there with a problem of its own.
pub(super) struct ScoreTables {
    pub estimator: bool,
    pub selector: bool,
}

/// Checks that teachers can produce what the estimator and strategy need, and that certainty
/// scores come from one place (an estimator or a selector) where the strategy needs them.
pub(super) fn check_signals(
    teachers: &[(String, ComponentSpec)],
    estimator: Option<(&ComponentChoice, &ComponentSpec)>,
    tables: ScoreTables,
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
    if tables.estimator && tables.selector {
        problems.push("[estimator] and [selector] both give certainty scores: keep one".into());
    }
    if let (Some((_, spec)), false, false) = (strategy, tables.estimator, tables.selector) {
        if spec.signals.scores {
            problems.push(format!(
                "strategy `{}` needs certainty scores: add an [estimator] table (e.g. plugin = \"entropy\") \
                 or a [selector]",
                spec.name
            ));
        }
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
