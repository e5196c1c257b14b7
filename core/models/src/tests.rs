//! Model tests on a tiny random BERT written to a temporary checkpoint directory.

use std::{collections::HashMap, path::Path};

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{Batch, Checkpoint, ClassifierOptions, McDepth, ModelError, Pooling, Precision, StochasticPass};

const WORDS: [&str; 12] = ["sport", "ball", "goal", "team", "vote", "law", "party", "state", "the", "a", "big", "news"];
const HIDDEN: usize = 8;
const LAYERS: usize = 2;

fn vocab() -> Vec<String> {
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().chain(WORDS.iter()).map(|s| s.to_string()).collect()
}

fn config(vocab_size: usize, labels: Option<&[&str]>) -> serde_json::Value {
    let mut config = serde_json::json!({
        "vocab_size": vocab_size, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 32, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0
    });
    if let Some(labels) = labels {
        config["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::json!(l))).collect();
    }
    config
}

/// Writes a tiny random checkpoint: `prefix` is "" or "bert." for the encoder tensor names.
fn tiny_checkpoint(dir: &Path, prefix: &str, head: Option<&[&str]>) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-0.5..0.5)).collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    };
    let v = vocab().len();
    add(format!("{prefix}embeddings.word_embeddings.weight"), &[v, HIDDEN]);
    add(format!("{prefix}embeddings.position_embeddings.weight"), &[32, HIDDEN]);
    add(format!("{prefix}embeddings.token_type_embeddings.weight"), &[2, HIDDEN]);
    for part in ["weight", "bias"] {
        add(format!("{prefix}embeddings.LayerNorm.{part}"), &[HIDDEN]);
        add(format!("{prefix}pooler.dense.{part}"), if part == "weight" { &[HIDDEN, HIDDEN] } else { &[HIDDEN] });
    }
    for layer in 0..LAYERS {
        let at = |name: &str| format!("{prefix}encoder.layer.{layer}.{name}");
        for (name, out, inp) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", 16, HIDDEN),
            ("output.dense", HIDDEN, 16),
        ] {
            add(at(&format!("{name}.weight")), &[out, inp]);
            add(at(&format!("{name}.bias")), &[out]);
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(at(&format!("{norm}.weight")), &[HIDDEN]);
            add(at(&format!("{norm}.bias")), &[HIDDEN]);
        }
    }
    if let Some(labels) = head {
        add("classifier.weight".into(), &[labels.len(), HIDDEN]);
        add("classifier.bias".into(), &[labels.len()]);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config(v, head).to_string()).unwrap();
    std::fs::write(dir.join("vocab.txt"), vocab().join("\n")).unwrap();
}

/// A tiny random checkpoint without a head, opened (the directory lives as long as the guard).
fn tiny() -> (tempfile::TempDir, Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let checkpoint = Checkpoint::open(dir.path(), 16, &Device::Cpu).unwrap();
    (dir, checkpoint)
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn options(layers: Option<usize>, trainable: bool) -> ClassifierOptions {
    ClassifierOptions {
        labels: labels(&["sport", "politics", "other"]),
        layers,
        seed: 5,
        trainable,
        freeze_word_embeddings: false,
        pooling: None,
    }
}

const TEXTS: [&str; 3] = ["the sport team goal", "vote the law", "a big big news state party ball"];

fn logits(checkpoint: &Checkpoint, model: &crate::EncoderClassifier, seed: Option<u64>) -> Vec<f32> {
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let mut pass = seed.map(StochasticPass::new);
    model.forward(&batch, pass.as_mut()).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn deterministic_passes_are_identical_and_stochastic_ones_follow_their_seed() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap();
    assert_eq!(logits(&checkpoint, &model, None), logits(&checkpoint, &model, None), "bit-identical");
    let (a, b, c) = (
        logits(&checkpoint, &model, Some(1)),
        logits(&checkpoint, &model, Some(1)),
        logits(&checkpoint, &model, Some(2)),
    );
    assert_eq!(a, b, "same seed, same masks");
    assert_ne!(a, c, "different seeds, different masks");
    assert_ne!(a, logits(&checkpoint, &model, None), "dropout is on in stochastic passes");
}

#[test]
fn computing_only_the_first_position_of_the_top_layer_gives_the_full_models_logits() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap();
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let (hidden, mask) = model.embed(&batch, None).unwrap();
    let every_position = model.encode(hidden, &mask, &model.layers, false, None).unwrap();
    assert_eq!(every_position.dims(), &[3, batch.ids.dim(1).unwrap(), HIDDEN]);
    let full: Vec<f32> =
        model.head(&every_position, &batch.mask, None).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    let first_only = logits(&checkpoint, &model, None);
    for (a, b) in full.iter().zip(&first_only) {
        assert!((a - b).abs() < 1e-6, "{full:?} vs {first_only:?}");
    }
}

#[test]
fn names_with_and_without_the_bert_prefix_load_the_same_model() {
    let (plain, prefixed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_checkpoint(plain.path(), "", None);
    tiny_checkpoint(prefixed.path(), "bert.", None);
    let a = Checkpoint::open(plain.path(), 16, &Device::Cpu).unwrap();
    let b = Checkpoint::open(prefixed.path(), 16, &Device::Cpu).unwrap();
    let (ma, mb) = (
        a.classifier_for(&options(None, false), &Device::Cpu).unwrap(),
        b.classifier_for(&options(None, false), &Device::Cpu).unwrap(),
    );
    assert_eq!(logits(&a, &ma, None), logits(&b, &mb, None));
}

#[test]
fn a_saved_checkpoint_gives_the_same_logits_and_labels() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&options(Some(1), true), &Device::Cpu).unwrap();
    let saved = tempfile::tempdir().unwrap();
    model.save(saved.path(), &checkpoint.tokenizer).unwrap();
    let reopened = Checkpoint::open(saved.path(), 16, &Device::Cpu).unwrap();
    assert_eq!(reopened.labels().unwrap(), labels(&["sport", "politics", "other"]));
    assert_eq!(reopened.config.num_hidden_layers, 1, "the cut is saved");
    let again = reopened.classifier(None, false, &Device::Cpu).unwrap();
    assert_eq!(logits(&checkpoint, &model, None), logits(&reopened, &again, None));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["label2id"]["politics"], 1);
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
}

#[test]
fn cutting_layers_keeps_the_first_ones() {
    let (_dir, checkpoint) = tiny();
    assert_eq!(checkpoint.classifier_for(&options(Some(1), false), &Device::Cpu).unwrap().num_layers(), 1);
    assert_eq!(checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap().num_layers(), 2);
}

#[test]
fn every_parameter_receives_a_gradient() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&options(None, true), &Device::Cpu).unwrap();
    assert_every_parameter_learns(&checkpoint, &model);
}

/// A trained model evaluated in bf16 (a snapshot of its weights) and set back to fp32 trains on:
/// its projections are stacked in each pass's graph again.
#[test]
fn a_trained_model_set_back_from_bf16_to_fp32_trains_every_parameter() {
    let (_dir, checkpoint) = tiny();
    let mut model = checkpoint.classifier_for(&options(None, true), &Device::Cpu).unwrap();
    let fp32 = logits(&checkpoint, &model, None);
    model.set_precision(Precision::Bf16).unwrap();
    model.set_precision(Precision::Fp32).unwrap();
    assert_eq!(logits(&checkpoint, &model, None), fp32);
    assert_every_parameter_learns(&checkpoint, &model);
    // An update of a key projection reaches the next pass (no stale stacked copy).
    let (_, key) =
        model.params().iter().zip(model.vars()).find(|((name, _), _)| name.ends_with("self.key.weight")).unwrap();
    key.set(&key.zeros_like().unwrap()).unwrap();
    assert_ne!(logits(&checkpoint, &model, None), fp32);
}

fn assert_every_parameter_learns(checkpoint: &Checkpoint, model: &crate::EncoderClassifier) {
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let output = model.forward(&batch, Some(&mut StochasticPass::new(3))).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&output.logits, &Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let missing: Vec<&str> = model
        .params()
        .iter()
        .zip(model.vars())
        .filter(|(_, var)| {
            grads.get(var).is_none_or(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0)
        })
        .map(|((name, _), _)| name.as_str())
        .collect();
    // Rows of the embedding tables that no token used get zero gradient, but each table as a
    // whole learns; every other parameter must too.
    assert_eq!(model.vars().len(), 5 + LAYERS * 16 + 4);
    assert!(missing.is_empty(), "parameters without gradient: {missing:?}");
}

fn open_error(dir: &Path) -> String {
    match Checkpoint::open(dir, 16, &Device::Cpu).and_then(|c| c.classifier_for(&options(None, false), &Device::Cpu)) {
        Ok(_) => panic!("expected {} to be refused", dir.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn missing_or_corrupt_weights_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let weights = dir.path().join("model.safetensors");
    std::fs::write(&weights, b"definitely not safetensors").unwrap();
    let message = open_error(dir.path());
    assert!(message.contains(&format!("{}: not a readable safetensors file", weights.display())), "{message}");
    std::fs::remove_file(&weights).unwrap();
    let message = open_error(dir.path());
    assert!(message.contains("model.safetensors: missing"), "{message}");
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_refused_naming_tensor_and_file() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let mut wrong = config(vocab().len(), None);
    wrong["intermediate_size"] = serde_json::json!(32);
    std::fs::write(dir.path().join("config.json"), wrong.to_string()).unwrap();
    let message = open_error(dir.path());
    assert!(message.contains("model.safetensors: tensor `encoder.layer.0.intermediate.dense.weight` has shape [16, 8], but config.json implies [32, 8]"), "{message}");
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let mut longer = vocab();
    longer.extend(["extra1", "extra2"].map(String::from));
    std::fs::write(dir.path().join("vocab.txt"), longer.join("\n")).unwrap();
    let message = open_error(dir.path());
    assert!(
        message
            .contains("vocab.txt does not match the model: it has 19 tokens but the model's embeddings have 17 rows"),
        "{message}"
    );
}

#[test]
fn a_label_the_checkpoint_does_not_know_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", Some(&["sport", "politics"]));
    let checkpoint = Checkpoint::open(dir.path(), 16, &Device::Cpu).unwrap();
    assert_eq!(checkpoint.label_indices(&labels(&["politics", "sport"])).unwrap(), vec![1, 0]);
    let error = checkpoint.label_indices(&labels(&["sport", "weather"])).unwrap_err();
    assert!(matches!(error, ModelError::UnknownLabel { .. }));
    assert!(error.to_string().contains("label `weather` is not known to the checkpoint"), "{error}");
    assert!(error.to_string().contains("(its labels: sport, politics)"), "{error}");
}

#[test]
fn truncation_keeps_the_final_separator_and_padding_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let checkpoint = Checkpoint::open(dir.path(), 4, &Device::Cpu).unwrap();
    // [CLS]=2 the=13 sport=5 [SEP]=3 after cutting "team goal".
    assert_eq!(checkpoint.tokenizer.encode("the sport team goal").unwrap(), vec![2, 13, 5, 3]);
    let batch = checkpoint.tokenizer.batch(&["sport", "the sport team"], &Device::Cpu).unwrap();
    assert_eq!(batch.ids.to_vec2::<u32>().unwrap(), vec![vec![2, 5, 3, 0], vec![2, 13, 5, 3]]);
    assert_eq!(batch.mask.to_vec2::<f32>().unwrap(), vec![vec![1.0, 1.0, 1.0, 0.0], vec![1.0; 4]]);
}

#[test]
fn batched_mc_passes_follow_their_seed_and_can_spare_the_lower_layers() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap();
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let mc = |seed, top_layers| {
        model.mc_logits(&batch, 5, seed, McDepth { top_layers, lower_passes: 0, outputs_only: false }).unwrap()
    };
    let a = mc(1, 0);
    assert_eq!(a.dims(), &[5, 3, 3]);
    assert_eq!(a.to_vec3::<f32>().unwrap(), mc(1, 0).to_vec3::<f32>().unwrap(), "same seed, same passes");
    assert_ne!(a.to_vec3::<f32>().unwrap(), mc(2, 0).to_vec3::<f32>().unwrap());
    let passes = a.to_vec3::<f32>().unwrap();
    assert_ne!(passes[0], passes[1], "passes differ from one another");
    // Only the top layer stochastic: still seeded, still varied, and different from full MC.
    let top = mc(1, 1).to_vec3::<f32>().unwrap();
    assert_eq!(top, mc(1, 1).to_vec3::<f32>().unwrap());
    assert_ne!(top[0], top[1]);
    assert_ne!(top, passes);
}

#[test]
fn the_top_passes_take_the_stochastic_lower_samples_in_turn() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        top_passes_take_the_lower_samples_in_turn(pooling);
    }
}

fn top_passes_take_the_lower_samples_in_turn(pooling: Pooling) {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint
        .classifier_for(&ClassifierOptions { pooling: Some(pooling), ..options(None, false) }, &Device::Cpu)
        .unwrap();
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let mc = model.mc_logits(&batch, 4, 9, McDepth { top_layers: 1, lower_passes: 2, outputs_only: false }).unwrap();

    // The same from the parts, on one seeded stream: the embeddings and the lower layer twice
    // with dropout, then the top layer and the head over lower samples 0, 1, 0, 1.
    let mut pass = StochasticPass::new(9);
    let twice = |t: &Tensor| Tensor::cat(&[t, t], 0).unwrap();
    let (hidden, mask) =
        model.embed(&Batch { ids: twice(&batch.ids), mask: twice(&batch.mask) }, Some(&mut pass)).unwrap();
    let lower = model.encode(hidden, &mask, &model.layers[..1], false, Some(&mut pass)).unwrap();
    let top = model.encode(twice(&lower), &twice(&mask), &model.layers[1..], true, Some(&mut pass)).unwrap();
    let padding = Tensor::cat(&[&batch.mask, &batch.mask, &batch.mask, &batch.mask], 0).unwrap();
    let expected = model.head(&top, &padding, Some(&mut pass)).unwrap().logits.reshape((4, TEXTS.len(), 3)).unwrap();
    assert_close(&mc, &expected);

    let passes = mc.to_vec3::<f32>().unwrap();
    assert_ne!(passes[0], passes[2], "passes sharing a lower sample still differ in the top layer");

    // With the lower part run once without dropout, every pass reads that one output.
    let once = model.mc_logits(&batch, 4, 9, McDepth { top_layers: 1, lower_passes: 0, outputs_only: false }).unwrap();
    let (hidden, mask) = model.embed(&batch, None).unwrap();
    let lower = model.encode(hidden, &mask, &model.layers[..1], false, None).unwrap();
    let four = |t: &Tensor| Tensor::cat(&[t, t, t, t], 0).unwrap();
    let mut pass = StochasticPass::new(9);
    let top = model.encode(four(&lower), &four(&mask), &model.layers[1..], true, Some(&mut pass)).unwrap();
    let expected = model.head(&top, &padding, Some(&mut pass)).unwrap().logits.reshape((4, TEXTS.len(), 3)).unwrap();
    assert_close(&once, &expected);
    assert_ne!(once.to_vec3::<f32>().unwrap(), passes, "a deterministic lower part gives other passes");
}

#[test]
fn output_only_passes_share_the_top_layer_up_to_its_last_dropout() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let (_dir, checkpoint) = tiny();
        let options = ClassifierOptions { pooling: Some(pooling), ..options(None, false) };
        let model = checkpoint.classifier_for(&options, &Device::Cpu).unwrap();
        let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
        let depth = McDepth { top_layers: 1, lower_passes: 0, outputs_only: true };
        let mc = model.mc_logits(&batch, 4, 9, depth).unwrap();

        // The same unshared: the lower layer once without dropout, then the top layer over four
        // copies with a pass that draws masks only for the output dropout and the head.
        let (hidden, mask) = model.embed(&batch, None).unwrap();
        let lower = model.encode(hidden, &mask, &model.layers[..1], false, None).unwrap();
        let four = |t: &Tensor| Tensor::cat(&[t, t, t, t], 0).unwrap();
        let mut pass = StochasticPass::at_sites(9, true);
        let top = model.encode(four(&lower), &four(&mask), &model.layers[1..], true, Some(&mut pass)).unwrap();
        let padding = four(&batch.mask);
        let expected =
            model.head(&top, &padding, Some(&mut pass)).unwrap().logits.reshape((4, TEXTS.len(), 3)).unwrap();
        assert_close(&mc, &expected);

        let passes = mc.to_vec3::<f32>().unwrap();
        assert_ne!(passes[0], passes[1], "{pooling:?}: the passes still differ");
        let every_site = model.mc_logits(&batch, 4, 9, McDepth { outputs_only: false, ..depth }).unwrap();
        assert_ne!(every_site.to_vec3::<f32>().unwrap(), passes, "{pooling:?}: fewer dropouts, other passes");
        // Every layer's output dropout, the attention's off: not the passes of full MC.
        let all_layers = |outputs_only| {
            let depth = McDepth { top_layers: 0, lower_passes: 0, outputs_only };
            model.mc_logits(&batch, 4, 9, depth).unwrap().to_vec3::<f32>().unwrap()
        };
        assert_ne!(all_layers(true), all_layers(false));
    }
}

/// Equal up to float summation order (the shared top-layer path multiplies fewer rows at once).
fn assert_close(got: &Tensor, expected: &Tensor) {
    let difference = (got - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(difference < 1e-5, "largest difference {difference}");
}

fn mean_options() -> ClassifierOptions {
    ClassifierOptions { pooling: Some(Pooling::Mean), ..options(None, false) }
}

#[test]
fn pooling_comes_from_config_json_then_the_sentence_transformers_config_then_cls() {
    let dir = tempfile::tempdir().unwrap();
    tiny_checkpoint(dir.path(), "", None);
    let open = || Checkpoint::open(dir.path(), 16, &Device::Cpu).map(|c| c.pooling);
    assert_eq!(open().unwrap(), Pooling::Cls, "no pooling config: transformers' cls head");
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    let modes = |mean: bool, cls: bool, max: bool| {
        let json = serde_json::json!({ "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": cls,
            "pooling_mode_mean_tokens": mean, "pooling_mode_max_tokens": max });
        std::fs::write(dir.path().join("1_Pooling/config.json"), json.to_string()).unwrap();
    };
    modes(true, false, false);
    assert_eq!(open().unwrap(), Pooling::Mean);
    modes(false, true, false);
    assert_eq!(open().unwrap(), Pooling::Cls);
    modes(false, false, true);
    let message = open().err().unwrap().to_string();
    assert_eq!(
        message,
        format!(
            "{}: asks for a pooling other than exactly one of mean or cls tokens; set `pooling = \"mean\"` or `\"cls\"` for this model to choose one",
            dir.path().join("1_Pooling/config.json").display()
        )
    );
    let mut with_key = config(vocab().len(), None);
    with_key["pooling"] = serde_json::json!("mean");
    std::fs::write(dir.path().join("config.json"), with_key.to_string()).unwrap();
    assert_eq!(open().unwrap(), Pooling::Mean, "config.json's key wins over 1_Pooling");
}

#[test]
fn mean_pooling_averages_the_top_layer_over_real_tokens_only() {
    let (_dir, checkpoint) = tiny();
    let model = checkpoint.classifier_for(&mean_options(), &Device::Cpu).unwrap();
    assert_eq!(model.pooling(), Pooling::Mean);
    assert!(model.params().iter().all(|(name, _)| !name.starts_with("pooler")), "mean pooling has no pooler");
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let (hidden, mask) = model.embed(&batch, None).unwrap();
    let top = model.encode(hidden, &mask, &model.layers, false, None).unwrap().to_vec3::<f32>().unwrap();
    let padding = batch.mask.to_dtype(candle_core::DType::F32).unwrap().to_vec2::<f32>().unwrap();
    let weight = |name: &str| model.params().iter().find(|(n, _)| n == name).unwrap().1.clone();
    let (w, b) =
        (weight("classifier.weight").to_vec2::<f32>().unwrap(), weight("classifier.bias").to_vec1::<f32>().unwrap());
    let output = model.forward(&batch, None).unwrap();
    let got = output.logits.to_vec2::<f32>().unwrap();
    for (i, (rows, real)) in top.iter().zip(&padding).enumerate() {
        // The mean over the real tokens, written out, then the classifier's affine map.
        let count: f32 = real.iter().sum();
        let mean: Vec<f32> =
            (0..HIDDEN).map(|h| rows.iter().zip(real).map(|(row, m)| row[h] * m).sum::<f32>() / count).collect();
        for (label, (weights, bias)) in w.iter().zip(&b).enumerate() {
            let expected = weights.iter().zip(&mean).map(|(a, x)| a * x).sum::<f32>() + bias;
            assert!((got[i][label] - expected).abs() < 1e-5, "text {i} label {label}: {} vs {expected}", got[i][label]);
        }
    }
    // Padding changes nothing: the shortest text alone gives the logits it has in the batch.
    let alone = checkpoint.tokenizer.batch(&TEXTS[1..2], &Device::Cpu).unwrap();
    let single = model.forward(&alone, None).unwrap().logits.to_vec2::<f32>().unwrap();
    assert!(single[0].iter().zip(&got[1]).all(|(a, b)| (a - b).abs() < 1e-5), "{single:?} vs {:?}", got[1]);
}

#[test]
fn a_mean_pooled_model_exported_and_reloaded_gives_identical_logits() {
    let (_dir, checkpoint) = tiny();
    let model =
        checkpoint.classifier_for(&ClassifierOptions { trainable: true, ..mean_options() }, &Device::Cpu).unwrap();
    let saved = tempfile::tempdir().unwrap();
    model.save(saved.path(), &checkpoint.tokenizer).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["pooling"], "mean", "the export records its pooling");
    // transformers knows no such model type: it refuses the checkpoint unless told to run the
    // class written beside it, which pools by mean and cuts inputs to the trained length.
    assert_eq!(config["model_type"], "workbench-mean-pooled-bert");
    assert_eq!(config["architectures"], serde_json::json!(["WorkbenchBertForSequenceClassification"]));
    assert_eq!(
        config["auto_map"],
        serde_json::json!({
            "AutoConfig": "modeling_workbench.WorkbenchBertConfig",
            "AutoModelForSequenceClassification": "modeling_workbench.WorkbenchBertForSequenceClassification",
        })
    );
    assert_eq!(config["max_input_length"], checkpoint.tokenizer.max_length());
    let code = std::fs::read_to_string(saved.path().join("modeling_workbench.py")).unwrap();
    for class in ["class WorkbenchBertConfig(BertConfig)", "class WorkbenchBertForSequenceClassification("] {
        assert!(code.contains(class), "{class}");
    }
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.path().join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(
        tokenizer,
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": checkpoint.tokenizer.max_length(),
            "padding_side": "right",
            "truncation_side": "right",
            "clean_up_tokenization_spaces": false,
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "mask_token": "[MASK]",
        })
    );
    assert_eq!(crate::trained_max_length(saved.path()), Some(checkpoint.tokenizer.max_length()));
    let reopened = Checkpoint::open(saved.path(), 16, &Device::Cpu).unwrap();
    assert_eq!(reopened.pooling, Pooling::Mean);
    let again = reopened.classifier(None, false, &Device::Cpu).unwrap();
    assert_eq!(logits(&checkpoint, &model, None), logits(&reopened, &again, None), "bit-identical");
    let mc = |m: &crate::EncoderClassifier| {
        let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
        m.mc_logits(&batch, 3, 4, McDepth::default()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(mc(&model), mc(&again), "and identical MC passes");
    // Saved again as `cls`, the checkpoint is transformers' native class and the code goes.
    let native = checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap();
    native.save(saved.path(), &checkpoint.tokenizer).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.path().join("config.json")).unwrap()).unwrap();
    assert_eq!((config["model_type"].as_str(), config.get("auto_map")), (Some("bert"), None));
    assert!(!saved.path().join("modeling_workbench.py").exists());
    // Mean and cls heads over the same encoder differ.
    let cls = checkpoint.classifier_for(&options(None, false), &Device::Cpu).unwrap();
    assert_ne!(logits(&checkpoint, &cls, None), logits(&checkpoint, &model, None));
}

#[test]
fn every_parameter_of_a_mean_pooled_model_receives_a_gradient() {
    let (_dir, checkpoint) = tiny();
    let model =
        checkpoint.classifier_for(&ClassifierOptions { trainable: true, ..mean_options() }, &Device::Cpu).unwrap();
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let output = model.forward(&batch, Some(&mut StochasticPass::new(3))).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&output.logits, &Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(model.vars().len(), 5 + LAYERS * 16 + 2, "no pooler");
    let without: Vec<&str> = model
        .params()
        .iter()
        .zip(model.vars())
        .filter(|(_, var)| {
            grads.get(var).is_none_or(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0)
        })
        .map(|((name, _), _)| name.as_str())
        .collect();
    assert!(without.is_empty(), "parameters without gradient: {without:?}");
}

#[test]
fn hidden_states_of_every_layer_pooled_give_what_the_head_reads() {
    let (_dir, checkpoint) = tiny();
    let mean = ClassifierOptions { pooling: Some(Pooling::Mean), ..options(None, false) };
    let model = checkpoint.classifier_for(&mean, &Device::Cpu).unwrap();
    let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
    let states = model.hidden_states(&batch).unwrap();
    assert_eq!(states.len(), LAYERS + 1, "the embeddings, then every layer");
    let pooled = crate::pool(states.last().unwrap(), &batch.mask, Pooling::Mean).unwrap();
    let head: Vec<f32> = model.forward(&batch, None).unwrap().pooled.flatten_all().unwrap().to_vec1().unwrap();
    let ours: Vec<f32> = pooled.flatten_all().unwrap().to_vec1().unwrap();
    for (a, b) in ours.iter().zip(&head) {
        assert!((a - b).abs() < 1e-6, "{ours:?} vs {head:?}");
    }
    // Mean pooling by hand for the second text: the mean of its real tokens' states.
    let tokens = batch.mask.get(1).unwrap().to_vec1::<f32>().unwrap().iter().sum::<f32>() as usize;
    let last = states.last().unwrap().get(1).unwrap().narrow(0, 0, tokens).unwrap();
    let by_hand: Vec<f32> = (last.sum(0).unwrap() / tokens as f64).unwrap().to_vec1().unwrap();
    let row: Vec<f32> = pooled.get(1).unwrap().to_vec1().unwrap();
    for (a, b) in by_hand.iter().zip(&row) {
        assert!((a - b).abs() < 1e-6, "{by_hand:?} vs {row:?}");
    }
    let first = crate::pool(&states[1], &batch.mask, Pooling::Cls).unwrap();
    assert_eq!(first.dims(), &[3, HIDDEN]);
}

#[test]
fn bf16_falls_back_to_fp32_where_it_cannot_run() {
    assert_eq!(Precision::Bf16.in_effect(false), Precision::Fp32);
    assert_eq!(Precision::Bf16.in_effect(true), Precision::Bf16);
    assert_eq!(Precision::Fp32.in_effect(true), Precision::Fp32);
}

/// bf16 layers keep the logits within bf16 rounding of fp32 (8 bits of mantissa on each input
/// of each product: about 0.4 % of a logit), in single and shared Monte-Carlo passes; fp32
/// set back gives the fp32 logits bit for bit.
#[test]
fn bf16_layers_stay_within_rounding_of_fp32_and_fp32_comes_back_exactly() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let (_dir, checkpoint) = tiny();
        let options = ClassifierOptions { pooling: Some(pooling), ..options(None, false) };
        let mut model = checkpoint.classifier_for(&options, &Device::Cpu).unwrap();
        let batch = checkpoint.tokenizer.batch(&TEXTS, &Device::Cpu).unwrap();
        let depth = McDepth { top_layers: 1, lower_passes: 0, outputs_only: false };
        let mc = |model: &crate::EncoderClassifier| {
            model.mc_logits(&batch, 3, 4, depth).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (fp32, fp32_mc) = (logits(&checkpoint, &model, None), mc(&model));
        let precision = model.set_precision(Precision::Bf16).unwrap();
        if !crate::kernels::bf16::supported() {
            assert_eq!(precision, Precision::Fp32);
            assert_eq!(logits(&checkpoint, &model, None), fp32, "the fallback is the fp32 path");
            eprintln!("SKIPPED: this CPU has no AVX512-BF16; only the fallback was checked");
            return;
        }
        assert_eq!(precision, Precision::Bf16);
        for (got, want) in [(logits(&checkpoint, &model, None), &fp32), (mc(&model), &fp32_mc)] {
            assert_ne!(&got, want, "the bf16 kernels ran");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            assert!(worst <= 0.01 * scale, "{pooling:?}: {worst} against logits up to {scale}");
        }
        assert_eq!(model.set_precision(Precision::Fp32).unwrap(), Precision::Fp32);
        assert_eq!(logits(&checkpoint, &model, None), fp32);
    }
}
