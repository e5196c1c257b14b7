//! `workbench teach` on the real MiniLM checkpoint (fetched by the project's own asset code),
//! cut to one layer and fine-tuned for a few steps on a tiny two-topic dataset.

mod support;

use support::{run, teach_config, workbench};

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
    // Its stderr is a pipe, where no bar is drawn: each epoch's line is in the log instead.
    for (i, epoch) in epochs.iter().enumerate() {
        let line = format!(
            "epoch {}: loss {:.4}, validation accuracy {:.4}",
            i + 1,
            loss(i),
            epoch["validation_accuracy"].as_f64().unwrap()
        );
        assert!(out.stderr.contains(&line), "`{line}` in {}", out.stderr);
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(teacher.join("teach.json")).unwrap()).unwrap();
    let test_accuracy = summary["outcome"]["test_accuracy"].as_f64().unwrap();
    assert!(test_accuracy > 0.75, "held-out accuracy {test_accuracy} beats chance (0.5) clearly");
    // The checkpoint is in the Hugging Face layout with its labels.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(teacher.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["id2label"], serde_json::json!({"0": "science", "1": "sport"}));
    assert!(teacher.join("tokenizer.json").is_file() && teacher.join("model.safetensors").is_file());
    // Its model card: labels, recipe and scores.
    let card = std::fs::read_to_string(teacher.join("README.md")).unwrap();
    let validation = summary["outcome"]["validation_accuracy"].as_f64().unwrap();
    for part in [
        "# Teacher over 2 labels\n\nFine-tuned by `workbench teach`".to_string(),
        "from `minilm` cut to 1 layer on ".into(),
        format!("Validation accuracy {validation:.4}; test accuracy on its labels {test_accuracy:.4}."),
        "| 0 | science |\n| 1 | sport |\n".into(),
        "trust_remote_code=True".into(),
    ] {
        assert!(card.contains(&part), "`{part}` in {card}");
    }
}

#[test]
fn a_label_missing_from_the_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = teach_config(dir.path(), r#"labels = ["sport", "weather"]"#);
    let out = run(&mut workbench(&["teach", config.to_str().unwrap()]));
    assert!(!out.ok);
    assert!(
        out.stderr.contains(r#"`teach.labels`: ["weather"] not in the training data; its labels: science, sport"#),
        "{}",
        out.stderr
    );
}
