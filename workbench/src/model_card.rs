//! The model card (`README.md`) written into every checkpoint the workbench exports, a run's
//! student and a taught teacher: what the model is and over which labels, where it came from
//! (teachers with their hashes, method and its parameters, data), its scores, how to load it in
//! transformers and with the workbench, the command that reproduces it, and what to cite.

use std::path::Path;

use crate::{
    config::ResolvedConfig,
    run::{Manifest, RunResults},
    training::teach::{TeachOutcome, TeachSettings},
    Result,
};

/// The workbench's own citation, for every card (CITATION.cff holds the same).
const WORKBENCH_CITATION: &str = "@software{workbench,\n  title = {workbench: a plugin-based workbench for \
knowledge amalgamation of fine-tuned language models},\n  version = {VERSION},\n  license = {MIT OR Apache-2.0}\n}";

/// A component of the run with the one-line description its plugin declares (which names the
/// method's paper, for the built-in strategies).
pub struct MethodDoc {
    pub role: &'static str,
    pub component: String,
    pub doc: String,
}

/// The card of a run's student, written to `<run>/student/README.md`.
pub fn student_card(
    student: &Path,
    config: &ResolvedConfig,
    manifest: &Manifest,
    results: Option<&RunResults>,
    best_epoch: usize,
    methods: &[MethodDoc],
) -> String {
    let teachers: Vec<String> = manifest.teachers.iter().map(|t| t.name.clone()).collect();
    let mut out = front_matter(&["knowledge-amalgamation", &config.strategy.component]);
    out += &format!(
        "# Student of the workbench run `{}`\n\nA text classifier over {} labels, trained by knowledge \
         amalgamation from {} teachers (each fine-tuned on its own labels) without human labels: it learnt \
         from the teachers' outputs on {} texts, never from their labels. Made with the workbench {}.\n\n",
        config.name,
        manifest.union_labels.len(),
        teachers.len(),
        manifest.data.train,
        manifest.workbench_version,
    );
    out += "## Labels\n\n| id | label | from teacher |\n|---|---|---|\n";
    for (id, label) in manifest.union_labels.iter().enumerate() {
        let owners: Vec<String> =
            manifest.teachers.iter().filter(|t| t.labels.contains(label)).map(|t| format!("`{}`", t.name)).collect();
        out += &format!("| {id} | {label} | {} |\n", owners.join(", "));
    }
    out += "\n## Teachers\n\n| teacher | plugin | labels | identity (sha256 of plugin, parameters and files) |\n\
            |---|---|---|---|\n";
    for teacher in &manifest.teachers {
        let plugin = config.teachers.get(&teacher.name).map_or("?", |c| c.component.as_str());
        out += &format!("| `{}` | `{plugin}` | {} | `{}` |\n", teacher.name, teacher.labels.len(), teacher.sha256);
    }
    out += "\n## Method\n\n";
    for method in methods {
        out += &format!("- {}: `{}`: {}\n", method.role, method.component, method.doc);
    }
    out += &format!(
        "- student: `{}`{}, {} epochs (best: {}), texts cut to {} tokens, seed {} (data seed {}, MC seed {})\n\n\
         Every parameter is in the resolved config below.\n\n",
        config.student.model,
        config.student.layers.map_or_else(String::new, cut_to),
        config.student.epochs,
        best_epoch,
        config.student.max_length,
        config.seed,
        config.data_seed,
        config.mc_seed,
    );
    let epoch = match manifest.data.validation {
        0 => format!("no validation texts: the last of {} epochs", config.student.epochs),
        n => format!("{n} validation texts chose the epoch"),
    };
    match results {
        Some(results) => {
            out += &format!(
                "## Scores\n\nOn {} test texts ({epoch}).\n\n{}",
                manifest.data.test,
                crate::run::scores(&teachers, results)
            );
            if !results.warnings.is_empty() {
                out += "\nWarnings of the run:\n\n";
                out += &results.warnings.iter().map(|w| format!("- {w}\n")).collect::<String>();
            }
        }
        None => out += &format!("## Scores\n\n{} ({epoch})\n", crate::run::NOT_MEASURED.trim_end()),
    }
    out += &usage(student, &manifest.union_labels);
    out += &format!(
        "\n## Reproduce\n\nThe run's resolved config (also `../config.toml`; `../manifest.json` holds the hashes of \
         the plugins, teachers and data):\n\n```toml\n{}```\n\n```sh\nworkbench run config.toml\n```\n",
        config.to_toml()
    );
    out + &citations(&manifest.workbench_version)
}

/// The card of a taught teacher, written into its checkpoint.
pub fn teacher_card(dir: &Path, settings: &TeachSettings, outcome: &TeachOutcome, train_texts: usize) -> String {
    let recipe = &settings.recipe;
    let mut out = front_matter(&["fine-tuned"]);
    out += &format!(
        "# Teacher over {} labels\n\nFine-tuned by `workbench teach` (workbench {}) from `{}`{} on {} labelled texts: \
         {} epochs (best: {}), learning rate {}, batch {}, texts cut to {} tokens, seed {}.\n\n\
         Validation accuracy {:.4}; test accuracy on its labels {:.4}.\n\n## Labels\n\n| id | label |\n|---|---|\n",
        outcome.labels.len(),
        env!("CARGO_PKG_VERSION"),
        recipe.model,
        recipe.layers.map_or_else(String::new, cut_to),
        train_texts,
        recipe.epochs,
        outcome.best_epoch,
        recipe.learning_rate,
        recipe.batch_size,
        recipe.max_length,
        recipe.seed,
        outcome.validation_accuracy,
        outcome.test_accuracy,
    );
    for (id, label) in outcome.labels.iter().enumerate() {
        out += &format!("| {id} | {label} |\n");
    }
    out += &usage(dir, &outcome.labels);
    out += "\n## Reproduce\n\n`teach.json` beside this card holds the settings, the labels and the hash of the \
            training texts; a `[teach]` table with the same settings retrains it:\n\n```sh\nworkbench teach teach.toml\n```\n";
    out + &citations(env!("CARGO_PKG_VERSION"))
}

/// The card of a model saved by `workbench logits --save`, for comparisons with other
/// implementations: `base` with its own head, or with a fresh seeded head trained on nothing.
pub fn saved_logits_card(dir: &Path, base: &str, labels: &[String], fresh_head: bool) -> String {
    let head = if fresh_head {
        format!("a fresh seeded head over {} labels, not trained: its predictions mean nothing", labels.len())
    } else {
        format!("its own head over {} labels", labels.len())
    };
    let mut out = front_matter(&[]);
    out += &format!(
        "# `{base}`, saved by `workbench logits --save`\n\nThe encoder of `{base}` with {head} (workbench {}).\n",
        env!("CARGO_PKG_VERSION")
    );
    out + &usage(dir, labels)
}

/// Writes `card` as `dir/README.md`.
pub fn write(dir: &Path, card: &str) -> Result<()> {
    crate::files::write_atomically(&dir.join("README.md"), card)
}

/// ` cut to N layer(s)`, of a model built from the first layers of its checkpoint.
fn cut_to(layers: usize) -> String {
    format!(" cut to {layers} layer{}", if layers == 1 { "" } else { "s" })
}

fn front_matter(tags: &[&str]) -> String {
    let tags: String = tags.iter().map(|t| format!("  - {t}\n")).collect();
    format!("---\nlibrary_name: transformers\npipeline_tag: text-classification\ntags:\n  - workbench\n{tags}---\n\n")
}

/// How to load the checkpoint in `dir`, by what its export wrote: transformers' native class, or
/// the mean-pooled class of `modeling_workbench.py`, which needs `trust_remote_code`.
fn usage(dir: &Path, labels: &[String]) -> String {
    let remote = dir.join("modeling_workbench.py").is_file();
    let example = labels.first().map_or("", String::as_str);
    let mut out = "\n## Use\n\n".to_string();
    if remote {
        out += "This model reads the mean of its last layer, which transformers' own classes do not: its \
                class is in `modeling_workbench.py` beside the weights, and transformers refuses to load it \
                without `trust_remote_code=True` (read that file first; it is short). Texts longer than the \
                tokenizer's `model_max_length` are cut as the model was trained.\n\n";
    } else {
        out += "The model is transformers' native class; pass `truncation=True` so that long texts are cut \
                to the tokenizer's `model_max_length`, as the model was trained.\n\n";
    }
    let (trust, cut) = if remote { (", trust_remote_code=True", "") } else { ("", ", truncation=True") };
    out += &format!(
        "```python\nfrom transformers import pipeline\n\nclassify = pipeline(\"text-classification\", model=\"PATH\"{trust})\n\
         print(classify(\"a text about {example}\"{cut}))\n```\n\n```sh\nworkbench predict --model PATH \"a text\"\n```\n"
    );
    out
}

fn citations(version: &str) -> String {
    format!(
        "\n## Citation\n\nThe workbench's `docs/methods.md` gives each method's paper (a student's Method section \
         names its own). The workbench:\n\n```bibtex\n{}\n```\n",
        WORKBENCH_CITATION.replace("VERSION", version)
    )
}
