//! Parameter schemas declared by plugins and the validated tables the host hands back.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

use crate::{PluginError, PluginResult};

#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Bool,
    Int,
    Float,
    Text,
    TextList,
    FloatList,
    /// A list of rows of numbers.
    FloatMatrix,
}

impl ParamKind {
    pub fn describe(self) -> &'static str {
        match self {
            ParamKind::Bool => "a boolean",
            ParamKind::Int => "an integer",
            ParamKind::Float => "a number",
            ParamKind::Text => "a string",
            ParamKind::TextList => "a list of strings",
            ParamKind::FloatList => "a list of numbers",
            ParamKind::FloatMatrix => "a list of lists of numbers",
        }
    }
}

#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(RString),
    TextList(RVec<RString>),
    FloatList(RVec<f64>),
    FloatMatrix(RVec<RVec<f64>>),
}

impl ParamValue {
    pub fn kind(&self) -> ParamKind {
        match self {
            ParamValue::Bool(_) => ParamKind::Bool,
            ParamValue::Int(_) => ParamKind::Int,
            ParamValue::Float(_) => ParamKind::Float,
            ParamValue::Text(_) => ParamKind::Text,
            ParamValue::TextList(_) => ParamKind::TextList,
            ParamValue::FloatList(_) => ParamKind::FloatList,
            ParamValue::FloatMatrix(_) => ParamKind::FloatMatrix,
        }
    }

    /// The number in an `Int` or `Float` value.
    pub fn as_number(&self) -> Option<f64> {
        match *self {
            ParamValue::Int(i) => Some(i as f64),
            ParamValue::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Text(s) => write!(f, "{:?}", s.as_str()),
            ParamValue::TextList(v) => write!(f, "{:?}", v.iter().map(RString::as_str).collect::<Vec<_>>()),
            ParamValue::FloatList(v) => write!(f, "{:?}", v.as_slice()),
            ParamValue::FloatMatrix(rows) => {
                write!(f, "{:?}", rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>())
            }
        }
    }
}

/// One declared parameter: name, type, default (none = required), range or choices, one-line doc.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: RString,
    pub kind: ParamKind,
    pub default: ROption<ParamValue>,
    /// Inclusive bounds for numbers (and for every element of number lists).
    pub min: ROption<f64>,
    pub max: ROption<f64>,
    /// Allowed values for `Text` parameters; empty means any.
    pub choices: RVec<RString>,
    pub doc: RString,
}

impl ParamSpec {
    fn new(name: &str, kind: ParamKind, default: Option<ParamValue>, doc: &str) -> Self {
        Self {
            name: name.into(),
            kind,
            default: default.into(),
            min: ROption::RNone,
            max: ROption::RNone,
            choices: RVec::new(),
            doc: doc.into(),
        }
    }

    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::new(name, ParamKind::Bool, Some(ParamValue::Bool(default)), doc)
    }

    pub fn int(name: &str, default: i64, doc: &str) -> Self {
        Self::new(name, ParamKind::Int, Some(ParamValue::Int(default)), doc)
    }

    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::new(name, ParamKind::Float, Some(ParamValue::Float(default)), doc)
    }

    /// A text parameter restricted to `choices`, defaulting to the first of them.
    pub fn choice(name: &str, choices: &[&str], doc: &str) -> Self {
        let mut spec = Self::new(name, ParamKind::Text, Some(ParamValue::Text(choices[0].into())), doc);
        spec.choices = choices.iter().map(|&c| RString::from(c)).collect();
        spec
    }

    /// A parameter without default: configs must set it.
    pub fn required(name: &str, kind: ParamKind, doc: &str) -> Self {
        Self::new(name, kind, None, doc)
    }

    pub fn with_default(mut self, default: ParamValue) -> Self {
        self.default = ROption::RSome(default);
        self
    }

    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = ROption::RSome(min);
        self.max = ROption::RSome(max);
        self
    }

    pub fn at_least(mut self, min: f64) -> Self {
        self.min = ROption::RSome(min);
        self
    }

    /// Checks a value of the right kind against range and choices; the message names no key,
    /// the caller adds where the value came from.
    pub fn check(&self, value: &ParamValue) -> Result<(), String> {
        if value.kind() != self.kind {
            return Err(format!("expected {}, found {value}", self.kind.describe()));
        }
        let numbers: Vec<f64> = match value {
            ParamValue::Int(_) | ParamValue::Float(_) => value.as_number().into_iter().collect(),
            ParamValue::FloatList(v) => v.to_vec(),
            ParamValue::FloatMatrix(rows) => rows.iter().flatten().copied().collect(),
            _ => Vec::new(),
        };
        for x in numbers {
            if !x.is_finite() {
                return Err(format!("{x} is not a finite number"));
            }
            if let ROption::RSome(min) = self.min {
                if x < min {
                    return Err(format!("{x} is below the minimum {min}"));
                }
            }
            if let ROption::RSome(max) = self.max {
                if x > max {
                    return Err(format!("{x} is above the maximum {max}"));
                }
            }
        }
        if let ParamValue::Text(text) = value {
            if !self.choices.is_empty() && !self.choices.contains(text) {
                let choices: Vec<&str> = self.choices.iter().map(RString::as_str).collect();
                return Err(format!("{value} is not one of {}", choices.join(", ")));
            }
        }
        Ok(())
    }

    /// The accepted values in words, for help output.
    pub fn constraint(&self) -> String {
        if !self.choices.is_empty() {
            let choices: Vec<&str> = self.choices.iter().map(RString::as_str).collect();
            return format!("one of {}", choices.join("|"));
        }
        match (self.min.into_option(), self.max.into_option()) {
            (Some(min), Some(max)) => format!("{min} ..= {max}"),
            (Some(min), None) => format!(">= {min}"),
            (None, Some(max)) => format!("<= {max}"),
            (None, None) => String::new(),
        }
    }
}

#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Param {
    pub name: RString,
    pub value: ParamValue,
}

/// Validated parameters with defaults filled in, handed to a plugin's constructor.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ParamTable {
    pub entries: RVec<Param>,
}

macro_rules! typed_getter {
    ($fn_name:ident, $variant:ident, $ty:ty, $convert:expr) => {
        pub fn $fn_name(&self, name: &str) -> PluginResult<$ty> {
            match self.get(name)? {
                ParamValue::$variant(v) => Ok($convert(v)),
                other => Err(wrong_kind(name, ParamKind::$variant, other)),
            }
        }
    };
}

fn wrong_kind(name: &str, expected: ParamKind, found: &ParamValue) -> PluginError {
    PluginError::invalid_input(format!("parameter `{name}`: expected {}, found {found}", expected.describe()))
}

impl ParamTable {
    pub fn insert(&mut self, name: &str, value: ParamValue) {
        match self.entries.iter_mut().find(|p| p.name == name) {
            Some(existing) => existing.value = value,
            None => self.entries.push(Param { name: name.into(), value }),
        }
    }

    pub fn with(mut self, name: &str, value: ParamValue) -> Self {
        self.insert(name, value);
        self
    }

    pub fn get(&self, name: &str) -> PluginResult<&ParamValue> {
        self.entries
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
            .ok_or_else(|| PluginError::invalid_input(format!("parameter `{name}` is missing")))
    }

    typed_getter!(bool, Bool, bool, |v: &bool| *v);
    typed_getter!(int, Int, i64, |v: &i64| *v);
    typed_getter!(text, Text, String, |v: &RString| v.to_string());
    typed_getter!(text_list, TextList, Vec<String>, |v: &RVec<RString>| v.iter().map(|s| s.to_string()).collect());
    typed_getter!(float_list, FloatList, Vec<f64>, |v: &RVec<f64>| v.to_vec());
    typed_getter!(float_matrix, FloatMatrix, Vec<Vec<f64>>, |v: &RVec<RVec<f64>>| v
        .iter()
        .map(|r| r.to_vec())
        .collect());

    /// A number; integers are accepted where a float is declared.
    pub fn float(&self, name: &str) -> PluginResult<f64> {
        let value = self.get(name)?;
        value.as_number().ok_or_else(|| wrong_kind(name, ParamKind::Float, value))
    }
}

// ----- typed parameters -----

/// A component's parameters as one struct, declared with [`crate::params!`]: each parameter's
/// name, Rust type, default, range and doc are written once, and both the schema the host
/// validates configs against and the parsing of the validated table come from that.
pub trait Params: Sized {
    /// The schema, in declaration order.
    fn specs() -> Vec<ParamSpec>;
    /// The values of a table the host validated against [`Params::specs`].
    fn parse(table: &ParamTable) -> PluginResult<Self>;
}

/// A Rust type a parameter is read as.
pub trait FromParam: Sized {
    fn from_param(table: &ParamTable, name: &str) -> PluginResult<Self>;
}

macro_rules! from_param {
    ($ty:ty, |$table:ident, $name:ident| $read:expr) => {
        impl FromParam for $ty {
            fn from_param($table: &ParamTable, $name: &str) -> PluginResult<Self> {
                $read
            }
        }
    };
}

from_param!(bool, |table, name| table.bool(name));
from_param!(i64, |table, name| table.int(name));
from_param!(f64, |table, name| table.float(name));
from_param!(f32, |table, name| Ok(table.float(name)? as f32));
from_param!(usize, |table, name| usize::try_from(table.int(name)?)
    .map_err(|_| PluginError::invalid_input(format!("parameter `{name}`: expected a count, found a negative number"))));
from_param!(u32, |table, name| u32::try_from(table.int(name)?)
    .map_err(|_| PluginError::invalid_input(format!("parameter `{name}`: expected a count below 2^32"))));
from_param!(String, |table, name| table.text(name));
from_param!(Vec<String>, |table, name| table.text_list(name));
from_param!(Vec<f64>, |table, name| table.float_list(name));
from_param!(Vec<Vec<f64>>, |table, name| table.float_matrix(name));

/// The kinds of parameter [`crate::params!`] declares, without name or doc (the field gives
/// both).
pub mod param {
    use super::{ParamKind, ParamSpec};

    pub fn bool(default: bool) -> ParamSpec {
        ParamSpec::bool("", default, "")
    }

    pub fn int(default: i64) -> ParamSpec {
        ParamSpec::int("", default, "")
    }

    pub fn float(default: f64) -> ParamSpec {
        ParamSpec::float("", default, "")
    }

    /// Any text, `default` unless a config says otherwise.
    pub fn text(default: &str) -> ParamSpec {
        ParamSpec::required("", ParamKind::Text, "").with_default(super::ParamValue::Text(default.into()))
    }

    /// A text restricted to `choices`, defaulting to the first.
    pub fn choice(choices: &[&str]) -> ParamSpec {
        ParamSpec::choice("", choices, "")
    }

    /// A parameter configs must set.
    pub fn required(kind: ParamKind) -> ParamSpec {
        ParamSpec::required("", kind, "")
    }
}

impl ParamSpec {
    /// `self` under `name`, documented by `doc` (kept as it is when `doc` is empty).
    pub fn named(mut self, name: &str, doc: &str) -> Self {
        self.name = name.into();
        if !doc.is_empty() {
            self.doc = doc.into();
        }
        self
    }
}

/// Declares a component's parameters as a struct implementing [`Params`]. Each field is
/// `/// doc` lines, `name: Type = kind`, where kind is one of [`param`]'s functions with its
/// range (`float(0.2).range(1e-4, 100.0)`) or any expression giving a [`ParamSpec`] (a shared
/// helper; its doc is used when the field has none).
///
/// ```
/// workbench_plugin_api::params! {
///     pub struct Example {
///         /// Softmax temperature.
///         tau: f32 = float(0.2).range(1e-4, 100.0),
///         /// hard or soft.
///         integration: String = choice(&["soft", "hard"]),
///     }
/// }
/// ```
#[macro_export]
macro_rules! params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $spec:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $crate::Params for $name {
            fn specs() -> ::std::vec::Vec<$crate::ParamSpec> {
                #[allow(unused_imports)]
                use $crate::param::*;
                ::std::vec![$({
                    let docs: &[&str] = &[$($doc),*];
                    let doc = docs.iter().map(|line| line.trim()).collect::<::std::vec::Vec<_>>().join(" ");
                    ($spec).named(stringify!($field), &doc)
                }),*]
            }

            fn parse(table: &$crate::ParamTable) -> $crate::PluginResult<Self> {
                Ok(Self { $( $field: <$ty as $crate::FromParam>::from_param(table, stringify!($field))?, )* })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temperature() -> ParamSpec {
        ParamSpec::float("", 1.0, "Temperature T.").range(0.05, 100.0)
    }

    crate::params! {
        struct Example {
            /// Softmax temperature
            /// over scores.
            tau: f32 = float(0.2).range(1e-4, 100.0),
            /// hard or soft.
            integration: String = choice(&["soft", "hard"]),
            /// Passes.
            passes: usize = int(16).range(2.0, 1024.0),
            /// Files.
            files: Vec<String> = required(ParamKind::TextList),
            temperature: f32 = temperature(),
        }
    }

    #[test]
    fn one_declaration_gives_the_schema_and_the_parsing() {
        let specs = Example::specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tau", "integration", "passes", "files", "temperature"]);
        assert_eq!(specs[0].doc.as_str(), "Softmax temperature over scores.");
        assert_eq!((specs[0].min, specs[0].max), (ROption::RSome(1e-4), ROption::RSome(100.0)));
        assert_eq!(specs[1].choices.len(), 2);
        assert_eq!(specs[3].default, ROption::RNone, "required");
        assert_eq!(specs[4].doc.as_str(), "Temperature T.", "a shared helper's doc");

        // The host fills defaults in and adds what configs set; parsing reads them typed.
        let mut table = ParamTable::default();
        for spec in specs.iter() {
            if let ROption::RSome(default) = &spec.default {
                table.insert(&spec.name, default.clone());
            }
        }
        table.insert("files", ParamValue::TextList(vec![RString::from("a.txt")].into()));
        table.insert("passes", ParamValue::Int(8));
        let parsed = Example::parse(&table).unwrap();
        assert_eq!(
            parsed,
            Example { tau: 0.2, integration: "soft".into(), passes: 8, files: vec!["a.txt".into()], temperature: 1.0 }
        );
        table.insert("passes", ParamValue::Text("many".into()));
        assert_eq!(
            Example::parse(&table).unwrap_err().message.as_str(),
            "parameter `passes`: expected an integer, found \"many\""
        );
    }
}
