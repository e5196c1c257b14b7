//! `workbench teach` on the real MiniLM checkpoint (fetched by the project's own asset code),
//! cut to one layer and fine-tuned for a few steps on a tiny two-topic dataset.

mod support;

use std::{fmt::Write as _, path::Path};

use rand::{rngs::StdRng, seq::IndexedRandom, SeedableRng};
use support::{run, workbench};

const SPORT: [&str; 10] = ["football", "goal", "match", "team", "coach", "league", "striker", "season", "stadium", "players"];
const SCIENCE: [&str; 10] = ["physics", "experiment", "laboratory", "molecule", "theory", "research", "planet", "telescope", "energy", "scientists"];
const FILLER: [&str; 6] = ["the", "a", "new", "big", "this", "today"];

/// A CSV of `per_class` short texts per topic, drawn from the topic's words.
fn write_csv(path: &Path, per_class: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = String::from("text,label\n");
    for _ in 0..per_class {
        for (label, words) in [("sport", &SPORT), ("science", &SCIENCE)] {
            let text: Vec<&str> = (0..6).map(|i| if i % 2 == 0 { *FILLER.choose(&mut rng).unwrap() } else { *words.choose(&mut rng).unwrap() }).collect();
            writeln!(csv, "{},{label}", text.join(" ")).unwrap();
        }
    }
    std::fs::write(path, csv).unwrap();
}

fn teach_config(dir: &Path, labels: &str) -> std::path::PathBuf {
    write_csv(&dir.join("train.csv"), 40, 1);
    write_csv(&dir.join("test.csv"), 20, 2);
    let config = format!(
        r#"
[teach]
model = "minilm"
layers = 1
{labels}
output = "{out}"
epochs = 3
learning_rate = 5e-4
batch_size = 8
max_length = 16
seed = 3

[data]
dataset = "files"
train = "{train}"
test = "{test}"
"#,
        out = dir.join("teacher").display(),
        train = dir.join("train.csv").display(),
        test = dir.join("test.csv").display(),
    );
    let path = dir.join("teach.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn a_one_layer_teacher_lowers_its_loss_and_beats_chance() {
    let dir = tempfile::tempdir().unwrap();
    let config = teach_config(dir.path(), "");
    let out = run(&mut workbench(&["teach", config.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let teacher = dir.path().join("teacher");
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(teacher.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 3);
    let loss = |i: usize| epochs[i]["train_loss"].as_f64().unwrap();
    assert!(loss(2) < loss(0), "training loss went down: {epochs:?}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(teacher.join("teach.json")).unwrap()).unwrap();
    let test_accuracy = summary["outcome"]["test_accuracy"].as_f64().unwrap();
    assert!(test_accuracy > 0.75, "held-out accuracy {test_accuracy} beats chance (0.5) clearly");
    // The checkpoint is in the Hugging Face layout with its labels.
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(teacher.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["id2label"], serde_json::json!({"0": "science", "1": "sport"}));
    assert!(teacher.join("tokenizer.json").is_file() && teacher.join("model.safetensors").is_file());
}

#[test]
fn a_label_missing_from_the_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = teach_config(dir.path(), r#"labels = ["sport", "weather"]"#);
    let out = run(&mut workbench(&["teach", config.to_str().unwrap()]));
    assert!(!out.ok);
    assert!(out.stderr.contains(r#"`teach.labels`: ["weather"] not in the training data; its labels: science, sport"#), "{}", out.stderr);
}
