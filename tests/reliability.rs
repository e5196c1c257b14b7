//! Nothing silently wrong: bad inputs of every kind (config, data, checkpoint, plugin, run
//! directory) end with exit status 1, a message that names the cause, and nothing half-written;
//! a corrupt cache entry heals; a rebuilt plugin never serves stale signals; two runs that need
//! the same missing teacher train it once.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
};

use support::{experiment, fixture_dir, plugin_dir, run, workbench};

/// A world shared by the table's cases: data, two trained one-layer teachers, their cached
/// signals and one complete run `tiny`, made by a first good run.
struct World {
    dir: PathBuf,
    base: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let base = dir.join("base.toml");
        std::fs::write(&base, experiment(&dir, 1) + "[strategy]\nplugin = \"vanilla-kd\"\n").unwrap();
        let out = run(&mut workbench(&["run", base.to_str().unwrap()]));
        assert!(out.ok, "the first good run: {}", out.stderr);
        World { dir, base }
    })
}

/// Every path under `dir` except the signal cache and lock files, which a failed command may
/// legitimately leave (a cache entry computed before the failure is complete and correct).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().to_path_buf();
            if relative.starts_with("cache") || relative.to_string_lossy().ends_with(".lock") {
                continue;
            }
            if path.is_dir() {
                stack.push(path.clone());
            }
            paths.insert(relative);
        }
    }
    paths
}

/// One bad input: `setup` prepares files in the case's own directory and returns the
/// workbench arguments; the run must fail with `expected` in its message.
type Setup = Box<dyn Fn(&World, &Path) -> Vec<String>>;

struct Case {
    name: &'static str,
    setup: Setup,
    expected: String,
}

fn case(name: &'static str, expected: &str, setup: impl Fn(&World, &Path) -> Vec<String> + 'static) -> Case {
    Case { name, setup: Box::new(setup), expected: expected.to_string() }
}

/// `workbench run base.toml --set name=<case> --set ...`
fn run_with(sets: &[&str]) -> impl Fn(&World, &Path) -> Vec<String> + 'static {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    move |world, case_dir| {
        let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut args = vec!["run".into(), world.base.display().to_string(), "--set".into(), format!("name={name}")];
        for set in &sets {
            args.push("--set".into());
            args.push(set.replace("{case}", &case_dir.display().to_string()));
        }
        args
    }
}

/// A copy of the world's trained teacher `a` in the case directory, its config.json edited.
fn edited_teacher(world: &World, case_dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let copy = case_dir.join("teacher");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(world.dir.join("teacher-a")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = copy.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    copy
}

/// A run whose teacher `a` is the checkpoint `dir` as it is (no `teach` table).
fn run_with_checkpoint(world: &World, case_dir: &Path, dir: &Path) -> Vec<String> {
    let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
    let config = std::fs::read_to_string(&world.base).unwrap();
    let start = config.find("[teachers.a]").unwrap();
    let end = config[start..].find("[teachers.b]").unwrap() + start;
    let teacher =
        format!("[teachers.a]\nplugin = \"bert\"\ncheckpoints = [\"{}\"]\nmax_length = 16\n\n", dir.display());
    let path = case_dir.join("config.toml");
    std::fs::write(&path, format!("{}{teacher}{}", &config[..start], &config[end..])).unwrap();
    vec!["run".into(), path.display().to_string(), "--set".into(), format!("name={name}")]
}

fn write(path: &Path, contents: &str) -> String {
    std::fs::write(path, contents).unwrap();
    path.display().to_string()
}

/// A run reading its training data from `train` (and the world's test file).
fn run_on_train_file(file: &'static str, contents: &'static str) -> impl Fn(&World, &Path) -> Vec<String> + 'static {
    move |world, case_dir| {
        let train = write(&case_dir.join(file), contents);
        run_with(&[&format!("data.train={train}")])(world, case_dir)
    }
}

fn run_on_test_file(contents: &'static str) -> impl Fn(&World, &Path) -> Vec<String> + 'static {
    move |world, case_dir| {
        let test = write(&case_dir.join("test.csv"), contents);
        run_with(&[&format!("data.test={test}")])(world, case_dir)
    }
}

/// A run with an extra plugin directory (the purpose-built broken plugins) and `tables`
/// appended to the base config (later tables replace the base's).
fn run_with_plugins(tables: impl Into<String>) -> impl Fn(&World, &Path) -> Vec<String> + 'static {
    let tables = tables.into();
    move |world, case_dir| {
        let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
        let base = std::fs::read_to_string(&world.base).unwrap();
        let base = base.replace("[strategy]\nplugin = \"vanilla-kd\"\n", "");
        let config = format!("plugin_dirs = [\"{}\"]\n{base}{tables}", fixture_dir().display());
        let path = write(&case_dir.join("config.toml"), &config);
        vec!["run".into(), path, "--set".into(), format!("name={name}")]
    }
}

/// A run with the fixed-logits teacher `c` added.
fn run_with_fixed_teacher(params: &'static str) -> impl Fn(&World, &Path) -> Vec<String> + 'static {
    move |world, case_dir| {
        let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
        let config = std::fs::read_to_string(&world.base).unwrap()
            + &format!("\n[teachers.c]\nplugin = \"fixed-logits\"\n{params}\n");
        let path = write(&case_dir.join("config.toml"), &config);
        vec!["run".into(), path, "--set".into(), format!("name={name}")]
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // Student settings out of range, each named with its source.
        case("lr-nan", "`student.learning_rate` (from --set student.learning_rate) = NaN: must be a finite number above 0", run_with(&["student.learning_rate=nan"])),
        case("lr-negative", "`student.learning_rate` (from --set student.learning_rate) = -0.001: must be a finite number above 0", run_with(&["student.learning_rate=-1e-3"])),
        case("lr-zero", "= 0: must be a finite number above 0", run_with(&["student.learning_rate=0.0"])),
        case("lr-infinite", "= inf: must be a finite number above 0", run_with(&["student.learning_rate=inf"])),
        case("batch-zero", "`student.batch_size` (from --set student.batch_size) = 0: must be at least 1", run_with(&["student.batch_size=0"])),
        case("epochs-zero", "`student.epochs` (from --set student.epochs) = 0: must be at least 1", run_with(&["student.epochs=0"])),
        case("max-length-one", "`student.max_length` (from --set student.max_length) = 1: must be at least 2", run_with(&["student.max_length=1"])),
        case("layers-zero", "`student.layers` (from --set student.layers) = 0: keep at least 1 encoder layer", run_with(&["student.layers=0"])),
        case("layers-too-many", "`student.layers` = 99: the model has 6 encoder layers", run_with(&["student.layers=99"])),
        case("max-length-too-long", "`student.max_length` = 4096: the model has room for 512 tokens", run_with(&["student.max_length=4096"])),
        case("warmup-above-one", "`student.warmup` (from --set student.warmup) = 1.5: a share of the steps, from 0 to 1", run_with(&["student.warmup=1.5"])),
        case("weight-decay-negative", "`student.weight_decay` (from --set student.weight_decay) = -1: must be a finite number >= 0", run_with(&["student.weight_decay=-1.0"])),
        case("grad-norm-zero", "`student.max_grad_norm` (from --set student.max_grad_norm) = 0: must be a finite number above 0", run_with(&["student.max_grad_norm=0.0"])),
        case("student-labels", "`student.labels` (from --set student.labels): unknown key; did you mean `layers`? known keys: model, layers, epochs", run_with(&["student.labels=[\"sport\"]"])),
        case("student-block", "`student.block` (from --set student.block): unknown key", run_with(&["student.block=[0, 2]"])),
        case("student-output", "`student.output` (from --set student.output): unknown key", run_with(&["student.output=elsewhere"])),
        case("student-unknown-key", "unknown key; did you mean `learning_rate`?", run_with(&["student.learningrate=0.1"])),
        case("student-wrong-type", "`student.epochs`", run_with(&["student.epochs=\"three\""])),
        case("holdout-fold-one-fold", "`student.holdout_fold` (from --set student.holdout_fold) = [0, 1]: [k, n] names fold k of n folds, from 0 to n - 1, with n at least 2", run_with(&["student.holdout_fold=[0, 1]"])),
        // Data settings.
        case("validation-fraction-two", "`data.validation_fraction` (from --set data.validation_fraction) = 2: a share of train, at least 0 and below 1", run_with(&["data.validation_fraction=2.0"])),
        case("validation-fraction-one", "`data.validation_fraction` (from --set data.validation_fraction) = 1: a share of train", run_with(&["data.validation_fraction=1.0"])),
        case("validation-fraction-negative", "= -0.1: a share of train", run_with(&["data.validation_fraction=-0.1"])),
        case("test-fraction-zero", "`data.test_fraction` (from --set data.test_fraction) = 0: a share of the data, above 0 and below 1", run_with(&["data.test_fraction=0.0"])),
        case("per-class-zero", "`data.per_class` (from --set data.per_class) = 0: keep at least 1 example per class", run_with(&["data.per_class=0"])),
        case("test-per-class-zero", "`data.test_per_class` (from --set data.test_per_class) = 0", run_with(&["data.test_per_class=0"])),
        case("max-chars-zero", "`data.max_chars` (from --set data.max_chars) = 0", run_with(&["data.max_chars=0"])),
        case("unknown-dataset", "`data.dataset` = \"nope\": use 20newsgroups, r8, bbc or files", run_with(&["data.dataset=nope"])),
        // Teacher training tables.
        case("teach-lr-negative", "`teachers.a.teach.learning_rate` (from --set teachers.a.teach.learning_rate) = -1: must be a finite number above 0", run_with(&["teachers.a.teach.learning_rate=-1.0"])),
        case("teach-epochs-zero", "`teachers.b.teach.epochs` (from --set teachers.b.teach.epochs) = 0: must be at least 1", run_with(&["teachers.b.teach.epochs=0"])),
        case("teach-layers-too-many", "`teachers.a.teach.layers` = 99: the model has 6 encoder layers", run_with(&["teachers.a.teach.layers=99"])),
        case("teach-max-length-too-long", "`teachers.b.teach.max_length` = 100000: the model has room for 512 tokens", run_with(&["teachers.b.teach.max_length=100000"])),
        case("teach-changed-recipe", "`teachers.a.teach` no longer describes the teacher in", run_with(&["teachers.a.teach.epochs=3"])),
        case("teach-changed-labels", "it differs in labels (science, sport then, sport, politics now)", run_with(&["teachers.a.teach.labels=[\"sport\", \"politics\"]"])),
        case(
            "teach-unknown-key",
            "`teachers.a.teach.epohcs` (from --set teachers.a.teach.epohcs) = unknown key; did you mean `epochs`?",
            run_with(&["teachers.a.teach.epohcs=3"]),
        ),
        case("teach-holdout-fold", "`teachers.a.teach.holdout_fold` (from --set teachers.a.teach.holdout_fold) = a student's key: a teacher learns from all its training texts", run_with(&["teachers.a.teach.holdout_fold=[0, 2]"])),
        case("teach-unknown-label", "`teachers.a.teach.labels`: [\"chess\"] not in the training data", run_with(&["teachers.a.teach.labels=[\"chess\", \"sport\"]"])),
        // Run names.
        case("name-parent", "`name` (from --set name) = \"../escape\": a run name is one directory name", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("name=../escape".into()); a }),
        case("name-nested", "\"a/b\": a run name is one directory name under `output` (no `/`, `\\` or `..`)", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("name=a/b".into()); a }),
        case("name-absolute", "\"/tmp/escape\": a run name is one directory name", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("name=/tmp/escape".into()); a }),
        case("name-dots", "\"..\": a run name is one directory name", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("name=..".into()); a }),
        case("name-empty", "\"\": a run needs a name", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("name=".into()); a }),
        // Components and their parameters.
        case("unknown-strategy", "no strategy named `vanila-kd` among the loaded plugins. Did you mean `vanilla-kd`?", run_with(&["strategy.plugin=vanila-kd"])),
        case("unknown-parameter", "`strategy.temprature` (from --set strategy.temprature): unknown parameter of strategy `vanilla-kd`; did you mean `temperature`?", run_with(&["strategy.temprature=2.0"])),
        case("parameter-wrong-kind", "`strategy.temperature` (from --set strategy.temperature): expected a number", run_with(&["strategy.temperature=\"hot\""])),
        case("muka-without-estimator", "strategy `muka` needs certainty scores: add an [estimator] table", run_with(&["strategy.plugin=muka"])),
        case("estimator-passes-zero", "`estimator.passes` (from --set estimator.passes)", run_with(&["estimator.plugin=mc-dropout", "estimator.passes=0"])),
        case("fitted-bags-zero", "`estimator.bags` (from --set estimator.bags): 0 is below the minimum 1", run_with(&["estimator.plugin=mc-fitted", "estimator.bags=0"])),
        case("teacher-without-plugin", "`teachers.z.plugin` (from --set teachers.z.max_length): missing; name the teacher plugin to use", run_with(&["teachers.z.max_length=3"])),
        case("set-without-equals", "--set `student.epochs`: expected KEY=VALUE", |w, d| { let mut a = run_with(&[])(w, d); a.push("--set".into()); a.push("student.epochs".into()); a }),
        case("config-file-missing", "does-not-exist.toml does not exist", |_, d| vec!["run".into(), d.join("does-not-exist.toml").display().to_string()]),
        case("output-is-a-file", "creating run directory", |w, d| { let file = write(&d.join("file"), "x"); run_with(&[&format!("output={file}")])(w, d) }),
        // Data files.
        case("train-file-missing", "/missing.csv\": no such file (relative paths are read from the working directory)", run_with(&["data.train={case}/missing.csv"])),
        case("train-header-only", "the train split of", run_on_train_file("train.csv", "text,label\n")),
        case("test-header-only", "the test split of", run_on_test_file("text,label\n")),
        case("train-no-text-column", "train.csv, line 1: no column `text` (columns: body, label)", run_on_train_file("train.csv", "body,label\nx,sport\n")),
        case("train-one-class", "has one class only (`sport`, 4 rows): a classifier needs at least 2", run_on_train_file("train.csv", "text,label\na b,sport\nc d,sport\ne f,sport\ng h,sport\n")),
        case("train-bad-json-line", "train.jsonl, line 2: not a JSON object", run_on_train_file("train.jsonl", "{\"text\": \"a\", \"label\": \"sport\"}\nnot json\n")),
        case("train-txt-without-labels", "train.txt: a .txt file holds texts only (one per line), without labels", run_on_train_file("train.txt", "x\n")),
        case("train-unknown-extension", "train.xlsx: unknown extension `.xlsx`: use .csv, .tsv, .jsonl, .parquet or .arrow", run_on_train_file("train.xlsx", "x\n")),
        case("train-ragged-csv", "train.csv", run_on_train_file("train.csv", "text,label\na,sport,extra\n")),
        case("labels-of-no-teacher", "not in the training data", run_on_train_file("train.csv", "text,label\na b,x\nc d,y\ne f,x\ng h,y\n")),
        // Checkpoints.
        case("id2label-duplicate", "config.json: id2label names `sport` twice (classes 0 and 1)", |w, d| {
            let dir = edited_teacher(w, d, |c| { c["id2label"] = serde_json::json!({"0": "sport", "1": "sport"}); c["label2id"] = serde_json::Value::Null; });
            run_with_checkpoint(w, d, &dir)
        }),
        case("id2label-gap", "config.json: id2label has no class 1", |w, d| {
            let dir = edited_teacher(w, d, |c| { c["id2label"] = serde_json::json!({"0": "science", "2": "sport"}); c["label2id"] = serde_json::Value::Null; });
            run_with_checkpoint(w, d, &dir)
        }),
        case("label2id-contradicts", "label2id gives `science` class 1, but id2label gives it class 0", |w, d| {
            let dir = edited_teacher(w, d, |c| { c["label2id"] = serde_json::json!({"science": 1, "sport": 0}); });
            run_with_checkpoint(w, d, &dir)
        }),
        case("config-json-broken", "config.json: not a JSON object of settings", |w, d| {
            let dir = edited_teacher(w, d, |_| {});
            std::fs::write(dir.join("config.json"), "{ not json").unwrap();
            run_with_checkpoint(w, d, &dir)
        }),
        case("checkpoint-missing", "not a checkpoint directory (it does not exist)", |w, d| run_with_checkpoint(w, d, &d.join("nowhere"))),
        case("checkpoint-half-trained", "holds a teacher whose training never completed (metrics.jsonl without teach.json)", |w, d| {
            let dir = edited_teacher(w, d, |_| {});
            std::fs::remove_file(dir.join("teach.json")).unwrap();
            run_with_checkpoint(w, d, &dir)
        }),
        case("teacher-record-corrupt", "teach.json: not a teacher record of this workbench", |w, d| {
            let dir = edited_teacher(w, d, |_| {});
            std::fs::write(dir.join("teach.json"), "{}").unwrap();
            run_with(&[&format!("teachers.a.checkpoints=[\"{}\"]", dir.display())])(w, d)
        }),
        // Plugins.
        case("plugin-panics", "plugin `broken-panicking`", run_with_plugins("[strategy]\nplugin = \"panicky\"\n")),
        case("plugin-nan-target", "returned an invalid result from Strategy::recipe", run_with_plugins("[strategy]\nplugin = \"faulty\"\nfault = \"nan\"\n")),
        case("plugin-wrong-shape", "returned an invalid result from Strategy::recipe", run_with_plugins("[strategy]\nplugin = \"faulty\"\nfault = \"shape\"\n")),
        case("teacher-cannot-sample", "needs stochastic passes, but teacher", run_with_plugins("[teachers.c]\nplugin = \"frozen\"\nlabels = [\"chess\", \"go\"]\n[estimator]\nplugin = \"mc-dropout\"\n[strategy]\nplugin = \"muka\"\n")),
        case("teacher-no-labels", "returned an invalid result from Teacher::info (component `fixed-logits`): the teacher declares no labels", run_with_fixed_teacher("labels = []\nrows = [[]]")),
        case("teacher-repeated-label", "the teacher declares the label `chess` twice", run_with_fixed_teacher("labels = [\"chess\", \"chess\"]\nrows = [[1.0, 2.0]]")),
        case("component-ambiguous", "2 plugins provide a teacher named `fixed-logits`", |w, d| {
            let copy = private_fixed_teacher(d);
            let mut args = run_with_fixed_teacher("labels = [\"chess\", \"go\"]\nrows = [[1.0, 2.0]]")(w, d);
            let config = std::fs::read_to_string(&args[1]).unwrap();
            let config = format!("plugin_dirs = [\"{}\"]\n{config}", copy.parent().unwrap().display());
            args[1] = write(&d.join("ambiguous.toml"), &config);
            args
        }),
        case("library-without-component", "`library` names no loaded plugin that provides it", run_with_fixed_teacher("library = \"/nowhere\"\nlabels = [\"chess\", \"go\"]\nrows = [[1.0, 2.0]]")),
        case("plugin-pin-mismatch", "not the pinned deadbeef: the library changed since it was pinned", run_with(&["plugin_sha256.workbench-bert-teacher=deadbeef"])),
        case("plugin-pin-unknown", "`plugin_sha256.nope` (from --set plugin_sha256.nope): no plugin named `nope` is loaded", run_with(&["plugin_sha256.nope=deadbeef"])),
        // Run directories.
        case("run-complete", "is already complete; choose another `name` or remove it", |w, _| vec!["run".into(), w.base.display().to_string()]),
        case("run-stopped", "holds a stopped run; continue it with `workbench run --resume", |w, d| {
            let args = run_with(&[])(w, d);
            stopped_run(w, d);
            args
        }),
        case("resume-changed-config", "its config differs in `student.epochs` (1 then, 5 now)", |w, d| {
            let dir = stopped_run(w, d);
            vec!["run".into(), "--resume".into(), dir.display().to_string(), "--set".into(), "student.epochs=5".into()]
        }),
    ];
    cases.push(case("run-in-use", "error: busy: run ", |w, d| {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let dir = w.dir.join("runs").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        lock.try_lock().unwrap();
        // Held until the process exits: the case's command runs while it is held.
        std::mem::forget(lock);
        run_with(&[])(w, d)
    }));
    cases
}

/// A run directory named after the case holding a stopped run: the resolved config and the
/// state after one epoch.
fn stopped_run(world: &World, case_dir: &Path) -> PathBuf {
    let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
    let resolved = run(&mut workbench(&[
        "config",
        "check",
        "--print",
        world.base.to_str().unwrap(),
        "--set",
        &format!("name={name}"),
    ]));
    assert!(resolved.ok, "{}", resolved.stderr);
    let dir = world.dir.join("runs").join(&name);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("config.toml"), resolved.stdout).unwrap();
    std::fs::write(
        dir.join("state/state.json"),
        r#"{"epochs_done": 1, "step": 10, "best_epoch": 1, "best_validation_accuracy": 0.5, "epochs": []}"#,
    )
    .unwrap();
    dir
}

#[test]
fn every_bad_input_fails_naming_its_cause_and_leaves_nothing_half_written() {
    let world = world();
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let case_dir = world.dir.join("cases").join(case.name);
        std::fs::create_dir_all(&case_dir).unwrap();
        let args = (case.setup)(world, &case_dir);
        let before = tree(&world.dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = workbench(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let after = tree(&world.dir);
        let mut problems = Vec::new();
        if output.status.code() != Some(1) {
            problems.push(format!("exit status {:?}, not 1", output.status.code()));
        }
        if !stderr.contains(&case.expected) {
            problems.push(format!("message lacks {:?}", case.expected));
        }
        let added: Vec<&PathBuf> = after.difference(&before).collect();
        if !added.is_empty() {
            problems.push(format!("left behind {added:?}"));
        }
        if stderr.contains("panicked") && !case.name.starts_with("plugin-panics") {
            problems.push("a panic".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n--- stderr:\n{stderr}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Each signal of a run's manifest: (teacher, split, plan) and whether it was computed.
fn provenance(run_dir: &Path) -> Vec<(String, bool)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap()).unwrap();
    manifest["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (format!("{} {} {}", s["teacher"], s["split"], s["plan"]), s["provenance"] == "computed"))
        .collect()
}

fn results(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn a_corrupt_cache_entry_is_named_removed_and_computed_again() {
    let world = world();
    let entries: Vec<PathBuf> = std::fs::read_dir(world.dir.join("cache/signals"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    assert!(!entries.is_empty());
    let copy = tempfile::tempdir().unwrap();
    // Corrupt a copy of the world's cache, so that other tests keep theirs.
    let cache = copy.path().join("cache");
    std::fs::create_dir_all(cache.join("signals")).unwrap();
    std::os::unix::fs::symlink(world.dir.join("cache/assets"), cache.join("assets")).unwrap();
    for entry in &entries {
        std::fs::copy(entry, cache.join("signals").join(entry.file_name().unwrap())).unwrap();
    }
    for entry in std::fs::read_dir(cache.join("signals")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    // Its run goes outside the world, whose tree the bad-input test watches.
    let out = run(&mut workbench(&[
        "run",
        world.base.to_str().unwrap(),
        "--set",
        "name=healed",
        "--set",
        &format!("cache={}", cache.display()),
        "--set",
        &format!("output={}", copy.path().join("runs").display()),
    ]));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("removing a corrupt cache entry"), "{}", out.stderr);
    let healed = copy.path().join("runs/healed");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(healed.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["assets"]["minilm"].as_str().map(str::len), Some(64), "the asset's record hash: {manifest}");
    assert!(provenance(&healed).iter().all(|(_, computed)| *computed), "every entry recomputed");
    let tiny = world.dir.join("runs/tiny");
    for part in ["student", "teacher_concat", "teachers", "selection"] {
        assert_eq!(results(&healed)[part], results(&tiny)[part], "the same results as from the intact cache: {part}");
    }
}

/// The fixed-logits plugin library, copied into a directory of its own.
fn private_fixed_teacher(dir: &Path) -> PathBuf {
    let name = format!("{}workbench_fixed_teacher.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_dir().join(&name), plugins.join(&name)).unwrap();
    plugins.join(name)
}

#[test]
fn a_rebuilt_teacher_plugin_never_serves_the_old_signals() {
    let dir = tempfile::tempdir().unwrap();
    let library = private_fixed_teacher(dir.path());
    support::write_csv(&dir.path().join("train.csv"), 20, 1);
    support::write_csv(&dir.path().join("test.csv"), 10, 2);
    let config = dir.path().join("fixed.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"fixed\"\noutput = \"{out}\"\ncache = \"{cache}\"\nplugin_dirs = [\"{plugins}\"]\n\
             [data]\ndataset = \"files\"\ntrain = \"{dir}/train.csv\"\ntest = \"{dir}/test.csv\"\n\
             [student]\nlayers = 1\nepochs = 1\nmax_length = 16\n\
             [teachers.a]\nplugin = \"fixed-logits\"\nlibrary = \"{plugins}\"\nlabels = [\"sport\"]\nrows = [[1.0]]\n\
             [teachers.b]\nplugin = \"fixed-logits\"\nlibrary = \"{plugins}\"\nlabels = [\"science\"]\nrows = [[2.0]]\n\
             [strategy]\nplugin = \"vanilla-kd\"\n",
            out = dir.path().join("runs").display(),
            cache = dir.path().join("cache").display(),
            plugins = library.parent().unwrap().display(),
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    std::os::unix::fs::symlink(
        workbench::assets::cache_dir(None).join("assets"),
        dir.path().join("cache").join("assets"),
    )
    .unwrap();
    let computed = |name: &str| {
        let out = run(&mut workbench(&["run", config.to_str().unwrap(), "--set", &format!("name={name}")]));
        assert!(out.ok, "{}", out.stderr);
        provenance(&dir.path().join("runs").join(name)).iter().filter(|(_, c)| *c).count()
    };
    assert_eq!(computed("first"), 4, "two teachers on two splits");
    assert_eq!(computed("same-plugin"), 0, "the same library: every signal from the cache");
    // A rebuild changes the library's bytes; appended bytes stand for one here (the loader
    // ignores them, the hash does not).
    let mut bytes = std::fs::read(&library).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&library, bytes).unwrap();
    assert_eq!(computed("rebuilt"), 4, "a changed library: every signal computed again");
}

#[test]
fn two_runs_that_need_the_same_missing_teacher_train_it_once_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("both.toml");
    std::fs::write(&config, experiment(dir.path(), 1) + "[strategy]\nplugin = \"vanilla-kd\"\n").unwrap();
    let start = |name: &str| {
        workbench(&["run", config.to_str().unwrap(), "--set", &format!("name={name}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (start("first"), start("second"));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let runs = dir.path().join("runs");
    assert_eq!(results(&runs.join("first"))["student"], results(&runs.join("second"))["student"]);
    // Each teacher was trained by one process (one record, no leftover partial directory) and
    // each signal computed by one run.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for teacher in ["teacher-a", "teacher-b"] {
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(teacher).join("teach.json")).unwrap())
                .unwrap();
        assert_eq!(record["outcome"]["epochs"].as_array().unwrap().len(), 2, "{teacher}: one training of 2 epochs");
    }
    let mut computed = BTreeSet::new();
    for name in ["first", "second"] {
        for (signal, was_computed) in provenance(&runs.join(name)) {
            if was_computed {
                assert!(computed.insert(signal.clone()), "{signal} computed by both runs");
            }
        }
    }
    assert_eq!(computed.len(), 4, "{computed:?}");
    let entries = std::fs::read_dir(dir.path().join("cache/signals"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "safetensors"))
        .count();
    assert_eq!(entries, 4, "one cache entry per teacher and split");
}

#[test]
fn a_teacher_killed_after_an_epoch_is_never_used_and_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::teach_config(dir.path(), "labels = [\"science\", \"sport\"]");
    let teacher = dir.path().join("teacher");
    killed_at("epoch-saved", &["teach", config.to_str().unwrap()]);
    assert!(!teacher.exists(), "a killed training publishes nothing");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("teacher.partial/state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["epochs_done"], 1, "killed after its first epoch was saved");
    let again = run(&mut workbench(&["teach", config.to_str().unwrap()]));
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stderr.contains("resuming training"), "{}", again.stderr);
    assert!(!dir.path().join("teacher.partial").exists() && !teacher.join("state").exists());
    let whole_dir = tempfile::tempdir().unwrap();
    let whole_config = support::teach_config(whole_dir.path(), "labels = [\"science\", \"sport\"]");
    let whole = run(&mut workbench(&["teach", whole_config.to_str().unwrap()]));
    assert!(whole.ok, "{}", whole.stderr);
    assert_eq!(
        std::fs::read(teacher.join("model.safetensors")).unwrap(),
        std::fs::read(whole_dir.path().join("teacher/model.safetensors")).unwrap(),
        "bit-identical to an uninterrupted training"
    );
    let metrics = |dir: &Path| std::fs::read_to_string(dir.join("teacher/metrics.jsonl")).unwrap();
    let losses = |text: String| -> Vec<String> {
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"].to_string()).collect()
    };
    assert_eq!(losses(metrics(dir.path())), losses(metrics(whole_dir.path())));
}

/// The test hook that aborts the workbench at a named point, as a kill there would.
const KILL_AT: &str = "KILL_WORKBENCH_AT";

/// Runs `args` with the process aborted at `point`; checks that it died there.
fn killed_at(point: &str, args: &[&str]) {
    let out = workbench(args).env(KILL_AT, point).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), None, "killed (by a signal) at {point}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn runs_killed_at_each_critical_point_resume_to_the_results_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kill.toml");
    let mc = "[strategy]\nplugin = \"muka\"\n[estimator]\nplugin = \"mc-dropout\"\npasses = 3\n";
    std::fs::write(&config, experiment(dir.path(), 2) + mc).unwrap();
    let config = config.to_str().unwrap();
    let whole = run(&mut workbench(&["run", config, "--set", "name=whole"]));
    assert!(whole.ok, "{}", whole.stderr);
    let fresh_cache = |name: &str| {
        let cache = dir.path().join(format!("cache-{name}"));
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(dir.path().join("cache/assets"), cache.join("assets")).unwrap();
        format!("cache={}", cache.display())
    };
    // (point, extra settings that make the point reachable: a missing teacher, an empty cache)
    let scenarios = [
        ("epoch-saved", vec![format!("teachers.a.checkpoints=[\"{}/teacher-a-again\"]", dir.path().display())]),
        ("signal-written", vec![fresh_cache("signals")]),
        ("training-step", Vec::new()),
        ("state-save", Vec::new()),
    ];
    for (point, sets) in scenarios {
        let mut args = vec!["run".to_string(), config.to_string(), "--set".into(), format!("name={point}")];
        for set in &sets {
            args.extend(["--set".to_string(), set.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        killed_at(point, &args);
        let run_dir = dir.path().join("runs").join(point);
        let stopped = ["state", "state.old"].iter().any(|d| run_dir.join(d).join("state.json").is_file());
        let resumed = if stopped {
            run(&mut workbench(&["run", "--resume", run_dir.to_str().unwrap()]))
        } else {
            run(&mut workbench(&args))
        };
        assert!(resumed.ok, "{point}: {}", resumed.stderr);
        for state in ["state", "state.old", "state.partial"] {
            assert!(!run_dir.join(state).exists(), "{point}: a complete run keeps no {state}");
        }
        let (got, want) = (results(&run_dir), results(&dir.path().join("runs/whole")));
        for part in ["student", "teacher_concat", "teachers", "selection", "coverage", "best_epoch"] {
            assert_eq!(got[part], want[part], "{point}: the same {part} as the uninterrupted run");
        }
        let metrics = |run: &Path| std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let losses = |text: String| -> Vec<String> {
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"].to_string())
                .collect()
        };
        assert_eq!(losses(metrics(&run_dir)), losses(metrics(&dir.path().join("runs/whole"))), "{point}: losses");
    }
    let partial: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".partial"))
        .collect();
    assert!(partial.is_empty(), "the killed teacher resumed and was published: {partial:?}");
}

#[test]
fn a_sweep_killed_after_its_first_run_completes_the_rest_to_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let sweep =
        "[sweep]\nseeds = [0]\n[[sweep.methods]]\nname = \"vanilla-kd\"\nstrategy = { plugin = \"vanilla-kd\" }\n\
                 [[sweep.methods]]\nname = \"uhc\"\nstrategy = { plugin = \"uhc\" }\n";
    let config = dir.path().join("sweep.toml");
    std::fs::write(&config, experiment(dir.path(), 1) + sweep).unwrap();
    let whole = run(&mut workbench(&["sweep", config.to_str().unwrap(), "--set", "name=whole"]));
    assert!(whole.ok, "{}", whole.stderr);
    killed_at("run-complete", &["sweep", config.to_str().unwrap(), "--set", "name=killed"]);
    let killed = dir.path().join("runs/killed");
    assert!(
        killed.join("vanilla-kd-seed0/report.md").is_file() && !killed.join("uhc-seed0").join("report.md").exists()
    );
    let again = run(&mut workbench(&["sweep", config.to_str().unwrap(), "--set", "name=killed"]));
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stdout.contains("2 runs (1 already complete)"), "{}", again.stdout);
    let table =
        |name: &str| std::fs::read_to_string(dir.path().join("runs").join(name).join("comparison.csv")).unwrap();
    assert_eq!(table("killed"), table("whole"));
}

#[test]
fn isolated_plugins_contain_an_abort_in_the_handshake() {
    let plugins = fixture_dir().to_str().unwrap();
    let out =
        run(workbench(&["--isolate-plugins", "--plugin-dir", plugins, "plugins", "list"])
            .env("ABORT_IN_HANDSHAKE", "1"));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("libbroken_aborting_handshake.so: its worker process was killed by signal 6 (SIGABRT: it aborted) during loading the library"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("aborting      strategy") && out.stdout.contains("vanilla-kd"), "{}", out.stdout);
}

#[test]
fn an_isolated_plugin_that_aborts_hangs_or_scribbles_fails_its_call_naming_plugin_and_call() {
    let world = world();
    // Garbage in the frame channel reads as a frame length: refused, not allocated.
    let scribbled = format!(
        "failed in Strategy::recipe (component `scribbling`): its worker process wrote a frame of {} bytes, more \
         than the limit of 1073741824: not a frame of this protocol during Strategy::recipe, and was stopped",
        u64::from_le_bytes(*b"garbage!")
    );
    for (strategy, extra, expected) in [
        ("aborting", None, "plugin `broken-misbehaving` ("),
        ("aborting", None, "failed in Strategy::recipe (component `aborting`): its worker process was killed by signal 6 (SIGABRT: it aborted) during Strategy::recipe"),
        ("hanging", Some("2"), "failed in Strategy::recipe (component `hanging`): its worker process did not answer Strategy::recipe within 2 s and was stopped"),
        ("scribbling", Some("60"), scribbled.as_str()),
    ] {
        // Outside the world, whose tree the bad-input test watches.
        let private = tempfile::tempdir().unwrap();
        let case_dir = private.path().join(format!("isolated-{strategy}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let tables = format!("[strategy]\nplugin = \"{strategy}\"\n");
        let mut args = run_with_plugins(tables)(world, &case_dir);
        args.extend(["--set".to_string(), format!("output={}", private.path().join("runs").display())]);
        // No flag: a plugin library outside the workbench's own directory runs isolated by default.
        if let Some(seconds) = extra {
            args.splice(0..0, ["--plugin-timeout".to_string(), seconds.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let out = run(&mut workbench(&args));
        assert!(!out.ok, "{strategy} must fail");
        assert!(out.stderr.contains(expected), "{strategy}: {}", out.stderr);
        assert!(started.elapsed().as_secs() < 120, "{strategy}: took {:?}", started.elapsed());
    }
}

#[test]
fn an_isolated_run_ends_with_the_results_of_one_in_process() {
    let world = world();
    let private = tempfile::tempdir().unwrap();
    let output = format!("output={}", private.path().display());
    let base = world.base.to_str().unwrap();
    let out = run(&mut workbench(&["--isolate-plugins", "run", base, "--set", "name=isolated", "--set", &output]));
    assert!(out.ok, "{}", out.stderr);
    let (isolated, tiny) = (results(&private.path().join("isolated")), results(&world.dir.join("runs/tiny")));
    for part in ["student", "teacher_concat", "teachers", "selection", "coverage"] {
        assert_eq!(isolated[part], tiny[part], "{part}");
    }
}

#[test]
fn weights_signals_and_results_are_written_with_the_users_umask_not_privately() {
    use std::os::unix::fs::PermissionsExt;
    let world = world();
    let signals = std::fs::read_dir(world.dir.join("cache/signals"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .expect("a cached signal");
    let files = [
        world.dir.join("teacher-a/model.safetensors"),
        world.dir.join("teacher-a/teach.json"),
        world.dir.join("runs/tiny/student/model.safetensors"),
        world.dir.join("runs/tiny/results.json"),
        signals,
    ];
    // A plain new file shows what the umask allows (0644 under the usual 022); candle's own
    // writer gave 0600 whatever the umask.
    let reference = tempfile::tempdir().unwrap();
    std::fs::write(reference.path().join("plain"), "x").unwrap();
    let expected = std::fs::metadata(reference.path().join("plain")).unwrap().permissions().mode() & 0o777;
    for file in files {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "{}: mode {mode:o}", file.display());
    }
}
