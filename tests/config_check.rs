//! `workbench config check`: resolution order (file, environment, --set) and refusal of bad
//! configs with messages that name the key, the file and the plugin.

mod support;

use std::path::Path;

use support::{run, workbench};

const GOOD: &str = r#"
name = "two-teachers"
seed = 3

[teachers.news]
plugin = "fixed-logits"
labels = ["politics", "sport"]
rows = [[2.0, -1.0]]

[teachers.science]
plugin = "fixed-logits"
labels = ["space", "sport"]
rows = [[1, 0]]

[estimator]
plugin = "entropy"

[strategy]
plugin = "vanilla-kd"
temperature = 2.0
"#;

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("experiment.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn check(text: &str, extra: &[&str]) -> (support::Run, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), text);
    let mut args = vec!["config", "check", "--print", &file];
    args.extend_from_slice(extra);
    (run(&mut workbench(&args)), file)
}

#[test]
fn a_good_config_prints_the_resolved_config_with_defaults() {
    let (out, _) = check(GOOD, &[]);
    assert!(out.ok, "{}", out.stderr);
    let resolved: toml::Table = out.stdout.parse().expect("the output is TOML");
    assert_eq!(resolved["name"].as_str(), Some("two-teachers"));
    assert_eq!(resolved["seed"].as_integer(), Some(3));
    assert_eq!(resolved["strategy"]["temperature"].as_float(), Some(2.0));
    // Defaults are written out: the estimator's measure and the teachers' noise.
    assert_eq!(resolved["estimator"]["measure"].as_str(), Some("entropy"));
    assert_eq!(resolved["teachers"]["news"]["noise"].as_float(), Some(0.5));
    // An integer matrix given for a float parameter is widened.
    assert_eq!(
        resolved["teachers"]["science"]["rows"].as_array().unwrap()[0].as_array().unwrap()[0].as_float(),
        Some(1.0)
    );
}

#[test]
fn a_teacher_is_taught_at_its_own_max_length_unless_teach_says_otherwise() {
    let teachers = r#"
[data]
dataset = "20newsgroups"

[teachers.a]
plugin = "bert"
checkpoints = ["teachers/a"]
max_length = 48
teach = { layers = 1, labels = ["sci.space"] }

[teachers.b]
plugin = "bert"
checkpoints = ["teachers/b"]
max_length = 48
teach = { layers = 1, labels = ["rec.autos"], max_length = 32 }

[strategy]
plugin = "vanilla-kd"
"#;
    let (out, _) = check(teachers, &[]);
    assert!(out.ok, "{}", out.stderr);
    let resolved: toml::Table = out.stdout.parse().expect("the output is TOML");
    let teach_length = |name: &str| resolved["teachers"][name]["teach"]["max_length"].as_integer();
    assert_eq!((teach_length("a"), teach_length("b")), (Some(48), Some(32)));
}

#[test]
fn only_the_bert_teacher_can_be_taught() {
    let taught = GOOD.replace("rows = [[2.0, -1.0]]\n", "rows = [[2.0, -1.0]]\nteach = { labels = [\"sci.space\"] }\n");
    let (out, file) = check(&taught, &[]);
    assert!(
        out.stderr.contains(&format!(
            "`teachers.news.teach` in {file}: the workbench teaches `bert` teachers only; train a `fixed-logits` \
             teacher with its own tools and name what it reads in its parameters"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn environment_overrides_the_file_and_set_overrides_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), GOOD);
    let out = run(workbench(&[
        "config",
        "check",
        "--print",
        &file,
        "--set",
        "strategy.temperature=4",
        "--set",
        "teachers.news.members=3",
    ])
    .env("WORKBENCH_SEED", "11")
    .env("WORKBENCH_STRATEGY__TEMPERATURE", "3")
    .env("WORKBENCH_TEACHERS__SCIENCE__NOISE", "0.25"));
    assert!(out.ok, "{}", out.stderr);
    let resolved: toml::Table = out.stdout.parse().unwrap();
    assert_eq!(resolved["seed"].as_integer(), Some(11), "env beats the file");
    assert_eq!(resolved["teachers"]["science"]["noise"].as_float(), Some(0.25), "env reaches plugin parameters");
    assert_eq!(resolved["strategy"]["temperature"].as_float(), Some(4.0), "--set beats env");
    assert_eq!(resolved["teachers"]["news"]["members"].as_integer(), Some(3));
}

#[test]
fn a_misspelt_parameter_is_refused_naming_key_file_and_suggestion() {
    let (out, file) = check(&GOOD.replace("temperature = 2.0", "tempreature = 2.0"), &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains(&format!("`strategy.tempreature` in {file}")), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown parameter of strategy `vanilla-kd`; did you mean `temperature`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_misspelt_top_level_key_is_refused() {
    let (out, file) = check(&GOOD.replace("seed = 3", "sed = 3"), &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains(&format!("`sed` in {file}: unknown key; did you mean `seed`?")), "{}", out.stderr);
}

#[test]
fn a_wrong_type_is_refused_naming_key_and_file() {
    let (out, file) = check(&GOOD.replace("temperature = 2.0", "temperature = \"hot\""), &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("`strategy.temperature` in {file}: expected a number, found string \"hot\"")),
        "{}",
        out.stderr
    );
    let (out, _) = check(GOOD, &["--set", "teachers.news.members=2.5"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("`teachers.news.members` (from --set teachers.news.members): expected an integer"),
        "{}",
        out.stderr
    );
}

#[test]
fn out_of_range_and_bad_choices_are_refused() {
    let (out, _) = check(GOOD, &["--set", "strategy.temperature=1000", "--set", "estimator.measure=vibes"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("`strategy.temperature` (from --set strategy.temperature): 1000 is above the maximum 100"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("`estimator.measure` (from --set estimator.measure): \"vibes\" is not one of entropy, max-prob, energy, max-logit"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_plugin_that_does_not_exist_is_refused_by_name() {
    let (out, file) = check(&GOOD.replace("plugin = \"vanilla-kd\"", "plugin = \"vanila-kd\""), &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("`strategy.plugin` in {file}: no strategy named `vanila-kd`")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Did you mean `vanilla-kd`?"), "{}", out.stderr);
    // A component of the wrong kind is named as such.
    let (out, _) = check(&GOOD.replace("plugin = \"vanilla-kd\"", "plugin = \"entropy\""), &[]);
    assert!(out.stderr.contains("`entropy` is an estimator, not a strategy"), "{}", out.stderr);
}

#[test]
fn a_missing_required_parameter_and_a_missing_file_are_refused() {
    let (out, _) = check(&GOOD.replace("rows = [[2.0, -1.0]]", ""), &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains("`teachers.news.rows` is required by teacher `fixed-logits`"), "{}", out.stderr);
    let out = run(&mut workbench(&["config", "check", "no/such/file.toml"]));
    assert!(!out.ok);
    assert!(out.stderr.contains("config file no/such/file.toml does not exist"), "{}", out.stderr);
}

#[test]
fn run_without_data_is_refused_and_leaves_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), GOOD);
    let output = dir.path().join("runs");
    let out = run(&mut workbench(&["run", &file, "--set", &format!("output={}", output.display())]));
    assert!(!out.ok);
    assert!(out.stderr.contains("no [data] table: name the dataset the student learns from"), "{}", out.stderr);
    assert!(!output.join("two-teachers").exists(), "a run that fails before its first epoch leaves nothing");
    // The resolved config it would have written is what `config check` prints.
    let checked = run(&mut workbench(&["config", "check", "--print", &file]));
    assert!(checked.ok, "{}", checked.stderr);
    let written: toml::Table = checked.stdout.parse().unwrap();
    assert_eq!(written["seed"].as_integer(), Some(3));
    assert_eq!(written["strategy"]["temperature"].as_float(), Some(2.0));
}

#[test]
fn signals_a_teacher_cannot_provide_are_refused_at_check() {
    let dir = support::fixture_dir().to_str().unwrap().to_string();
    let frozen = r#"
[teachers.plain]
plugin = "frozen"
labels = ["a", "b"]

[estimator]
plugin = "mc-dropout"

[strategy]
plugin = "dfa"
"#;
    let (out, _) = check(frozen, &["--plugin-dir", &dir]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "estimator `mc-dropout` needs stochastic passes, but teacher `plain` (plugin `frozen`) cannot provide them"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("strategy `dfa` needs hidden states, but teacher `plain`"), "{}", out.stderr);
    // With the single-pass estimator and a logits-only strategy the same teacher is fine.
    let (out, _) =
        check(&frozen.replace("mc-dropout", "entropy").replace("\"dfa\"", "\"muka\""), &["--plugin-dir", &dir]);
    assert!(out.ok, "{}", out.stderr);
    // MUKA needs scores: without an estimator it is refused.
    let (out, _) = check(
        &frozen.replace("[estimator]\nplugin = \"mc-dropout\"\n", "").replace("\"dfa\"", "\"muka\""),
        &["--plugin-dir", &dir],
    );
    assert!(out.stderr.contains("strategy `muka` needs certainty scores: add an [estimator] table"), "{}", out.stderr);
}

const SWEEP: &str = r#"
[sweep]
seeds = [0, 1]

[[sweep.methods]]
name = "kd"
strategy = { plugin = "vanilla-kd", temprature = 2.0 }

[[sweep.methods]]
name = "muka"
strategy = { plugin = "muka" }
estimator = { plugin = "entropi" }

[[sweep.methods]]
name = "uhc"
strategy = { plugin = "uhc" }
"#;

#[test]
fn a_sweep_file_is_checked_method_by_method() {
    let base = GOOD.split("[estimator]").next().unwrap();
    let (out, _) = check(&format!("{base}{SWEEP}"), &[]);
    assert!(!out.ok);
    let problems: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    // The misspelt estimator is the one cause in `muka`: its strategy is not told to add one.
    assert_eq!(problems.len(), 2, "{}", out.stderr);
    assert!(problems[0].starts_with("  - method `kd`: `strategy.temprature` in "), "{}", out.stderr);
    assert!(problems[0].contains("did you mean `temperature`?"), "{}", out.stderr);
    assert!(problems[1].starts_with("  - method `muka`: `estimator.plugin` in "), "{}", out.stderr);
    assert!(problems[1].contains("no estimator named `entropi`"), "{}", out.stderr);

    let fixed = SWEEP.replace("temprature", "temperature").replace("entropi", "entropy");
    let (out, _) = check(&format!("{base}{fixed}"), &[]);
    assert!(out.ok, "{}", out.stderr);
    let methods: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("# method ")).collect();
    assert_eq!(methods, ["# method `kd`", "# method `muka`", "# method `uhc`"]);
    let first: toml::Table = out.stdout.split("# method `muka`").next().unwrap().parse().unwrap();
    assert_eq!(first["name"].as_str(), Some("kd-seed0"));
    assert_eq!(first["strategy"]["temperature"].as_float(), Some(2.0));

    let clash = fixed.replace("name = \"uhc\"", "name = \"KD\"");
    let (out, _) = check(&format!("{base}{clash}"), &[]);
    assert!(
        out.stderr.contains("`sweep.methods`: `kd` and `KD` would share the run directories `kd-seed*`; rename one"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_errors_cause_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    let text = format!("{GOOD}\n[data]\ndataset = \"files\"\ntrain = \"{0}\"\ntest = \"{0}\"\n", missing.display());
    let file = config(dir.path(), &text);
    let out = run(&mut workbench(&["run", &file]));
    assert!(!out.ok);
    // Refused before anything loads, each file once, naming the key and the config file.
    let problem = |key: &str| {
        format!(
            "  - `data.{key}` in {file} = {:?}: no such file (relative paths are read from the working directory)",
            missing.display().to_string()
        )
    };
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[lines.len() - 3..],
        ["error: configuration is invalid:".to_string(), problem("train"), problem("test")]
    );
    // The same in `config check`, which ends with its verdict.
    let checked = run(&mut workbench(&["config", "check", &file]));
    assert_eq!(checked.stderr.lines().last().unwrap(), format!("not ready: {file} cannot run as it is (2 problems)"));
    assert_eq!(checked.stderr.matches("missing.csv").count(), 2, "{}", checked.stderr);
}

#[test]
fn predict_prints_a_teachers_distribution_and_the_estimators_score_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), GOOD);
    let out = run(&mut workbench(&["predict", "--config", &file, "--teacher", "news", "--json", "any text"]));
    assert!(out.ok, "{}", out.stderr);
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    // softmax([2, -1]) = [1 / (1 + e^-3), e^-3 / (1 + e^-3)]; entropy certainty 1 - H / ln 2.
    let p = 1.0 / (1.0 + (-3.0f64).exp());
    let entropy = -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
    assert_eq!(line["probabilities"][0][0], "politics");
    assert!((line["probabilities"][0][1].as_f64().unwrap() - p).abs() < 1e-6, "{line}");
    assert!((line["score"].as_f64().unwrap() - (1.0 - entropy / 2f64.ln())).abs() < 1e-6, "{line}");
    let table = run(&mut workbench(&["predict", "--config", &file, "--teacher", "news", "some text"]));
    assert_eq!(table.stdout, "\"some text\"  (estimator score 0.7246)\n  politics  0.9526\n  sport     0.0474\n");
    let wrong = run(&mut workbench(&["predict", "--config", &file, "--teacher", "sports", "x"]));
    assert!(
        wrong.stderr.contains("the config has no teacher `sports`; its teachers: news, science"),
        "{}",
        wrong.stderr
    );
}

/// One path rule: `plugin_dirs` and `library` are read from the working directory like every
/// other path, not from the config file's directory.
#[test]
fn plugin_paths_are_read_from_the_working_directory_like_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let libs = dir.path().join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    let fixed = format!("{}workbench_fixed_teacher.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION);
    std::fs::copy(support::plugin_dir().join(&fixed), libs.join(&fixed)).unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    // Two plugins now offer `fixed-logits` (the workspace's and the copy): `library` picks one.
    let text = GOOD.replace("plugin = \"fixed-logits\"\n", "plugin = \"fixed-logits\"\nlibrary = \"libs\"\n");
    std::fs::write(dir.path().join("configs/experiment.toml"), format!("plugin_dirs = [\"libs\"]\n{text}")).unwrap();
    let check = |cwd: &Path, file: &str| run(workbench(&["config", "check", "--print", file]).current_dir(cwd));
    let out = check(dir.path(), "configs/experiment.toml");
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("library = \"libs\""), "{}", out.stdout);
    // From inside `configs/`, `libs` is configs/libs, which does not exist.
    let inside = check(&dir.path().join("configs"), "experiment.toml");
    assert!(
        inside.stderr.contains(
            "`teachers.news.plugin` in experiment.toml: no teacher named `fixed-logits` among the loaded plugins in \
             libs: `library` names no loaded plugin that provides it"
        ),
        "{}",
        inside.stderr
    );
}

/// `precision = "bf16"` on a `bert` teacher: its distribution stays within bf16 rounding of
/// fp32's (where the CPU has AVX512-BF16; elsewhere it is fp32's exactly), and a precision it
/// does not know is refused naming the choices.
#[test]
fn a_bf16_teacher_predicts_within_rounding_of_fp32_and_other_precisions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let roberta = support::repo_root().join("core/models/fixtures/parity/roberta");
    let text = format!(
        "[teachers.r]\nplugin = \"bert\"\ncheckpoints = [\"{}\"]\nmax_length = 16\n\n[strategy]\nplugin = \"vanilla-kd\"\n",
        roberta.display()
    );
    let file = config(dir.path(), &text);
    let predict = |precision: &str| {
        let set = format!("teachers.r.precision={precision}");
        run(&mut workbench(&[
            "predict",
            "--config",
            &file,
            "--teacher",
            "r",
            "--json",
            "--set",
            &set,
            "alpha beta gamma",
        ]))
    };
    let probabilities = |precision: &str| -> Vec<f64> {
        let out = predict(precision);
        assert!(out.ok, "{}", out.stderr);
        let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        line["probabilities"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect()
    };
    let (fp32, bf16) = (probabilities("fp32"), probabilities("bf16"));
    assert_eq!(fp32.len(), 3);
    for (a, b) in fp32.iter().zip(&bf16) {
        // 8 bits of mantissa per input of each product: about 1e-3 on these probabilities.
        assert!((a - b).abs() < 5e-3, "fp32 {fp32:?} against bf16 {bf16:?}");
    }
    let unknown = predict("fp16");
    assert!(
        unknown
            .stderr
            .contains("`teachers.r.precision` (from --set teachers.r.precision): \"fp16\" is not one of fp32, bf16"),
        "{}",
        unknown.stderr
    );
}

/// `cross_fit` is a key of the `[selector]` table (written out when set), refused elsewhere and
/// when not a boolean; `student.holdout_fold` names one fold of at least two.
#[test]
fn cross_fitting_keys_are_checked_where_they_belong() {
    let selector = GOOD.replace("[estimator]\nplugin = \"entropy\"\n", "")
        + "\n[selector]\nplugin = \"fixed-logits\"\nlabels = [\"politics\", \"space\"]\nrows = [[1, 0]]\ncross_fit = true\n";
    let (out, _) = check(&selector, &[]);
    assert!(out.ok, "{}", out.stderr);
    let resolved: toml::Table = out.stdout.parse().expect("the output is TOML");
    assert_eq!(resolved["selector"]["cross_fit"].as_bool(), Some(true));
    assert!(!out.stdout.contains("holdout_fold"), "absent unless set: {}", out.stdout);

    let (out, file) = check(&selector.replace("cross_fit = true", "cross_fit = \"yes\""), &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("`selector.cross_fit` in {file}: expected true or false, found string \"yes\"")),
        "{}",
        out.stderr
    );
    let (out, _) = check(GOOD, &["--set", "teachers.news.cross_fit=true"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "`teachers.news.cross_fit` (from --set teachers.news.cross_fit): a key of [selector] only (its members score the folds they were not trained on)"
        ),
        "{}",
        out.stderr
    );
    let (out, file) = check(&(GOOD.to_string() + "\n[student]\nholdout_fold = [2, 2]\n"), &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!(
            "`student.holdout_fold` in {file} = [2, 2]: [k, n] names fold k of n folds, from 0 to n - 1, with n at least 2"
        )),
        "{}",
        out.stderr
    );
}

/// A sweep method's `student` table changes the base `[student]` key by key: the folds of a
/// cross-fitted round are methods of one sweep.
#[test]
fn a_sweep_methods_student_table_changes_the_base_student_key_by_key() {
    let folds = |last: usize| {
        let methods: String = (0..=last)
            .map(|k| {
                format!(
                    "\n[[sweep.methods]]\nname = \"fold {k}\"\nstrategy = {{ plugin = \"vanilla-kd\" }}\nstudent = {{ holdout_fold = [{k}, 2] }}\n"
                )
            })
            .collect();
        GOOD.replace("[estimator]\nplugin = \"entropy\"\n", "")
            + "\n[student]\nepochs = 2\n\n[sweep]\nseeds = [0]\n"
            + &methods
    };
    let (out, _) = check(&folds(1), &[]);
    assert!(out.ok, "{}", out.stderr);
    let resolved: Vec<toml::Table> =
        out.stdout.split("# method ").skip(1).map(|m| m.split_once('\n').unwrap().1.parse().unwrap()).collect();
    for (k, method) in resolved.iter().enumerate() {
        assert_eq!(method["student"]["holdout_fold"].as_array().unwrap()[0].as_integer(), Some(k as i64));
        assert_eq!(method["student"]["epochs"].as_integer(), Some(2), "the base's other keys stay");
    }

    let (out, file) = check(&folds(2), &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!(
            "method `fold 2`: `student.holdout_fold` in {file} = [2, 2]: [k, n] names fold k of n folds, from 0 to n - 1, with n at least 2"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn check_ends_with_a_verdict_line_after_creating_every_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), GOOD);
    let out = run(&mut workbench(&["config", "check", &file]));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, format!("ok: {file} is a valid run `two-teachers` (4 components checked)\n"));
    // With --print the verdict follows the resolved config as a TOML comment.
    let printed = run(&mut workbench(&["config", "check", "--print", &file]));
    assert!(printed
        .stdout
        .ends_with(&format!("\n# ok: {file} is a valid run `two-teachers` (4 components checked)\n")));
}

#[test]
fn check_refuses_a_missing_checkpoint_and_a_model_type_the_encoder_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = dir.path().join("gpt2");
    std::fs::create_dir(&gpt2).unwrap();
    std::fs::write(gpt2.join("config.json"), r#"{"model_type": "gpt2", "vocab_size": 50257}"#).unwrap();
    let missing = dir.path().join("no/such/teacher");
    let text = format!(
        "[teachers.a]\nplugin = \"bert\"\ncheckpoints = [{missing:?}]\n\n[teachers.b]\nplugin = \"bert\"\n\
         checkpoints = [{gpt2:?}]\n\n[estimator]\nplugin = \"entropy\"\n\n[strategy]\nplugin = \"muka\"\n"
    );
    let file = config(dir.path(), &text);
    let out = run(&mut workbench(&["config", "check", &file]));
    assert!(!out.ok);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let bert = support::plugin_dir().join(format!(
        "{}workbench_bert_teacher{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let plugin =
        format!("plugin `workbench-bert-teacher` ({}) failed in create_teacher (component `bert`)", bert.display());
    assert_eq!(
        lines[lines.len() - 3..],
        [
            format!(
                "  - `teachers.a`: {plugin}: {}: not a checkpoint directory (it does not exist)",
                missing.display()
            ),
            format!(
                "  - `teachers.b`: {plugin}: {}: model_type `gpt2` is not supported by our encoder (supported: bert, \
                 roberta, xlm-roberta, distilbert); run it in PyTorch and join it as a `signals-file` teacher \
                 (scripts/write_signals.py, docs/signals.md)",
                gpt2.join("config.json").display()
            ),
            format!("not ready: {file} cannot run as it is (2 problems)"),
        ],
        "{}",
        out.stderr
    );
}

#[test]
fn a_table_given_with_set_replaces_the_table_of_the_file() {
    let sampled = GOOD.replace("plugin = \"entropy\"", "plugin = \"mc-dropout\"\npasses = 4");
    // Naming a new plugin key by key keeps the old parameters, which the new plugin refuses...
    let (out, file) = check(&sampled, &["--set", "estimator.plugin=entropy"]);
    assert!(!out.ok);
    assert!(out.stderr.contains(&format!("`estimator.passes` in {file}: unknown parameter of estimator `entropy`")));
    // ...a table replaces them; keys set after it refine it.
    let (out, _) =
        check(&sampled, &["--set", "estimator={ plugin = \"entropy\" }", "--set", "estimator.measure=max-prob"]);
    assert!(out.ok, "{}", out.stderr);
    let resolved: toml::Table = out.stdout.parse().unwrap();
    assert_eq!(resolved["estimator"]["plugin"].as_str(), Some("entropy"));
    assert_eq!(resolved["estimator"]["measure"].as_str(), Some("max-prob"));
    assert!(resolved["estimator"].get("passes").is_none(), "{resolved:?}");
}

#[test]
fn predict_reads_any_checkpoint_directory_over_its_own_labels() {
    // transformers' logits for these texts, committed with the tiny DistilBERT (scripts/compat.py).
    let fixture = support::repo_root().join("core/models/fixtures/parity/distilbert");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap()).unwrap();
    let texts = ["the hockey team won the game in overtime", "short"];
    let dir = fixture.to_str().unwrap();
    let out = run(&mut workbench(&["predict", "--model", dir, "--json", texts[0], texts[1]]));
    assert!(out.ok, "{}", out.stderr);
    for (line, row) in out.stdout.lines().zip([0, 3]) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let logits: Vec<f64> =
            expected["logits"][row].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let total: f64 = logits.iter().map(|l| l.exp()).sum();
        for pair in line["probabilities"].as_array().unwrap() {
            let label = pair[0].as_str().unwrap();
            let index = ["alpha", "beta", "gamma"].iter().position(|l| *l == label).unwrap();
            assert!((pair[1].as_f64().unwrap() - logits[index].exp() / total).abs() < 1e-5, "{line}");
        }
        assert!(line["score"].is_null());
    }
    let table = run(&mut workbench(&["predict", "--model", dir, "short"]));
    assert_eq!(table.stdout, "\"short\"\n  beta   0.8145\n  alpha  0.1785\n  gamma  0.0070\n");
    let neither = run(&mut workbench(&["predict", "short"]));
    assert!(neither.stderr.contains("the following required arguments were not provided"), "{}", neither.stderr);
}

#[test]
fn the_configuration_reference_in_the_docs_is_the_plugins_own() {
    let out = run(&mut workbench(&["-q", "plugins", "reference"]));
    assert!(out.ok, "{}", out.stderr);
    let docs = std::fs::read_to_string(support::repo_root().join("docs/configuration.md")).unwrap();
    let (_, rest) = docs.split_once("<!-- BEGIN plugins reference -->\n\n").unwrap();
    let (written, _) = rest.split_once("\n\n<!-- END plugins reference -->").unwrap();
    assert_eq!(
        written,
        out.stdout.trim_end(),
        "docs/configuration.md is out of date: run scripts/update-configuration-reference.sh"
    );
    // Every built-in component is there, with a parameter's default and range.
    for component in ["bert", "fixed-logits", "entropy", "mc-dropout", "mc-fitted", "ensemble", "muka", "uhc"] {
        assert!(written.contains(&format!("### `{component}` (")), "{component}");
    }
    assert!(written.contains("| `tau` | a number | `0.2` | 0.0001 ..= 100 | Softmax temperature over scores"));
}

#[test]
fn every_config_is_referenced_from_the_docs() {
    let root = support::repo_root();
    let docs: String = ["README.md", "RESULTS.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| root.join(f))
        .chain(std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut unreferenced = Vec::new();
    let mut folders = vec![root.join("configs")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let relative = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                if !docs.contains(&relative) {
                    unreferenced.push(relative);
                }
            }
        }
    }
    assert!(unreferenced.is_empty(), "configs no page of the docs names: {unreferenced:?}");
    assert!(!root.join("configs/quickstart.toml").exists(), "configs live in folders");
}

/// A write that fails part-way (here: the file-size limit, as a full disk would) leaves no
/// partial file beside its target and names the target.
#[test]
fn a_failed_write_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    support::write_four_topics(&dir.path().join("train.csv"), 40, 1);
    support::write_four_topics(&dir.path().join("test.csv"), 10, 2);
    let text = format!(
        "{GOOD}\n[data]\ndataset = \"files\"\ntrain = \"{}\"\ntest = \"{}\"\n",
        dir.path().join("train.csv").display(),
        dir.path().join("test.csv").display()
    );
    let file = config(dir.path(), &text);
    let out_file = dir.path().join("out/texts.jsonl");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let binary = workbench(&[]).get_program().to_owned();
    // With SIGXFSZ ignored, a write past `ulimit -f` (in 512-byte blocks) fails with EFBIG.
    let script = format!(
        "trap '' XFSZ; ulimit -f 2; exec {:?} texts {file:?} --out {:?}",
        binary.to_string_lossy(),
        out_file.display().to_string()
    );
    let out = run(std::process::Command::new("sh").args(["-c", &script]));
    assert!(!out.ok, "the write must fail: {}", out.stderr);
    assert!(out.stderr.contains(&format!("error: writing {}: File too large", out_file.display())), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

#[test]
fn resume_refuses_a_directory_that_is_not_a_stopped_run() {
    let dir = tempfile::tempdir().unwrap();
    support::write_four_topics(&dir.path().join("train.csv"), 10, 1);
    support::write_four_topics(&dir.path().join("test.csv"), 5, 2);
    let data = format!(
        "\n[data]\ndataset = \"files\"\ntrain = \"{}\"\ntest = \"{}\"\n",
        dir.path().join("train.csv").display(),
        dir.path().join("test.csv").display()
    );
    let fake = dir.path().join("two-teachers");
    std::fs::create_dir(&fake).unwrap();
    // A config.toml that names this directory, but no saved state: not a stopped run.
    std::fs::write(fake.join("config.toml"), format!("output = \"{}\"\n{GOOD}{data}", dir.path().display())).unwrap();
    let out = run(&mut workbench(&["run", "--resume", fake.to_str().unwrap()]));
    assert!(!out.ok);
    let expected = format!(
        "{0} holds no stopped run of the workbench (no saved training state in {0}/state): start it with `workbench run CONFIG`",
        fake.display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(!fake.join("report.md").exists() && !fake.join("student").exists(), "no new run was started");
    // One that names another run directory.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(fake.join("config.toml"), elsewhere.join("config.toml")).unwrap();
    let out = run(&mut workbench(&["run", "--resume", elsewhere.to_str().unwrap()]));
    let expected = format!(
        "{}/config.toml names the run directory {}, not {}: resume a run from its own directory",
        elsewhere.display(),
        fake.display(),
        elsewhere.display()
    );
    assert!(!out.ok && out.stderr.contains(&expected), "{}", out.stderr);
}

#[test]
fn a_new_plugin_may_not_take_the_name_of_a_component_there_is() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(&mut workbench(&["plugins", "new", "muka", "--kind", "strategy", "--path", dir.path().to_str().unwrap()]));
    assert!(!out.ok);
    let library = support::plugin_dir().join(format!(
        "{}workbench_strategies{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert_eq!(
        out.stderr.lines().last().unwrap(),
        format!(
            "error: `muka` is already the name of a component of plugin `workbench-strategies` ({}): a config could \
             not tell the two apart; choose another name",
            library.display()
        )
    );
    assert!(!dir.path().join("muka").exists());
}
