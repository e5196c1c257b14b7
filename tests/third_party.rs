//! The third-party path: plugins of each kind made by `workbench plugin new` outside the
//! workspace, built there, loaded by path and run (the strategy and estimator through the
//! fake-teacher harness).

mod support;

use std::process::Command;

use workbench::host::{HostSettings, PluginLibrary, Registry};
use workbench_plugin_api::{ParamTable, ParamValue, Term};
use workbench_plugin_testkit::{FakeTeacher, Harness};

/// `workbench plugin new` for each kind: the crate builds where it is made, its own unit test
/// passes, and the workbench loads the library and runs the component.
#[test]
fn scaffolded_plugins_of_each_kind_build_test_load_and_run() {
    use workbench_plugin_api::{ForwardRequest, Sampling};
    let dir = tempfile::tempdir().unwrap();
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let cargo = || {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.env("CARGO_TARGET_DIR", &target);
        command
    };
    let mut registry = Registry::default();
    for kind in ["teacher", "estimator", "strategy"] {
        let name = format!("scaffolded-{kind}");
        let out = support::run(&mut support::workbench(&[
            "plugin",
            "new",
            &name,
            "--kind",
            kind,
            "--path",
            dir.path().to_str().unwrap(),
        ]));
        assert!(out.ok, "{}", out.stderr);
        let crate_dir = dir.path().join(&name);
        let tested = cargo().args(["test", "--quiet"]).current_dir(&crate_dir).output().expect("cargo runs");
        assert!(tested.status.success(), "{kind}: {}", String::from_utf8_lossy(&tested.stderr));
        assert!(
            String::from_utf8_lossy(&tested.stdout).contains("test result: ok. 1 passed"),
            "{kind}: its unit test ran"
        );
        let built = cargo().args(["build", "--quiet"]).current_dir(&crate_dir).status().expect("cargo runs");
        assert!(built.success(), "{kind} builds");
        let library = target.join("debug").join(format!(
            "{}{}.{}",
            std::env::consts::DLL_PREFIX,
            name.replace('-', "_"),
            std::env::consts::DLL_EXTENSION
        ));
        registry.add(PluginLibrary::load(&library, &HostSettings::default()).expect("the scaffolded plugin loads"));
    }
    assert!(registry.failures().is_empty());

    let labels =
        ParamTable::default().with("labels", ParamValue::TextList(vec!["sport".into(), "science".into()].into()));
    let mut teacher = registry.create_teacher("scaffolded-teacher", None, &labels).unwrap();
    let info = teacher.info().unwrap();
    let texts = ["sport, sport".into(), "science".into()];
    let request = ForwardRequest { sampling: Sampling::Deterministic, want_hidden: false };
    assert_eq!(teacher.forward(&texts, &request, &info).unwrap().logits.data(), &[2.0, 0.0, 0.0, 1.0]);

    let temperature = ParamTable::default().with("temperature", ParamValue::Float(1.0));
    let harness = Harness::new(vec![
        FakeTeacher::new("news", &["politics", "sport"], vec![vec![0.0, 3f32.ln()]]),
        FakeTeacher::new("science", &["space", "medicine"], vec![vec![9f32.ln(), 0.0]]),
    ]);
    let estimator = registry.create_estimator("scaffolded-estimator", None, &temperature).unwrap();
    let scores = estimator.score(&harness.deterministic_samples()).unwrap();
    assert!((scores.data()[0] - 0.75).abs() < 1e-6 && (scores.data()[1] - 0.9).abs() < 1e-6, "{scores:?}");
    let strategy = registry.create_strategy("scaffolded-strategy", None, &temperature).unwrap();
    let recipe = strategy.recipe(&harness.strategy_input(None)).unwrap();
    let Term::Distribution(term) = &recipe.terms[0] else { panic!("a distribution term") };
    let expected = [0.0, 0.0, 0.9, 0.1];
    assert!(term.target.data().iter().zip(expected).all(|(g, w)| (g - w).abs() < 1e-6), "{:?}", term.target);
}
