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
