//! `workbench plugin new`: a plugin crate of one kind that builds where it is created, with a
//! unit test, depending on this workbench's plugin API (its source tree, or a git URL).

use std::path::{Path, PathBuf};

use workbench_plugin_api::ComponentKind;

use crate::{files::write_atomically, Error, Result};

const MANIFEST: &str = include_str!("../templates/plugin/Cargo.toml.in");
const STRATEGY: &str = include_str!("../templates/plugin/strategy.rs");
const ESTIMATOR: &str = include_str!("../templates/plugin/estimator.rs");
const TEACHER: &str = include_str!("../templates/plugin/teacher.rs");

/// Where the new crate takes the plugin API (and its test kit) from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// This workbench's source tree (its `core` directory).
    Path(PathBuf),
    /// A git repository holding the workbench's workspace.
    Git(String),
}

impl ApiSource {
    /// The source tree this binary was built from, when it is still there.
    pub fn this_workbench() -> Option<Self> {
        let core = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("core");
        core.join("plugin-api/Cargo.toml").is_file().then_some(ApiSource::Path(core))
    }

    fn dependency(&self, crate_dir: &str) -> String {
        match self {
            ApiSource::Path(core) => format!("{{ path = {:?} }}", core.join(crate_dir).display().to_string()),
            ApiSource::Git(url) => format!("{{ git = {url:?} }}"),
        }
    }
}

/// A plugin name is a crate and component name: lowercase ASCII letters, digits and `-`,
/// starting with a letter.
fn check_name(name: &str) -> Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            problems: vec![format!(
                "plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter (e.g. `my-strategy`)"
            )],
        })
    }
}

/// `my-strategy` -> `MyStrategy`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Writes the crate `dir/name` and returns its directory; refuses a directory that exists.
pub fn new_plugin(name: &str, kind: ComponentKind, dir: &Path, api: &ApiSource) -> Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(Error::InvalidConfig {
            problems: vec![format!("{} exists already; choose another name or --path", root.display())],
        });
    }
    let source = match kind {
        ComponentKind::Strategy => STRATEGY,
        ComponentKind::Estimator => ESTIMATOR,
        ComponentKind::Teacher => TEACHER,
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{Type}}", &type_name(name))
            .replace("{{kind}}", &kind.to_string())
            .replace("{{api}}", &api.dependency("plugin-api"))
            .replace("{{testkit}}", &api.dependency("plugin-testkit"))
    };
    let src = root.join("src");
    std::fs::create_dir_all(&src).map_err(Error::io(format!("creating {}", src.display())))?;
    write_atomically(&root.join("Cargo.toml"), fill(MANIFEST))?;
    write_atomically(&src.join("lib.rs"), fill(source))?;
    write_atomically(&root.join(".gitignore"), "/target\n")?;
    // The versions this workbench is tested with, so that the first build resolves the same.
    if let ApiSource::Path(core) = api {
        let lock = core.with_file_name("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, root.join("Cargo.lock")).map_err(Error::io(format!("copying {}", lock.display())))?;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_become_type_names() {
        assert_eq!(type_name("my-strategy-2"), "MyStrategy2");
        assert!(check_name("my-strategy").is_ok());
        for bad in ["My", "1st", "a_b", "", "trailing-"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_git_source_is_written_into_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiSource::Git("https://example.org/workbench.git".into());
        let root = new_plugin("keyword-teacher", ComponentKind::Teacher, dir.path(), &api).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("workbench-plugin-api = { git = \"https://example.org/workbench.git\" }"));
        let source = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(source.contains("pub struct KeywordTeacher {") && !source.contains("{{"), "{source}");
        assert!(new_plugin("keyword-teacher", ComponentKind::Teacher, dir.path(), &api).is_err(), "exists already");
    }
}
