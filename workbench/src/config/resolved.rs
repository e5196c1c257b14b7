//! The resolved config written out as TOML, every default included: `ResolvedConfig` derives
//! its serialization; a component table is its plugin, library, parameters and `teach` table
//! side by side, as the config file has them.

use serde::{ser::SerializeMap, Serialize, Serializer};
use workbench_plugin_api::ParamValue;

use super::{ComponentChoice, ResolvedConfig};

/// A parameter value as the TOML value a config file would hold.
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

impl Serialize for ComponentChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = serializer.serialize_map(None)?;
        table.serialize_entry("plugin", &self.component)?;
        if let Some(library) = &self.library {
            table.serialize_entry("library", library)?;
        }
        for param in self.params.entries.iter() {
            table.serialize_entry(param.name.as_str(), &toml_value(&param.value))?;
        }
        if let Some(teach) = &self.teach {
            table.serialize_entry("teach", teach)?;
        }
        if self.cross_fit {
            table.serialize_entry(super::components::CROSS_FIT, &true)?;
        }
        table.end()
    }
}

impl ResolvedConfig {
    /// The resolved config as TOML: every default written out, so that the file alone
    /// reproduces the run.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a resolved config serializes to TOML")
    }
}
