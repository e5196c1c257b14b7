//! The third-party path: a strategy plugin built from a crate outside the workspace
//! (`examples/strategy-template`), loaded by path, and run through the fake-teacher harness.

mod support;

use std::process::Command;

use workbench::host::{HostSettings, PluginLibrary, Registry};
use workbench_plugin_api::{ParamTable, ParamValue, Term};
use workbench_plugin_testkit::{FakeTeacher, Harness};

#[test]
fn a_strategy_built_outside_the_workspace_loads_by_path_and_runs_through_the_harness() {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("template-target");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(support::repo_root().join("examples/strategy-template/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/strategy-template failed");
    let library = target.join("debug").join(format!(
        "{}confident_kd.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ));

    let mut registry = Registry::default();
    registry.add(PluginLibrary::load(&library, &HostSettings::default()).expect("the template loads"));
    assert!(registry.failures().is_empty());
    let strategy = registry
        .create_strategy("confident-kd", None, &ParamTable::default().with("temperature", ParamValue::Float(1.0)))
        .unwrap();

    // news: [0, ln3] -> [1/4, 3/4], then [ln9, 0] -> [0.9, 0.1]; science: [ln4, 0] -> [0.8, 0.2], then [0, 0].
    // Instance 0: science is more confident (0.8 > 0.75); instance 1: news (0.9 > 0.5).
    let harness = Harness::new(vec![
        FakeTeacher::new("news", &["politics", "sport"], vec![vec![0.0, 3f32.ln()], vec![9f32.ln(), 0.0]]),
        FakeTeacher::new("science", &["space", "medicine"], vec![vec![4f32.ln(), 0.0], vec![0.0, 0.0]]),
    ]);
    let recipe = strategy.recipe(&harness.strategy_input(None)).unwrap();
    let Term::Distribution(term) = &recipe.terms[0] else { panic!("a distribution term") };
    let expected = [0.0, 0.0, 0.8, 0.2, 0.9, 0.1, 0.0, 0.0];
    assert!(term.target.data().iter().zip(expected).all(|(g, w)| (g - w).abs() < 1e-6), "{:?}", term.target);
}
