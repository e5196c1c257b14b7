//! Judging a run: teacher selection on the training texts and on test, the warnings that say
//! when a comparison means little, and an estimator's selection without a student.

use std::path::Path;

use workbench_plugin_api::{LabelSpace, SamplingPlan, Tensor};

use super::{
    export,
    prepare::{prepare, student_examples, student_texts, texts, Prepared},
    signals::{signals, Scorer, SignalRecord, Signals},
    SelectionReport, SplitSelection,
};
use crate::{
    config::ResolvedConfig,
    evaluate::{accuracy, teacher_predictions, ResultRow},
    host::Registry,
    metrics::{adequate_picks, concat_argmax_scores, selection_accuracy, share},
    signal_cache::Provenance,
    Error, Result,
};

/// Below these, the report warns: weak teachers or a weak selection make the comparison
/// meaningless (DESIGN.md, section 7), and a student below the coverage has all but lost a
/// teacher's classes.
const WEAK_TEACHER: f64 = 0.7;
const WEAK_SELECTION: f64 = 0.6;
const WEAK_COVERAGE: f64 = 0.7;

/// How often the estimator (when there is one) and the concat-argmax selector pick a teacher
/// that owns the gold label, on the student's training texts (no gold for an unlabelled
/// transfer set), on the validation texts when they were scored (selection-only scoring,
/// [`selection_only`]; runs do not) and on test: each split's signals with its gold labels.
pub(super) fn selection_report(
    train: (&Signals, Option<&[u32]>),
    validation: Option<(&Signals, &[u32])>,
    test: (&Signals, &[u32]),
    labels: &LabelSpace,
) -> SelectionReport {
    let on_train = train.1.map(|gold| selection_on(train.0, gold, labels));
    let on_validation = validation.map(|(signals, gold)| selection_on(signals, gold, labels));
    let on_test = selection_on(test.0, test.1, labels);
    SelectionReport {
        estimator: on_test.estimator.map(|test| SplitSelection {
            train: on_train.and_then(|t| t.estimator),
            validation: on_validation.and_then(|v| v.estimator),
            test,
        }),
        concat_argmax: SplitSelection {
            train: on_train.map(|t| t.concat_argmax),
            validation: on_validation.map(|v| v.concat_argmax),
            test: on_test.concat_argmax,
        },
    }
}

/// Selection accuracies on one split.
#[derive(Clone, Copy)]
struct SelectionOn {
    /// The estimator's (or selector's); none without one.
    estimator: Option<f64>,
    concat_argmax: f64,
}

fn selection_on(signals: &Signals, gold: &[u32], labels: &LabelSpace) -> SelectionOn {
    let selected = |scores: &Tensor| f64::from(selection_accuracy(scores, gold, &labels.maps));
    let logits: Vec<&Tensor> = signals.deterministic.iter().map(|s| &s.logits).collect();
    SelectionOn {
        estimator: signals.scores.as_ref().map(selected),
        concat_argmax: selected(&concat_argmax_scores(&logits)),
    }
}

/// What makes the comparison mean little: weak teachers, a weak selection, lost classes.
pub(super) fn warnings(
    teachers: &[String],
    teacher_rows: &[ResultRow],
    selection: &SelectionReport,
    coverage: &[f64],
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, teacher) in teachers.iter().enumerate() {
        let own = teacher_rows[i].per_teacher[i];
        if own < WEAK_TEACHER {
            warnings.push(format!(
                "teacher `{teacher}` reaches only {own:.3} on its own classes: the comparison means little with weak teachers"
            ));
        }
    }
    if let Some(s) = selection.estimator.filter(|s| s.test < WEAK_SELECTION) {
        warnings.push(format!("the estimator picks an adequate teacher for only {:.3} of the test instances", s.test));
    }
    for (teacher, c) in teachers.iter().zip(coverage).filter(|(_, &c)| c < WEAK_COVERAGE) {
        warnings.push(format!(
            "the student keeps only {c:.3} of teacher `{teacher}`'s accuracy on its classes (coverage below {WEAK_COVERAGE})"
        ));
    }
    warnings
}

/// What an estimator achieves on the student's training texts and on test, without a student.
pub struct SelectionOutcome {
    /// How often the highest-scored teacher owns the gold label, on the student's training
    /// texts (`train`, none for an unlabelled transfer set), on the validation texts and on
    /// test: the estimator's and the concat-argmax selector's.
    pub estimator: SplitSelection,
    pub concat_argmax: SplitSelection,
    /// Each teacher's name and accuracy on the test instances of its own labels.
    pub own_class: Vec<(String, f64)>,
    /// Per teacher, the selection accuracy on the test instances of its labels: a low one
    /// beside a high one means the other teacher is picked almost everywhere.
    pub by_teacher: Vec<f64>,
    /// Wall time of the scoring; `None` when every signal came from the cache.
    pub seconds: Option<f64>,
    /// What the estimator's passes cost, in deterministic passes: 1 for an estimator that reads
    /// the deterministic pass; for sampled passes their measured time over the deterministic
    /// pass's when both were computed now, else the number of full passes of plain MC dropout
    /// (times the share of the texts sampled, under a share plan); `None` where neither is known.
    pub cost: Option<f64>,
}

/// The cost of the estimator's passes in deterministic passes (see [`SelectionOutcome::cost`]);
/// `sampled_share`: the share of the texts that got them.
fn cost_in_passes(plan: SamplingPlan, records: &[SignalRecord], sampled_share: f64) -> Option<f64> {
    if plan == SamplingPlan::Deterministic {
        return Some(1.0);
    }
    let total = |deterministic: bool| -> Option<f64> {
        let chosen = records.iter().filter(|r| (r.plan == "deterministic") == deterministic);
        chosen.map(|r| r.seconds).sum::<Option<f64>>().filter(|s| *s > 0.0)
    };
    match (total(false), total(true), plan) {
        (Some(sampled), Some(deterministic), _) => Some(sampled / deterministic),
        (_, _, SamplingPlan::Stochastic { passes, top_layers: 0, .. }) => Some(f64::from(passes)),
        (_, _, SamplingPlan::StochasticShare { passes, .. }) => Some(f64::from(passes) * sampled_share),
        _ => None,
    }
}

/// Scores the student's training texts and the test split with the config's estimator (or
/// selector) and measures its teacher-selection accuracy; no student is trained and no run
/// directory is written. With `export`, each split's signals (the deterministic passes with
/// their hidden states, the estimator's passes and scores) and gold labels go there too.
pub fn selection_only(config: &ResolvedConfig, registry: &Registry, export: Option<&Path>) -> Result<SelectionOutcome> {
    let Prepared { splits, mut teachers, estimator, mut selector, labels } = prepare(config, registry)?;
    let mut scorer = Scorer::of(selector.as_mut(), estimator.as_ref(), &labels);
    if matches!(scorer, Scorer::Nothing) {
        return Err(Error::InvalidConfig {
            problems: vec!["no `estimator` or `selector` table: nothing selects a teacher".into()],
        });
    }
    let examples = student_examples(&splits, &labels)?;
    let (train_texts, train_gold) = student_texts(config, &examples, &mut Default::default())?;
    let started = std::time::Instant::now();
    let hidden = export.is_some();
    let train = signals(config, &mut teachers, &mut scorer, &train_texts, hidden, "train", None)?;
    let test = signals(config, &mut teachers, &mut scorer, &texts(&examples.test), hidden, "test", Some(&train))?;
    let seconds = started.elapsed().as_secs_f64();
    // Scored apart from the timed splits: the cost compares the passes over train and test.
    let validation = if examples.validation.is_empty() {
        None
    } else {
        let validation = texts(&examples.validation);
        Some(signals(config, &mut teachers, &mut scorer, &validation, hidden, "validation", Some(&train))?)
    };
    if let Some(dir) = export {
        let mut splits = vec![
            export::Split { name: "train", signals: &train, gold: train_gold.as_deref() },
            export::Split { name: "test", signals: &test, gold: Some(&examples.test_gold) },
        ];
        if let Some(validation) = &validation {
            splits.push(export::Split {
                name: "validation",
                signals: validation,
                gold: Some(&examples.validation_gold),
            });
        }
        export::write(dir, &labels, &teachers, &splits)?;
    }
    let provenance: Vec<SignalRecord> = train.provenance.iter().chain(&test.provenance).cloned().collect();
    // A selector's cost is another model's pass, not a number of the teachers' passes.
    let cost = match &estimator {
        Some(estimator) if config.selector.is_none() => {
            // (sampled texts, texts): the same for every teacher.
            let counts = |signals: &Signals| signals.sampled.first().map_or((0, 0), |s| (s.rows.len(), s.texts()));
            let ((train_sampled, train_all), (test_sampled, test_all)) = (counts(&train), counts(&test));
            let share = (train_sampled + test_sampled) as f64 / (train_all + test_all).max(1) as f64;
            cost_in_passes(estimator.plan()?, &provenance, share)
        }
        _ => None,
    };
    let computed = provenance.iter().any(|p| p.provenance == Provenance::Computed);
    let report = selection_report(
        (&train, train_gold.as_deref()),
        validation.as_ref().map(|v| (v, examples.validation_gold.as_slice())),
        (&test, &examples.test_gold),
        &labels,
    );
    let test_gold = &examples.test_gold;
    let own_class = teachers
        .iter()
        .zip(test.deterministic.iter().zip(&labels.maps))
        .map(|(teacher, (signals, map))| {
            let predictions = teacher_predictions(&signals.logits, map);
            (teacher.name.clone(), accuracy(&predictions, test_gold, Some(map)))
        })
        .collect();
    let picks = adequate_picks(test.scores.as_ref().expect("an estimator scores"), test_gold, &labels.maps);
    let by_teacher = labels
        .maps
        .iter()
        .map(|map| share(picks.iter().zip(test_gold).filter(|(_, g)| map.contains(g)).map(|(&p, _)| p)) as f64)
        .collect();
    Ok(SelectionOutcome {
        estimator: report.estimator.expect("an estimator scores both splits"),
        concat_argmax: report.concat_argmax,
        own_class,
        by_teacher,
        seconds: computed.then_some(seconds),
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal_cache::TeacherSignalSet;

    fn record(plan: &str, seconds: Option<f64>) -> SignalRecord {
        let provenance = if seconds.is_some() { Provenance::Computed } else { Provenance::Cached };
        SignalRecord { teacher: "a".into(), split: "test".into(), plan: plan.into(), provenance, seconds }
    }

    /// Two teachers, `a` over union labels {0, 1}, `b` over {2}, on three texts.
    fn two_teacher_signals(a: [[f32; 2]; 3], b: [f32; 3], scores: Option<Vec<Vec<f32>>>) -> Signals {
        let set = |labels: usize, values: Vec<f32>| TeacherSignalSet {
            logits: Tensor::new(vec![1, 3, labels], values).unwrap(),
            hidden: None,
        };
        Signals {
            deterministic: vec![set(2, a.concat()), set(1, b.to_vec())],
            sampled: Vec::new(),
            scores: scores.map(|rows| Tensor::from_rows(&rows).unwrap()),
            provenance: Vec::new(),
        }
    }

    #[test]
    fn selection_is_measured_per_split_for_the_estimator_and_the_concat_argmax_selector() {
        let labels = LabelSpace::union([&["x".to_string(), "y".into()][..], &["z".to_string()][..]]);
        // Concat-argmax picks a, b, a (largest logits 3, 4, 1); the estimator picks b, b, a.
        let scores = vec![vec![0.1, 0.9], vec![0.2, 0.8], vec![0.7, 0.3]];
        let train = two_teacher_signals([[3.0, 0.0], [1.0, 2.0], [1.0, 0.0]], [1.0, 4.0, 0.5], Some(scores));
        // Gold: z (b's), z (b's), x (a's): concat 2 of 3, estimator 3 of 3.
        let on_train = selection_on(&train, &[2, 2, 0], &labels);
        assert!((on_train.concat_argmax - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(on_train.estimator, Some(1.0));
        // Test gold: x, x, z: concat 1 of 3 (the first), estimator none; validation not scored.
        let report = selection_report((&train, Some(&[2, 2, 0])), None, (&train, &[0, 0, 2]), &labels);
        let estimator = report.estimator.unwrap();
        assert_eq!((estimator.train, estimator.validation, estimator.test), (Some(1.0), None, 0.0));
        assert!((report.concat_argmax.test - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(report.concat_argmax.validation, None);
        // Validation gold z, x, x: concat (a, b, a) 1 of 3, the third; the estimator (b, b, a) 2 of
        // 3, the first and the third. Gold for the training texts absent: no train column.
        let report = selection_report((&train, None), Some((&train, &[2, 0, 0])), (&train, &[0, 0, 2]), &labels);
        let estimator = report.estimator.unwrap();
        assert_eq!(estimator.train, None);
        assert!((estimator.validation.unwrap() - 2.0 / 3.0).abs() < 1e-6);
        assert!((report.concat_argmax.validation.unwrap() - 1.0 / 3.0).abs() < 1e-6);
        // No estimator: only the concat-argmax column; an unlabelled transfer set: no train column.
        let plain = two_teacher_signals([[3.0, 0.0], [1.0, 2.0], [1.0, 0.0]], [1.0, 4.0, 0.5], None);
        let report = selection_report((&plain, None), None, (&plain, &[2, 2, 0]), &labels);
        assert_eq!(report.estimator, None);
        assert_eq!(report.concat_argmax.train, None);
        assert!((report.concat_argmax.test - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn cost_is_measured_against_the_deterministic_pass_or_counted_in_full_passes() {
        let mc = SamplingPlan::Stochastic { passes: 8, top_layers: 0, lower_passes: 0 };
        let top = SamplingPlan::Stochastic { passes: 8, top_layers: 1, lower_passes: 0 };
        assert_eq!(cost_in_passes(SamplingPlan::Deterministic, &[], 1.0), Some(1.0));
        // Two teachers: deterministic 2 + 2 seconds, sampled 3 + 5: twice the deterministic pass.
        let measured = [
            record("deterministic", Some(2.0)),
            record("mc", Some(3.0)),
            record("deterministic", Some(2.0)),
            record("mc", Some(5.0)),
        ];
        assert_eq!(cost_in_passes(top, &measured, 1.0), Some(2.0));
        let cached = [record("deterministic", None), record("mc", None)];
        assert_eq!(cost_in_passes(mc, &cached, 1.0), Some(8.0), "plain MC: its passes");
        assert_eq!(cost_in_passes(top, &cached, 1.0), None, "top-layer MC from the cache: unknown");
        let share = SamplingPlan::StochasticShare { passes: 16, per_mille: 100, minimum: 2 };
        assert_eq!(cost_in_passes(share, &cached, 0.125), Some(2.0), "16 passes over an eighth of the texts");
    }
}
