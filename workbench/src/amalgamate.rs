//! `workbench amalgamate`: teachers and a file of texts in, a student out, with no config to
//! write: the command writes the config of the measured-best recipe (README, "Five minutes") and
//! runs it like `workbench run`, which reproduces it from the written file.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What `workbench amalgamate` was given.
#[derive(Debug, Clone)]
pub struct Request {
    /// `[NAME=]SPEC` each: a checkpoint directory (our encoder) or a `.safetensors` signals file.
    pub teachers: Vec<String>,
    /// The student's unlabelled texts.
    pub texts: PathBuf,
    /// Labelled texts to measure the student on; without them it is not measured.
    pub eval: Option<PathBuf>,
    /// Labelled texts that choose the best epoch; without them the last epoch is kept.
    pub validation: Option<PathBuf>,
    pub name: String,
    /// Where the config and the run directory go.
    pub output: PathBuf,
}

/// A teacher of the request: its config name and table.
fn teacher(spec: &str, index: usize) -> Result<(String, toml::Table)> {
    let (name, path) = match spec.split_once('=') {
        Some((name, path)) if !name.is_empty() => (name.to_string(), path),
        _ => (format!("t{index}"), spec),
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::InvalidConfig {
            problems: vec![format!("teacher name `{name}`: use letters, digits, `-` and `_` (NAME=PATH)")],
        });
    }
    let path_text = path.to_string();
    let mut table = toml::Table::new();
    if Path::new(path).is_dir() {
        table.insert("plugin".into(), "bert".into());
        table.insert("checkpoints".into(), toml::Value::Array(vec![path_text.into()]));
        table.insert("max_length".into(), RECIPE_MAX_LENGTH.into());
    } else if path.ends_with(".safetensors") {
        table.insert("plugin".into(), "signals-file".into());
        table.insert("file".into(), path_text.into());
    } else {
        return Err(Error::InvalidConfig {
            problems: vec![format!(
                "teacher `{path}`: neither a checkpoint directory nor a signals file (`.safetensors`, written by \
                 scripts/write_signals.py)"
            )],
        });
    }
    Ok((name, table))
}

/// Tokens per text of the recipe's teachers and student.
const RECIPE_MAX_LENGTH: i64 = 64;

/// The config the request runs: the teachers, the texts, and the recipe the tutorial measured
/// (entropy ranked per teacher, MUKA hard, a 2-layer MiniLM student, 8 epochs at 1e-3).
pub fn config(request: &Request) -> Result<String> {
    if request.teachers.len() < 2 {
        return Err(Error::InvalidConfig {
            problems: vec!["name at least two teachers: amalgamation merges several into one student".into()],
        });
    }
    let mut teachers = toml::Table::new();
    for (i, spec) in request.teachers.iter().enumerate() {
        let (name, table) = teacher(spec, i + 1)?;
        if teachers.insert(name.clone(), table.into()).is_some() {
            return Err(Error::InvalidConfig { problems: vec![format!("two teachers are named `{name}`")] });
        }
    }
    let path = |p: &Path| toml::Value::from(p.display().to_string());
    let mut data = toml::Table::new();
    data.insert("dataset".into(), "files".into());
    data.insert("transfer".into(), path(&request.texts));
    if let Some(eval) = &request.eval {
        data.insert("test".into(), path(eval));
    }
    if let Some(validation) = &request.validation {
        data.insert("validation".into(), path(validation));
    }
    let table = |entries: &[(&str, toml::Value)]| -> toml::Value {
        toml::Value::Table(entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    };
    let mut config = toml::Table::new();
    config.insert("name".into(), request.name.clone().into());
    config.insert("output".into(), path(&request.output));
    config.insert("data".into(), data.into());
    config.insert("teachers".into(), teachers.into());
    config.insert("estimator".into(), table(&[("plugin", "entropy".into()), ("scale", "teacher-rank".into())]));
    config.insert("strategy".into(), table(&[("plugin", "muka".into()), ("integration", "hard".into())]));
    config.insert(
        "student".into(),
        table(&[
            ("layers", 2.into()),
            ("epochs", 8.into()),
            ("learning_rate", 1e-3.into()),
            ("max_length", RECIPE_MAX_LENGTH.into()),
        ]),
    );
    let header = "# Written by `workbench amalgamate`; `workbench run` on this file reproduces the run.\n";
    Ok(format!("{header}{}", toml::to_string(&config).expect("a table serializes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(teachers: &[&str]) -> Request {
        Request {
            teachers: teachers.iter().map(|t| t.to_string()).collect(),
            texts: "texts.txt".into(),
            eval: Some("eval.csv".into()),
            validation: None,
            name: "mine".into(),
            output: "runs".into(),
        }
    }

    #[test]
    fn a_directory_is_our_encoder_and_a_safetensors_file_a_signals_file() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().display().to_string();
        let text = config(&request(&[&checkpoint, "deberta=out/deberta.safetensors"])).unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["teachers"]["t1"]["plugin"].as_str(), Some("bert"));
        assert_eq!(parsed["teachers"]["t1"]["checkpoints"][0].as_str(), Some(checkpoint.as_str()));
        assert_eq!(parsed["teachers"]["deberta"]["plugin"].as_str(), Some("signals-file"));
        assert_eq!(parsed["teachers"]["deberta"]["file"].as_str(), Some("out/deberta.safetensors"));
        assert_eq!(parsed["data"]["transfer"].as_str(), Some("texts.txt"));
        assert_eq!(parsed["data"]["test"].as_str(), Some("eval.csv"));
        assert_eq!(parsed["estimator"]["scale"].as_str(), Some("teacher-rank"));
        assert_eq!(parsed["strategy"]["integration"].as_str(), Some("hard"));
        assert!(text.starts_with("# Written by `workbench amalgamate`"));
    }

    #[test]
    fn what_cannot_be_a_teacher_is_refused() {
        let message = |teachers: &[&str]| config(&request(teachers)).unwrap_err().to_string();
        assert!(message(&["only.safetensors"]).contains("name at least two teachers"));
        assert!(message(&["a.safetensors", "notes.txt"])
            .contains("teacher `notes.txt`: neither a checkpoint directory nor a signals file"));
        assert!(message(&["x=a.safetensors", "x=b.safetensors"]).contains("two teachers are named `x`"));
        assert!(message(&["a b=a.safetensors", "b.safetensors"]).contains("teacher name `a b`"));
    }
}
