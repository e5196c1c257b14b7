//! `workbench sweep` and `workbench run --resume` end to end on a tiny truncated model and a few
//! hundred examples, through the real plugins.

mod support;

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use support::{experiment, run, workbench};

const SWEEP: &str = r#"
[sweep]
seeds = [0, 1]

[[sweep.methods]]
name = "vanilla-kd"
strategy = { plugin = "vanilla-kd" }

[[sweep.methods]]
name = "uhc"
strategy = { plugin = "uhc" }

[[sweep.methods]]
name = "muka"
strategy = { plugin = "muka" }
estimator = { plugin = "mc-dropout", passes = 4 }
"#;

fn manifests(runs: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(runs).unwrap() {
        let manifest = entry.unwrap().path().join("manifest.json");
        if manifest.is_file() {
            out.push(serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap());
        }
    }
    out
}

#[test]
fn a_sweep_over_three_methods_and_two_seeds_shares_teacher_signals() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sweep.toml");
    std::fs::write(&config, experiment(dir.path(), 1) + SWEEP).unwrap();
    let early = run(&mut workbench(&["sweep", "--timings", config.to_str().unwrap()]));
    assert!(!early.ok);
    assert!(
        early.stderr.contains("runs/tiny/jobs.jsonl: no job of this sweep has run yet, so there is nothing to time"),
        "{}",
        early.stderr
    );
    let out = run(&mut workbench(&["sweep", config.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let timings = run(&mut workbench(&["sweep", "--timings", config.to_str().unwrap()]));
    assert!(timings.ok, "{}", timings.stderr);
    assert!(timings.stdout.contains("| teacher training | 2 | "), "{}", timings.stdout);
    assert!(timings.stdout.contains("| student runs | 6 | "), "{}", timings.stdout);

    let sweep = dir.path().join("runs/tiny");
    let csv = std::fs::read_to_string(sweep.join("comparison.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let methods: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('"')).collect();
    assert_eq!(methods, ["vanilla-kd", "uhc", "muka", "teacher-concat (reference)"]);
    for row in &rows {
        assert_eq!(row[1], "2", "two seeds per method: {row:?}");
        let mean: f64 = row[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{row:?}");
    }
    let muka_selection: f64 = rows[2][4].parse().unwrap();
    assert!(muka_selection > 0.0, "muka reports the estimator's selection accuracy");
    assert_eq!(rows[0][4], "NaN", "vanilla-kd has no estimator");
    let svg = std::fs::read_to_string(sweep.join("comparison.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("teacher-concat (reference)"), "the chart draws the reference");
    let markdown = std::fs::read_to_string(sweep.join("comparison.md")).unwrap();
    assert!(markdown.contains("| muka | 2 | "), "{markdown}");
    assert!(markdown.contains("| on `a`'s labels | on `b`'s labels |"), "{markdown}");
    // Per-teacher columns: the mean over seeds of what each run's results.json reports.
    assert!(
        csv.lines().next().unwrap().ends_with(
            ",on_a_mean,on_a_std,on_b_mean,on_b_std,min_coverage_mean,min_coverage_std,selection_train_mean,selection_train_std"
        ),
        "{csv}"
    );
    let results = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(sweep.join(run).join("results.json")).unwrap()).unwrap()
    };
    let on_b: Vec<f64> = ["vanilla-kd-seed0", "vanilla-kd-seed1"]
        .iter()
        .map(|run| results(run)["student"]["per_teacher"][1].as_f64().unwrap())
        .collect();
    let reported: f64 = rows[0][8].parse().unwrap();
    assert!((reported - (on_b[0] + on_b[1]) / 2.0).abs() < 1e-6, "{reported} vs {on_b:?}");
    // Coverage: the student's accuracy on a teacher's labels over the teacher's own, its minimum.
    let first = results("vanilla-kd-seed0");
    let coverage: Vec<f64> = (0..2)
        .map(|i| {
            first["student"]["per_teacher"][i].as_f64().unwrap()
                / first["teachers"][i]["per_teacher"][i].as_f64().unwrap()
        })
        .collect();
    assert_eq!(first["coverage"].as_array().unwrap().len(), 2);
    for (i, c) in coverage.iter().enumerate() {
        assert!((first["coverage"][i].as_f64().unwrap() - c).abs() < 1e-9, "{first}");
    }
    assert!((first["min_coverage"].as_f64().unwrap() - coverage[0].min(coverage[1])).abs() < 1e-9);
    let min_coverage: f64 = rows[0][10].parse().unwrap();
    let second = results("vanilla-kd-seed1")["min_coverage"].as_f64().unwrap();
    assert!((min_coverage - (coverage[0].min(coverage[1]) + second) / 2.0).abs() < 1e-6, "{min_coverage}");
    // The reference row carries the concat-argmax selector, the same in every run.
    let concat = &first["selection"]["concat_argmax"];
    let reference: f64 = rows[3][4].parse().unwrap();
    assert!((reference - concat["test"].as_f64().unwrap()).abs() < 1e-6, "{reference} vs {concat}");
    assert!((0.0..=1.0).contains(&concat["train"].as_f64().unwrap()));
    assert_eq!(first["selection"]["estimator"], serde_json::Value::Null, "vanilla-kd has no estimator");
    let muka = results("muka-seed0");
    let estimator_train = muka["selection"]["estimator"]["train"].as_f64().unwrap();
    let selection_train: f64 = rows[2][12].parse().unwrap();
    assert!((0.0..=1.0).contains(&estimator_train) && selection_train > 0.0, "{muka}");
    let report = std::fs::read_to_string(sweep.join("muka-seed0/report.md")).unwrap();
    assert!(report.contains("| concat-argmax (reference) | "), "{report}");
    assert!(report.contains("Coverage (the student's accuracy on a teacher's labels over the teacher's own): `a` "));

    // Every teacher signal (teacher, split, sampling plan) was computed once, by its own job
    // of the sweep's graph; the runs read them all from the cache.
    let manifests = manifests(&sweep);
    assert_eq!(manifests.len(), 6);
    let typed = workbench::run::Manifest::load(&sweep.join("muka-seed0")).expect("the manifest reads back typed");
    assert_eq!(typed.signals.len(), 8, "{typed:?}");
    assert_eq!(typed.seeds.mc_sampling, 0);
    let mut read: BTreeMap<String, usize> = BTreeMap::new();
    for manifest in &manifests {
        for signal in manifest["signals"].as_array().unwrap() {
            assert_eq!(signal["provenance"], "cached", "{signal}");
            *read.entry(format!("{} {} {}", signal["teacher"], signal["split"], signal["plan"])).or_default() += 1;
        }
    }
    assert_eq!(read.len(), 2 * 2 * 2, "deterministic and MC signals of 2 teachers on 2 splits: {read:?}");
    let log = std::fs::read_to_string(sweep.join("jobs.jsonl")).unwrap();
    let mut computed: BTreeMap<String, usize> = BTreeMap::new();
    for record in log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
        let job = record["job"].as_str().unwrap();
        if job.starts_with("signals:") {
            *computed.entry(job.to_string()).or_default() += usize::from(record["outcome"] == "computed");
        }
    }
    assert_eq!(computed.len(), 2 * 2 * 2, "one job per signal: {computed:?}");
    assert!(computed.values().all(|&n| n == 1), "each computed once: {computed:?}");
    assert!(computed.contains_key("signals:teachers.a:train:mc4-top0-lower0"), "{computed:?}");

    // Again: every run is complete and skipped.
    let again = run(&mut workbench(&["sweep", config.to_str().unwrap()]));
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stdout.contains("6 runs (6 already complete)"), "{}", again.stdout);

    // Selection only: the estimator methods alone, from the cached signals, with the
    // selection accuracy the full runs reported.
    let selection = run(&mut workbench(&["sweep", "--selection-only", config.to_str().unwrap()]));
    assert!(selection.ok, "{}", selection.stderr);
    let csv = std::fs::read_to_string(sweep.join("selection.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "method,estimator,selection_train,selection_validation,selection_test,on_a,on_b,seconds,cost_passes"
    );
    assert_eq!(lines.len(), 3, "the concat-argmax reference, then `muka`, the one method with an estimator: {csv}");
    let parse = |field: &str| -> f64 { field.parse().unwrap() };
    let reference_fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(reference_fields[..2], ["concat-argmax (reference)", "max-logit (one pass)"]);
    assert!((parse(reference_fields[2]) - concat["train"].as_f64().unwrap()).abs() < 1e-6, "{csv}");
    assert!((parse(reference_fields[4]) - reference).abs() < 1e-6, "{csv}");
    assert_eq!(reference_fields[5..], ["", "", "", "1.000"], "{csv}");
    let fields: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(fields[..2], ["muka", "mc-dropout passes=4"]);
    assert!((parse(fields[2]) - estimator_train).abs() < 1e-6, "{} vs the run's {estimator_train}", fields[2]);
    // The validation texts (scored by selection only) hold a whole number of the 20 drawn.
    for validation in [parse(reference_fields[3]), parse(fields[3])] {
        assert!((0.0..=1.0).contains(&validation), "{csv}");
        assert!((validation * 20.0 - (validation * 20.0).round()).abs() < 1e-4, "{validation} of 20: {csv}");
    }
    let accuracy = parse(fields[4]);
    assert!((accuracy - muka_selection).abs() < 1e-6, "{accuracy} vs the sweep's {muka_selection}");
    // Both teachers own half of the test instances.
    let (on_a, on_b) = (parse(fields[5]), parse(fields[6]));
    assert!((accuracy - (on_a + on_b) / 2.0).abs() < 1e-3, "{accuracy} vs {on_a} and {on_b}");
    assert_eq!(fields[7], "", "every signal came from the cache, so no scoring time");
    assert_eq!(fields[8], "4.000", "4 plain MC passes from the cache: their count");
    let chart = std::fs::read_to_string(sweep.join("selection.svg")).unwrap();
    assert!(chart.contains("muka") && chart.contains("cost (deterministic passes)"), "{chart}");
    let markdown = std::fs::read_to_string(sweep.join("selection.md")).unwrap();
    assert!(markdown.starts_with("Teachers' accuracy on their own classes (test): `a` "), "{markdown}");
    assert!(markdown.contains("| muka | mc-dropout passes=4 | "), "{markdown}");
    assert!(markdown.contains("| concat-argmax (reference) | max-logit (one pass) | "), "{markdown}");

    // Selection only, into a sweep directory that no run has made yet.
    let fresh =
        run(&mut workbench(&["sweep", "--selection-only", config.to_str().unwrap(), "--set", "name=selection-first"]));
    assert!(fresh.ok, "{}", fresh.stderr);
    assert!(dir.path().join("runs/selection-first/selection.svg").is_file());
    // It scores in this process at once: nothing a dry run could list.
    let dry = run(&mut workbench(&["sweep", "--selection-only", "--dry-run", config.to_str().unwrap()]));
    assert!(
        !dry.ok && dry.stderr.contains("the argument '--selection-only' cannot be used with '--dry-run'"),
        "{}",
        dry.stderr
    );

    // Exported signals: the estimator's scores with the gold labels give the selection accuracy
    // of selection.csv, beside the passes they were computed from.
    let refused = run(&mut workbench(&["sweep", "--export-signals", config.to_str().unwrap()]));
    assert!(!refused.ok && refused.stderr.contains("--selection-only"), "{}", refused.stderr);
    let exported = run(&mut workbench(&[
        "sweep",
        "--selection-only",
        "--export-signals",
        config.to_str().unwrap(),
        "--set",
        "name=selection-export",
    ]));
    assert!(exported.ok, "{}", exported.stderr);
    let signals = dir.path().join("runs/selection-export/signals/muka");
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(signals.join("labels.json")).unwrap()).unwrap();
    let maps: Vec<Vec<u32>> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            assert_eq!(labels["teachers"][i]["name"], *name, "{labels}");
            serde_json::from_value(labels["teachers"][i]["labels"].clone()).unwrap()
        })
        .collect();
    let load = |split: &str| {
        candle_core::safetensors::load(signals.join(format!("{split}.safetensors")), &candle_core::Device::Cpu).unwrap()
    };
    let test = load("test");
    let gold: Vec<u32> = test["gold"].to_vec1().unwrap();
    let scores: Vec<Vec<f32>> = test["scores"].to_vec2().unwrap();
    assert_eq!(test["a.sampled"].dims(), [4, gold.len(), maps[0].len()]);
    assert_eq!(test["b.deterministic"].dims(), [gold.len(), maps[1].len()]);
    assert_eq!(test["a.hidden"].dims()[0], gold.len());
    let adequate =
        scores.iter().zip(&gold).filter(|(row, g)| maps[workbench_plugin_api::math::argmax(row)].contains(g)).count();
    assert!(
        (adequate as f64 / gold.len() as f64 - accuracy).abs() < 1e-6,
        "{adequate} of {} vs {accuracy}",
        gold.len()
    );
    for split in ["train", "validation"] {
        let tensors = load(split);
        assert_eq!(tensors["gold"].dims()[0], tensors["scores"].dims()[0], "{split}");
    }
    let all_rows: Vec<u32> = (0..gold.len() as u32).collect();
    assert_eq!(test["a.sampled_rows"].to_vec1::<u32>().unwrap(), all_rows, "plain MC samples every text");

    // `mc-fitted` over a quarter of the training texts, at least 10: the passes cover those texts
    // only, the same ones for both teachers; the test texts get none, they are scored beside the
    // training split's samples; the cost counts the sampled texts; the scores select as
    // selection.csv says.
    let fitted = dir.path().join("fitted.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"estimator = { plugin = "mc-dropout", passes = 4 }"#,
        r#"estimator = { plugin = "mc-fitted", passes = 4, share = 0.25, minimum = 10 }"#,
    );
    std::fs::write(&fitted, text).unwrap();
    let args = ["sweep", "--selection-only", "--export-signals", fitted.to_str().unwrap(), "--set", "name=fitted"];
    let exported = run(&mut workbench(&args));
    assert!(exported.ok, "{}", exported.stderr);
    let csv = std::fs::read_to_string(dir.path().join("runs/fitted/selection.csv")).unwrap();
    let fields: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
    assert_eq!(fields[..2], ["muka", "mc-fitted minimum=10 passes=4 share=0.25"], "{csv}");
    let exported_split = |split: &str| {
        let path = dir.path().join(format!("runs/fitted/signals/muka/{split}.safetensors"));
        candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
    };
    let train = exported_split("train");
    let train_texts = train["gold"].dims()[0];
    let sampled = train_texts.div_ceil(4).max(10);
    assert!(sampled < train_texts, "{sampled} of {train_texts}: some texts are predicted");
    let rows: Vec<u32> = train["a.sampled_rows"].to_vec1().unwrap();
    assert_eq!(rows, train["b.sampled_rows"].to_vec1::<u32>().unwrap());
    assert!(
        rows.len() == sampled && rows.windows(2).all(|w| w[0] < w[1]) && rows[sampled - 1] < train_texts as u32,
        "{rows:?}"
    );
    assert_eq!(train["a.sampled"].dims(), [4, sampled, maps[0].len()]);
    let test = exported_split("test");
    let texts = gold.len();
    assert_eq!(test["a.sampled"].dims(), [4, 0, maps[0].len()], "no passes over the test texts");
    assert_eq!(test["b.sampled_rows"].dims(), [0]);
    let scores: Vec<Vec<f32>> = test["scores"].to_vec2().unwrap();
    assert_eq!(scores.len(), texts);
    let adequate =
        scores.iter().zip(&gold).filter(|(row, g)| maps[workbench_plugin_api::math::argmax(row)].contains(g)).count();
    assert!((adequate as f64 / texts as f64 - parse(fields[4])).abs() < 1e-6, "{adequate} of {texts}: {csv}");
    let share = sampled as f64 / (train_texts + texts) as f64;
    assert!((parse(fields[8]) - 4.0 * share).abs() < 1e-3, "4 passes over {share} of the texts: {csv}");

    // A training split below the minimum is measured whole, and the test split sampled on its own.
    let below = dir.path().join("below.toml");
    let minimum = train_texts + texts;
    let text = std::fs::read_to_string(&fitted).unwrap().replace("minimum = 10", &format!("minimum = {minimum}"));
    std::fs::write(&below, text).unwrap();
    let args = ["sweep", "--selection-only", "--export-signals", below.to_str().unwrap(), "--set", "name=below"];
    let fitted_below = run(&mut workbench(&args));
    assert!(fitted_below.ok, "{}", fitted_below.stderr);
    let path = dir.path().join("runs/below/signals/muka/test.safetensors");
    let test = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    assert_eq!(test["a.sampled"].dims(), [4, texts, maps[0].len()], "every test text sampled");

    // Every text sampled and more of them than the minimum: the fit still gets the hidden states.
    let whole = dir.path().join("whole.toml");
    let text =
        std::fs::read_to_string(&fitted).unwrap().replace("share = 0.25, minimum = 10", "share = 1.0, minimum = 2");
    std::fs::write(&whole, text).unwrap();
    let fitted_whole =
        run(&mut workbench(&["sweep", "--selection-only", whole.to_str().unwrap(), "--set", "name=whole"]));
    assert!(fitted_whole.ok, "{}", fitted_whole.stderr);
    let csv = std::fs::read_to_string(dir.path().join("runs/whole/selection.csv")).unwrap();
    assert!(csv.contains("mc-fitted minimum=2 passes=4 share=1"), "{csv}");
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let oracle = format!(
        "[oracle]\nplugin = \"bert\"\ncheckpoints = [\"{}/teacher-oracle\"]\nmax_length = 16\n\
         teach = {{ layers = 1, epochs = 2, learning_rate = 1e-3, max_length = 16 }}\n\n",
        dir.path().display()
    );
    let base = experiment(dir.path(), 3) + &oracle + "[strategy]\nplugin = \"vanilla-kd\"\n";
    let whole = dir.path().join("whole.toml");
    std::fs::write(&whole, base.replace("name = \"tiny\"", "name = \"whole\"")).unwrap();
    let out = run(&mut workbench(&["run", whole.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);

    let killed = dir.path().join("killed.toml");
    std::fs::write(&killed, base.replace("name = \"tiny\"", "name = \"killed\"")).unwrap();
    let mut child =
        workbench(&["run", killed.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let state = dir.path().join("runs/killed/state/state.json");
    let mut stopped_after = None;
    for _ in 0..6000 {
        if let Ok(text) = std::fs::read_to_string(&state) {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if value["epochs_done"] == 1 {
                child.kill().unwrap();
                stopped_after = Some(1);
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    assert_eq!(stopped_after, Some(1), "the run was killed after its first epoch");
    assert!(!dir.path().join("runs/killed/report.md").exists(), "the killed run did not finish");

    // Without --resume, a stopped run is not silently overwritten.
    let refused = run(&mut workbench(&["run", killed.to_str().unwrap()]));
    assert!(!refused.ok && refused.stderr.contains("workbench run --resume"), "{}", refused.stderr);

    let run_dir = dir.path().join("runs/killed");
    let resumed = run(&mut workbench(&["run", "--resume", run_dir.to_str().unwrap()]));
    assert!(resumed.ok, "{}", resumed.stderr);
    let losses = |run: &str| -> Vec<f64> {
        std::fs::read_to_string(dir.path().join(format!("runs/{run}/metrics.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(losses("killed").len(), 3);
    assert_eq!(losses("killed"), losses("whole"), "the same loss every epoch");
    let results = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(format!("runs/{run}/results.json"))).unwrap())
            .unwrap()
    };
    for part in ["student", "teacher_concat", "teachers", "oracle", "coverage", "selection"] {
        assert_eq!(results("killed")[part], results("whole")[part], "the same test metrics: {part}");
    }
    let whole = results("whole");
    let methods: Vec<&str> =
        [&whole["student"], &whole["teacher_concat"], &whole["teachers"][0], &whole["teachers"][1], &whole["oracle"]]
            .iter()
            .map(|r| r["method"].as_str().unwrap())
            .collect();
    assert_eq!(
        methods,
        [
            "student (vanilla-kd)",
            "teacher-concat ensemble",
            "teacher `a` alone",
            "teacher `b` alone",
            "all-label oracle"
        ]
    );
}

/// A second round: the first round's student, a model over the union labels, is the selector
/// of MUKA (its probability mass on a teacher's labels is that teacher's score), computed
/// once per split; a config cannot have both a selector and an estimator.
#[test]
fn an_earlier_student_selects_the_teachers_for_a_second_round() {
    let dir = tempfile::tempdir().unwrap();
    let base = experiment(dir.path(), 2);
    let first = dir.path().join("first.toml");
    std::fs::write(
        &first,
        base.replace("name = \"tiny\"", "name = \"first\"") + "[strategy]\nplugin = \"vanilla-kd\"\n",
    )
    .unwrap();
    let out = run(&mut workbench(&["run", first.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let selector = format!(
        "[selector]\nplugin = \"bert\"\ncheckpoints = [\"{}\"]\nmax_length = 16\n\n[strategy]\nplugin = \"muka\"\n",
        dir.path().join("runs/first/student").display()
    );
    let second = dir.path().join("second.toml");
    std::fs::write(&second, base.replace("name = \"tiny\"", "name = \"second\"") + &selector).unwrap();
    let out = run(&mut workbench(&["run", second.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let run_dir = dir.path().join("runs/second");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(name)).unwrap()).unwrap()
    };
    let selector_signals: Vec<(String, String)> = read("manifest.json")["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["teacher"] == "selector")
        .map(|s| (s["split"].as_str().unwrap().to_string(), s["provenance"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(selector_signals, [("train".to_string(), "computed".to_string()), ("test".into(), "computed".into())]);
    let selection = &read("results.json")["selection"]["estimator"];
    for split in ["train", "test"] {
        // Two teachers: chance is 0.5; a student that learned the four topics does far better.
        assert!(selection[split].as_f64().unwrap() > 0.7, "{selection}");
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("Strategy `muka`, estimator `none (selector `bert`)`"), "{report}");

    let both = dir.path().join("both.toml");
    std::fs::write(&both, base + &selector + "\n[estimator]\nplugin = \"entropy\"\n").unwrap();
    let out = run(&mut workbench(&["config", "check", both.to_str().unwrap()]));
    assert!(
        !out.ok && out.stderr.contains("[estimator] and [selector] both give certainty scores: keep one"),
        "{}",
        out.stderr
    );
}

/// Cross-fitting: two students, each leaving out one fold of the training texts
/// (`student.holdout_fold`), are the members of one selector (`cross_fit`), each scoring the
/// fold it never saw; a selector with one member cannot be cross-fitted.
#[test]
fn two_students_that_each_left_out_a_fold_make_a_cross_fitted_selector() {
    let dir = tempfile::tempdir().unwrap();
    let base = experiment(dir.path(), 2);
    let manifest = |name: &str| -> serde_json::Value {
        let path = dir.path().join("runs").join(name).join("manifest.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    for fold in 0..2 {
        let config = dir.path().join(format!("fold{fold}.toml"));
        let text = base
            .replace("name = \"tiny\"", &format!("name = \"fold{fold}\""))
            .replace("[student]\n", &format!("[student]\nholdout_fold = [{fold}, 2]\n"))
            + "[strategy]\nplugin = \"vanilla-kd\"\n";
        std::fs::write(&config, text).unwrap();
        let out = run(&mut workbench(&["run", config.to_str().unwrap()]));
        assert!(out.ok, "{}", out.stderr);
    }
    let members: Vec<String> =
        (0..2).map(|fold| format!("\"{}\"", dir.path().join(format!("runs/fold{fold}/student")).display())).collect();
    let selector = format!(
        "[selector]\nplugin = \"bert\"\ncheckpoints = [{}]\nmax_length = 16\ncross_fit = true\n\n[strategy]\nplugin = \"muka\"\n",
        members.join(", ")
    );
    let config = dir.path().join("cross.toml");
    std::fs::write(&config, base.replace("name = \"tiny\"", "name = \"cross\"") + &selector).unwrap();
    let out = run(&mut workbench(&["run", config.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);

    // The folds split the training texts between them.
    let trained = |name: &str| manifest(name)["data"]["train"].as_u64().unwrap();
    let (fold0, fold1, all) = (trained("fold0"), trained("fold1"), trained("cross"));
    assert_eq!(fold1 + fold0, all, "each fold student leaves out the other's texts");
    assert!(fold0 > all / 4 && fold1 > all / 4, "{fold0} and {fold1} of {all}");
    let plans: Vec<(String, String)> = manifest("cross")["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["teacher"] == "selector")
        .map(|s| (s["split"].as_str().unwrap().to_string(), s["plan"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        plans,
        [("train".to_string(), "cross-fitted members".to_string()), ("test".into(), "cross-fitted members".into())]
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/cross/results.json")).unwrap()).unwrap();
    for split in ["train", "test"] {
        // Two teachers: chance is 0.5; students that learned the four topics do far better.
        let selection = results["selection"]["estimator"][split].as_f64().unwrap();
        assert!(selection > 0.7, "{split}: {selection}");
    }

    let single = dir.path().join("single.toml");
    let one_member = selector.replace(&format!(", {}", members[1]), "");
    std::fs::write(&single, base.replace("name = \"tiny\"", "name = \"single\"") + &one_member).unwrap();
    let out = run(&mut workbench(&["run", single.to_str().unwrap()]));
    assert!(
        !out.ok && out.stderr.contains("`selector.cross_fit`: it needs one member per fold, at least 2; it has 1"),
        "{}",
        out.stderr
    );
}

/// The fold students and the round whose cross-fitted selector reads them, as one sweep: the
/// fold methods run one seed, the round two, each round cell after the fold cells (two workers,
/// so that nothing but the dependency holds a round cell back), and Slurm gets them as two
/// arrays, the second after the first.
#[test]
fn one_sweep_makes_the_fold_students_then_the_round_that_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("runs/tiny");
    let fold = |k: usize| {
        format!(
            "\n[[sweep.methods]]\nname = \"fold {k} of 2\"\nseeds = [0]\nstrategy = {{ plugin = \"vanilla-kd\" }}\n\
             student = {{ holdout_fold = [{k}, 2] }}\n"
        )
    };
    let members: Vec<String> =
        (0..2).map(|k| format!("\"{}\"", sweep.join(format!("fold-{k}-of-2-seed0/student")).display())).collect();
    let round = format!(
        "\n[[sweep.methods]]\nname = \"round\"\nstrategy = {{ plugin = \"muka\" }}\n\
         selector = {{ plugin = \"bert\", checkpoints = [{}], max_length = 16, cross_fit = true }}\n",
        members.join(", ")
    );
    let base = experiment(dir.path(), 2);
    // The round first: the order of the methods does not decide the order of the runs.
    let text = base.clone() + "[sweep]\nseeds = [0, 1]\n" + &round + &fold(0) + &fold(1);
    let config = dir.path().join("sweep.toml");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();

    // Folds that read each other's students cannot start.
    let cycle = dir.path().join("cycle.toml");
    let reads = |k: usize| {
        fold(k).replace(
            "student = {",
            &format!("selector = {{ plugin = \"bert\", checkpoints = [{}] }}\nstudent = {{", members[1 - k]),
        )
    };
    std::fs::write(&cycle, base.clone() + "[sweep]\nseeds = [0]\n" + &reads(0) + &reads(1)).unwrap();
    // A selector that reads the student of its own run: refused at planning and at config check.
    let own = dir.path().join("own.toml");
    let reads_own = fold(0).replace(
        "student = {",
        &format!("selector = {{ plugin = \"bert\", checkpoints = [{}] }}\nstudent = {{", members[0]),
    );
    std::fs::write(&own, base + "[sweep]\nseeds = [0]\n" + &reads_own).unwrap();
    let expected = format!(
        "the selector of run `fold-0-of-2-seed0` ({}) reads the student that run trains: a run cannot select its \
         teachers with its own student; name an earlier round's",
        sweep.join("fold-0-of-2-seed0/student").display()
    );
    for command in [vec!["sweep", own.to_str().unwrap(), "--dry-run"], vec!["config", "check", own.to_str().unwrap()]] {
        let refused = run(&mut workbench(&command));
        assert!(!refused.ok && refused.stderr.contains(&expected), "{command:?}: {}", refused.stderr);
    }
    let refused = run(&mut workbench(&["sweep", cycle.to_str().unwrap(), "--dry-run"]));
    assert!(
        refused.stderr.contains(
            "the selectors of runs `fold-0-of-2-seed0`, `fold-1-of-2-seed0` read each other's students: none of them can run first"
        ),
        "{}",
        refused.stderr
    );

    let slurm = run(&mut workbench(&["sweep", config, "--executor", "slurm", "--dry-run"]));
    assert!(slurm.ok, "{}", slurm.stderr);
    let script = |name: &str| slurm.stdout.split("# sbatch").find(|s| s.contains(&format!(" {name}.sh "))).unwrap();
    assert!(script("students").contains("#SBATCH --array=2,3\n"), "{}", slurm.stdout);
    let second = script("students-2");
    assert!(second.contains("#SBATCH --array=0,1\n"), "{second}");
    assert!(second.contains(":<students> --kill-on-invalid-dep=yes"), "{second}");

    let out = run(&mut workbench(&["sweep", config, "--jobs", "2"]));
    assert!(out.ok, "{}", out.stderr);
    let log: Vec<serde_json::Value> = std::fs::read_to_string(sweep.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Jobs are logged as they end; a round cell starts only after both fold cells ended.
    let ended = |job: &str| log.iter().position(|r| r["job"] == job).unwrap_or_else(|| panic!("{job} in {log:?}"));
    let folds_done = ended("student:2").max(ended("student:3"));
    for round_cell in ["student:0", "student:1"] {
        assert!(ended(round_cell) > folds_done, "{log:?}");
    }
    let manifest = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(sweep.join(run).join("manifest.json")).unwrap()).unwrap()
    };
    let trained = |run: &str| manifest(run)["data"]["train"].as_u64().unwrap();
    assert_eq!(trained("fold-0-of-2-seed0") + trained("fold-1-of-2-seed0"), trained("round-seed0"));
    assert!(!sweep.join("fold-0-of-2-seed1").exists(), "the folds run their own seeds only");
    let selector = manifest("round-seed1")["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["teacher"] == "selector" && s["split"] == "train")
        .unwrap()
        .clone();
    assert_eq!(selector["plan"], "cross-fitted members");
}

#[test]
fn a_student_learns_from_an_unlabelled_transfer_set() {
    let dir = tempfile::tempdir().unwrap();
    // Texts of the four topics without their labels, one per line.
    support::write_four_topics(&dir.path().join("unlabelled.csv"), 30, 7);
    let csv = std::fs::read_to_string(dir.path().join("unlabelled.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).map(|l| l.rsplit_once(',').unwrap().0).collect();
    let transfer = dir.path().join("transfer.txt");
    std::fs::write(&transfer, lines.join("\n")).unwrap();
    let config = dir.path().join("transfer.toml");
    let text = experiment(dir.path(), 2)
        .replace("[data]\n", &format!("[data]\ntransfer = \"{}\"\n", transfer.display()))
        + "[strategy]\nplugin = \"vanilla-kd\"\n";
    std::fs::write(&config, text).unwrap();
    let out = run(&mut workbench(&["run", config.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let run_dir = dir.path().join("runs/tiny");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(name)).unwrap()).unwrap()
    };
    let manifest = read("manifest.json");
    assert_eq!(manifest["data"]["train"], 120, "the student trained on the 4 x 30 transfer texts: {manifest}");
    let results = read("results.json");
    assert_eq!(results["selection"]["concat_argmax"]["train"], serde_json::Value::Null, "no labels to judge by");
    assert!(results["selection"]["concat_argmax"]["test"].as_f64().unwrap() > 0.0);
    assert!(results["student"]["accuracy"].as_f64().unwrap() > 0.5, "{results}");
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("| concat-argmax (reference) | – | "), "{report}");

    // The student's model card: labels with their teachers, the teachers' hashes, the method
    // with its paper, the scores of the report, the config that reproduces it.
    let student = run_dir.join("student");
    let card = std::fs::read_to_string(student.join("README.md")).unwrap();
    assert!(card.starts_with("---\nlibrary_name: transformers\npipeline_tag: text-classification\n"), "{card}");
    assert!(card.contains("# Student of the workbench run `tiny`\n\nA text classifier over 4 labels"), "{card}");
    assert!(card.contains("without human labels: it learnt from the teachers' outputs on 120 texts, never from"));
    for (id, label) in manifest["union_labels"].as_array().unwrap().iter().enumerate() {
        assert!(card.contains(&format!("| {id} | {} | `", label.as_str().unwrap())), "{label} in {card}");
    }
    for teacher in manifest["teachers"].as_array().unwrap() {
        let row = format!(
            "| `{}` | `bert` | 2 | `{}` |",
            teacher["name"].as_str().unwrap(),
            teacher["sha256"].as_str().unwrap()
        );
        assert!(card.contains(&row), "{row} in {card}");
    }
    assert!(card
        .contains("- strategy: `vanilla-kd`: Distil softmax(concat(teacher logits) / T), loss scaled by T² (Hinton"));
    let scores = report.split_once("Test accuracy on the union").unwrap().1.split("\n\nRows left out").next().unwrap();
    assert!(card.contains(scores.trim_end()), "the report's scores in {card}");
    assert!(card.contains("trust_remote_code=True") && student.join("modeling_workbench.py").is_file());
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(card.contains(&format!("```toml\n{config}```")), "{card}");
    // A transfer-only run: no labelled training file (no validation either), the teachers as they
    // are (no `teach` tables), the labelled test file only to measure the student.
    let teachers = |name: &str, labels: &str| {
        format!(
            "[teachers.{name}]\nplugin = \"bert\"\ncheckpoints = [\"{}\"]\nmax_length = 16\n# {labels}\n\n",
            dir.path().join(format!("teacher-{name}")).display()
        )
    };
    let only = dir.path().join("transfer-only.toml");
    let text = format!(
        "name = \"transfer-only\"\noutput = \"{out}\"\ncache = \"{cache}\"\n\n[data]\ndataset = \"files\"\n\
         transfer = \"{transfer}\"\ntest = \"{test}\"\n\n{a}{b}[student]\nlayers = 1\nepochs = 2\nlearning_rate = 1e-3\n\
         batch_size = 16\nmax_length = 16\n\n[strategy]\nplugin = \"vanilla-kd\"\n",
        out = dir.path().join("runs").display(),
        cache = dir.path().join("cache").display(),
        transfer = transfer.display(),
        test = dir.path().join("test.csv").display(),
        a = teachers("a", "science, sport"),
        b = teachers("b", "food, politics"),
    );
    std::fs::write(&only, text).unwrap();
    let checked = run(&mut workbench(&["config", "check", only.to_str().unwrap()]));
    assert!(checked.stdout.starts_with("ok: "), "{}", checked.stderr);
    let out = run(&mut workbench(&["run", only.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("epoch 2: loss") && out.stderr.contains(", no validation texts"), "{}", out.stderr);
    let only_dir = dir.path().join("runs/transfer-only");
    let report = std::fs::read_to_string(only_dir.join("report.md")).unwrap();
    assert!(
        report.contains("No labelled validation texts: the student trained a fixed 2 epochs and the last was kept.")
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(only_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["best_epoch"], 2, "the last epoch");
    assert!(results["student"]["accuracy"].as_f64().unwrap() > 0.5, "{results}");
    let card = std::fs::read_to_string(only_dir.join("student/README.md")).unwrap();
    assert!(card.contains("On 60 test texts (no validation texts: the last of 2 epochs)."), "{card}");

    // The same in one command, without a config: it writes the one it runs.
    let amalgamate = |name: &str, eval: Option<&Path>| {
        let teacher = |t: &str| format!("{t}={}", dir.path().join(format!("teacher-{t}")).display());
        let (a, b, out) = (teacher("a"), teacher("b"), dir.path().join("runs"));
        let mut args =
            vec!["amalgamate", &a, &b, "--texts", transfer.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(["--name", name, "--set", "student.layers=1", "--set", "student.epochs=2"]);
        if let Some(eval) = eval {
            args.extend(["--eval", eval.to_str().unwrap()]);
        }
        run(&mut workbench(&args))
    };
    let out = amalgamate("one-command", Some(&dir.path().join("test.csv")));
    assert!(out.ok, "{}", out.stderr);
    let one = dir.path().join("runs/one-command");
    assert!(out.stdout.contains(&format!("student: {}", one.join("student").display())), "{}", out.stdout);
    let written = std::fs::read_to_string(dir.path().join("runs/one-command.toml")).unwrap();
    assert!(written.contains("plugin = \"muka\"") && written.contains("scale = \"teacher-rank\""), "{written}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("results.json")).unwrap()).unwrap();
    assert!(results["student"]["accuracy"].as_f64().unwrap() > 0.5, "{results}");

    // Without labelled texts at all: the student is trained and exported, and nothing claims a score.
    let out = amalgamate("unmeasured", None);
    assert!(out.ok, "{}", out.stderr);
    let unmeasured = dir.path().join("runs/unmeasured");
    let not_measured = "Not measured: the run had no labelled test texts (`data.test`), so it reports no accuracy, \
                        coverage or selection.";
    assert!(out.stdout.contains(not_measured), "{}", out.stdout);
    assert!(std::fs::read_to_string(unmeasured.join("report.md")).unwrap().contains(not_measured));
    assert!(!unmeasured.join("results.json").exists() && unmeasured.join("student/model.safetensors").is_file());
    let card = std::fs::read_to_string(unmeasured.join("student/README.md")).unwrap();
    assert!(
        card.contains(&format!("## Scores\n\n{not_measured} (no validation texts: the last of 2 epochs)")),
        "{card}"
    );

    // And the student answers `predict --model` over the union labels.
    let predicted = run(&mut workbench(&["predict", "--model", student.to_str().unwrap(), "--json", "some text"]));
    assert!(predicted.ok, "{}", predicted.stderr);
    let line: serde_json::Value = serde_json::from_str(predicted.stdout.trim()).unwrap();
    let total: f64 = line["probabilities"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).sum();
    assert_eq!(line["probabilities"].as_array().unwrap().len(), 4);
    assert!((total - 1.0).abs() < 1e-5, "{line}");
}

/// `configs/examples/heterogeneous-archs.toml` in small: a one-layer MiniLM (BERT, WordPiece) teacher and
/// a RoBERTa teacher (its own byte-level BPE tokenizer, taught from the committed tiny random
/// RoBERTa) amalgamated by MUKA into a student built from the tiny random DistilBERT. The random
/// RoBERTa reads its first token as a near-constant vector, so it is taught with mean pooling and
/// a high learning rate.
#[test]
fn a_bert_and_a_roberta_teacher_amalgamate_into_a_distilbert_student() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = support::repo_root().join("core/models/fixtures/parity");
    let roberta_teach = format!(
        "teach = {{ model = \"{}\", pooling = \"mean\", labels = [\"food\", \"politics\"], epochs = 10, \
         learning_rate = 1e-2,",
        fixtures.join("roberta").display()
    );
    let text = experiment(dir.path(), 4)
        .replace(
            "teach = { layers = 1, labels = [\"food\", \"politics\"], epochs = 2, learning_rate = 1e-3,",
            &roberta_teach,
        )
        .replace("[student]\n", &format!("[student]\nmodel = \"{}\"\n", fixtures.join("distilbert").display()))
        + "[estimator]\nplugin = \"entropy\"\nscale = \"teacher-rank\"\n\n[strategy]\nplugin = \"muka\"\n";
    assert!(text.contains(&roberta_teach), "the RoBERTa teacher replaced teacher b");
    let config = dir.path().join("archs.toml");
    std::fs::write(&config, text).unwrap();
    let out = run(&mut workbench(&["run", config.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);

    let model_type = |checkpoint: &Path| -> String {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(checkpoint.join("config.json")).unwrap()).unwrap();
        config["model_type"].as_str().unwrap().to_string()
    };
    // Mean-pooled teachers are exported under our own model type (transformers refuses them
    // without the code beside them); the student keeps the DistilBERT fixture's `cls` head.
    assert_eq!(model_type(&dir.path().join("teacher-a")), "workbench-mean-pooled-bert");
    assert_eq!(model_type(&dir.path().join("teacher-b")), "workbench-mean-pooled-roberta");
    assert_eq!(model_type(&dir.path().join("runs/tiny/student")), "distilbert");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/tiny/results.json")).unwrap()).unwrap();
    let own = |teacher: usize| results["teachers"][teacher]["per_teacher"][teacher].as_f64().unwrap();
    println!("teacher a (BERT) {:.3}, teacher b (RoBERTa) {:.3}, student {}", own(0), own(1), results["student"]);
    // Measured 1.000 and 0.767 (chance 0.5): the random RoBERTa learns, slowly.
    assert!(own(0) >= 0.9 && own(1) > 0.6, "both teachers learned their own classes: {} {}", own(0), own(1));
}

/// A teacher computed elsewhere joins through a signals file. Teacher `b` (food, politics) is a
/// keyword counter standing in for a model run in PyTorch: its logits, hidden states and four
/// stochastic passes are written in the signals-file format for exactly the texts `workbench
/// texts` lists; teacher `a` is our encoder, taught as usual. MUKA over MC dropout reads both.
#[test]
fn a_teacher_from_a_signals_file_amalgamates_with_one_of_our_encoder() {
    use workbench_signals_teacher::SignalsData;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signals.toml");
    let text = experiment(dir.path(), 2)
        + "[estimator]\nplugin = \"mc-dropout\"\npasses = 4\n\n[strategy]\nplugin = \"muka\"\nintegration = \"hard\"\n";
    std::fs::write(&config, text).unwrap();
    let texts_file = dir.path().join("texts.jsonl");
    let out = run(&mut workbench(&["texts", config.to_str().unwrap(), "--out", texts_file.to_str().unwrap()]));
    assert!(out.ok, "{}", out.stderr);
    let texts: Vec<String> = std::fs::read_to_string(&texts_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    // 4 topics x (50 train, of which validation, + 15 test) texts; some repeat, each is listed once.
    assert!(texts.len() > 150 && texts.len() <= 260, "{}", texts.len());
    let count = |text: &str, words: &[&str]| text.split(' ').filter(|w| words.contains(w)).count() as f32;
    let logits: Vec<Vec<f32>> =
        texts.iter().map(|t| vec![2.0 * count(t, &support::FOOD), 2.0 * count(t, &support::POLITICS)]).collect();
    let samples =
        (0..4).map(|pass| logits.iter().map(|row| row.iter().map(|x| x + 0.1 * pass as f32).collect()).collect());
    let signals = dir.path().join("b.safetensors");
    SignalsData {
        texts: texts.clone(),
        labels: vec!["food".into(), "politics".into()],
        logits: logits.clone(),
        hidden: Some(logits.iter().map(|row| vec![row[0], row[1], 1.0]).collect()),
        samples: Some(samples.collect()),
    }
    .write(&signals)
    .unwrap();
    let table = format!("teachers.b={{ plugin = \"signals-file\", file = \"{}\" }}", signals.display());
    let out = run(&mut workbench(&["run", config.to_str().unwrap(), "--set", &table]));
    assert!(out.ok, "{}", out.stderr);
    let run_dir = dir.path().join("runs/tiny");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap()).unwrap();
    // The keyword counter is right on every text of its own topics.
    assert_eq!(results["teachers"][1]["per_teacher"][1].as_f64(), Some(1.0), "{results}");
    assert!(results["student"]["accuracy"].as_f64().unwrap() > 0.6, "{results}");
    let manifest = std::fs::read_to_string(run_dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("workbench-signals-teacher"), "the plugin is recorded: {manifest}");
}

/// The live Python bridge inside a run, through the engine and the signal cache: teacher `b` is
/// a `transformers` teacher served by the protocol's fake worker (no torch in CI; the real one
/// is checked by scripts/check_bridge.py), teacher `a` our encoder.
#[test]
fn a_teacher_served_by_a_python_worker_takes_part_in_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    let text = experiment(dir.path(), 1)
        + "[estimator]\nplugin = \"mc-dropout\"\npasses = 3\n\n[strategy]\nplugin = \"muka\"\n";
    std::fs::write(&config, text).unwrap();
    let worker = support::repo_root().join("plugins/python-teacher/tests/fake_worker.py");
    let table = format!(
        "teachers.b={{ plugin = \"transformers\", model = \"fake:food,politics\", worker = \"{}\" }}",
        worker.display()
    );
    let out = run(&mut workbench(&["run", config.to_str().unwrap(), "--set", &table]));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Python worker ready"), "{}", out.stderr);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/tiny/results.json")).unwrap()).unwrap();
    assert_eq!(results["teachers"].as_array().unwrap().len(), 2, "{results}");
    let manifest = std::fs::read_to_string(dir.path().join("runs/tiny/manifest.json")).unwrap();
    assert!(manifest.contains("workbench-python-teacher"), "{manifest}");
}
