//! The configuration reference of the loaded plugins, as Markdown: every component with its
//! parameters, kinds, defaults, ranges and docs, as the plugins declare them. docs/configuration.md
//! holds the built-in plugins' (a test keeps it current).

use workbench_plugin_api::{ComponentKind, ComponentSpec};

use super::Registry;

/// Every component of `registry`, teachers first, then estimators and strategies, by name.
pub fn markdown(registry: &Registry) -> String {
    let mut components: Vec<(&str, &ComponentSpec)> =
        registry.components().map(|(lib, spec)| (lib.manifest.name.as_str(), spec)).collect();
    let order = |kind: ComponentKind| {
        [ComponentKind::Teacher, ComponentKind::Estimator, ComponentKind::Strategy].iter().position(|k| *k == kind)
    };
    components.sort_by(|a, b| (order(a.1.kind), a.1.name.as_str()).cmp(&(order(b.1.kind), b.1.name.as_str())));
    let mut out = String::new();
    for (plugin, spec) in components {
        out += &format!("### `{}` ({}, plugin `{plugin}`)\n\n{}\n\n", spec.name, spec.kind, spec.doc);
        if spec.params.is_empty() {
            out += "No parameters.\n\n";
            continue;
        }
        out += "| parameter | kind | default | allowed | meaning |\n|---|---|---|---|---|\n";
        for param in spec.params.iter() {
            let default =
                param.default.as_ref().into_option().map_or_else(|| "required".to_string(), |d| format!("`{d}`"));
            out += &format!(
                "| `{}` | {} | {} | {} | {} |\n",
                param.name,
                param.kind.describe(),
                cell(&default),
                cell(&param.constraint()),
                cell(&param.doc)
            );
        }
        out += "\n";
    }
    out
}

/// Text for a Markdown table cell: `|` escaped, lines joined.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
