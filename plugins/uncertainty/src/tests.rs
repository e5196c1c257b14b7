//! Hand-computed examples: 2 teachers with 2 and 3 labels, 3 instances, exact zero
//! probabilities, and a batch of size 1. Samples are written as probabilities and handed over
//! as their logarithms, whose softmax at T = 1 gives them back.

use workbench_plugin_api::{ParamValue, SamplingPlan, TeacherSamples, Tensor};

use super::*;

/// `[S, B, L]` samples from `passes[s][b]` probability rows.
fn samples(teacher: &str, passes: &[&[&[f32]]]) -> TeacherSamples {
    let (s, b, l) = (passes.len(), passes[0].len(), passes[0][0].len());
    let data: Vec<f32> = passes.iter().flat_map(|p| p.iter().flat_map(|row| row.iter().map(|p| p.ln()))).collect();
    let logits = Tensor::new(vec![s, b, l], data).unwrap();
    // The first pass stands for the deterministic one.
    TeacherSamples::of_every_text(teacher, logits.clone(), logits.part(0))
}

fn assert_scores(scores: &Tensor, expected: &[[f32; 2]]) {
    assert_eq!(scores.shape(), &[expected.len(), 2]);
    for (got, want) in scores.data().iter().zip(expected.iter().flatten()) {
        assert!((got - want).abs() < 1e-5, "got {:?}, expected {expected:?}", scores.data());
    }
}

fn estimator(plan: SamplingPlan, measure: Measure) -> SampleEstimator {
    SampleEstimator { plan, measure, temperature: 1.0, scale: Scale::Raw }
}

const MC: SamplingPlan = SamplingPlan::Stochastic { passes: 2, top_layers: 0, lower_passes: 0 };

#[test]
fn entropy_estimator_by_hand() {
    // Teacher A (2 labels): [1/2,1/2] -> 1 - ln2/ln2 = 0; [1/4,3/4] -> H = 0.562335, 1 - H/ln2 = 0.188722;
    //   [1,0] -> 0 ln 0 = 0, H = 0, certainty 1.
    // Teacher B (3 labels): [1,0,0] -> 1; [1/2,1/2,0] -> 1 - ln2/ln3 = 0.369070; uniform -> 0.
    let a = samples("A", &[&[&[0.5, 0.5], &[0.25, 0.75], &[1.0, 0.0]]]);
    let b = samples("B", &[&[&[1.0, 0.0, 0.0], &[0.5, 0.5, 0.0], &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]]]);
    let entropy = estimator(SamplingPlan::Deterministic, Measure::Entropy);
    let scores = entropy.score(&[a, b]).unwrap();
    assert_scores(&scores, &[[0.0, 1.0], [0.188722, 0.369070], [1.0, 0.0]]);
    // Batch of size 1: instance 1 alone gives its row.
    let a1 = samples("A", &[&[&[0.25, 0.75]]]);
    let b1 = samples("B", &[&[&[0.5, 0.5, 0.0]]]);
    assert_scores(&entropy.score(&[a1, b1]).unwrap(), &[[0.188722, 0.369070]]);
    // max-prob: A [1/4,3/4] -> (3/4 - 1/2)/(1/2) = 0.5; B [1/2,1/2,0] -> (1/2 - 1/3)/(2/3) = 0.25.
    let a1 = samples("A", &[&[&[0.25, 0.75]]]);
    let b1 = samples("B", &[&[&[0.5, 0.5, 0.0]]]);
    assert_scores(&estimator(SamplingPlan::Deterministic, Measure::MaxProb).score(&[a1, b1]).unwrap(), &[[0.5, 0.25]]);
}

/// Two passes per teacher. A: instance 0 flips between [1,0] and [0,1]; instance 1 repeats
/// [1/4,3/4]; instance 2 is [1,0] then [1/2,1/2]. B: instance 0 repeats [1,0,0]; instance 1 is
/// [1,0,0] then [0,1,0]; instance 2 repeats uniform.
fn two_pass_samples() -> [TeacherSamples; 2] {
    let third = 1.0 / 3.0;
    [
        samples("A", &[&[&[1.0, 0.0], &[0.25, 0.75], &[1.0, 0.0]], &[&[0.0, 1.0], &[0.25, 0.75], &[0.5, 0.5]]]),
        samples(
            "B",
            &[
                &[&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0], &[third, third, third]],
                &[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0], &[third, third, third]],
            ],
        ),
    ]
}

#[test]
fn mc_dropout_entropy_of_the_mean_by_hand() {
    // A0: mean [1/2,1/2] -> 0. A1: mean [1/4,3/4] -> 0.188722. A2: mean [3/4,1/4] -> 0.188722.
    // B0: [1,0,0] -> 1. B1: mean [1/2,1/2,0] -> 0.369070. B2: uniform -> 0.
    let scores = estimator(MC, Measure::Entropy).score(&two_pass_samples()).unwrap();
    assert_scores(&scores, &[[0.0, 1.0], [0.188722, 0.369070], [0.188722, 0.0]]);
    // Batch of size 1: instance 2 alone.
    let a = samples("A", &[&[&[1.0, 0.0]], &[&[0.5, 0.5]]]);
    let third = 1.0 / 3.0;
    let b = samples("B", &[&[&[third, third, third]], &[&[third, third, third]]]);
    assert_scores(&estimator(MC, Measure::Entropy).score(&[a, b]).unwrap(), &[[0.188722, 0.0]]);
}

#[test]
fn mc_dropout_mutual_information_by_hand() {
    // certainty = 1 - (H(mean) - mean_s H(p_s)) / ln L
    // A0: H(mean) = ln2, passes one-hot (H = 0): MI = ln2 -> 0.
    // A1: identical passes: MI = 0 -> 1.
    // A2: H(mean [3/4,1/4]) = 0.562335, mean H = (0 + ln2)/2 = 0.346574: MI = 0.215762, / ln2 = 0.311278 -> 0.688722.
    // B0: identical -> 1. B1: H(mean [1/2,1/2,0]) = ln2, passes one-hot: MI = ln2, / ln3 = 0.630930 -> 0.369070.
    // B2: identical -> 1.
    let scores = estimator(MC, Measure::MutualInformation).score(&two_pass_samples()).unwrap();
    assert_scores(&scores, &[[0.0, 1.0], [1.0, 0.369070], [0.688722, 1.0]]);
    // Batch of size 1: instance 1 alone.
    let a = samples("A", &[&[&[0.25, 0.75]], &[&[0.25, 0.75]]]);
    let b = samples("B", &[&[&[1.0, 0.0, 0.0]], &[&[0.0, 1.0, 0.0]]]);
    assert_scores(&estimator(MC, Measure::MutualInformation).score(&[a, b]).unwrap(), &[[1.0, 0.369070]]);
}

#[test]
fn ensemble_scores_members_and_refuses_a_single_member_teacher() {
    // Members are samples like MC passes: same numbers as the MC entropy example.
    let scores = estimator(SamplingPlan::Members, Measure::Entropy).score(&two_pass_samples()).unwrap();
    assert_scores(&scores, &[[0.0, 1.0], [0.188722, 0.369070], [0.188722, 0.0]]);
    // Batch of size 1: instance 0 alone.
    let a = samples("A", &[&[&[1.0, 0.0]], &[&[0.0, 1.0]]]);
    let b = samples("B", &[&[&[1.0, 0.0, 0.0]], &[&[1.0, 0.0, 0.0]]]);
    assert_scores(&estimator(SamplingPlan::Members, Measure::Entropy).score(&[a, b]).unwrap(), &[[0.0, 1.0]]);
    let single = [samples("A", &[&[&[0.5, 0.5]]]), samples("solo", &[&[&[1.0, 0.0, 0.0]]])];
    let error = estimator(SamplingPlan::Members, Measure::Entropy).score(&single).unwrap_err();
    assert!(error.message.contains("teacher `A` has 1"), "{error}");
}

#[test]
fn mismatched_batches_are_refused() {
    let a = samples("A", &[&[&[0.5, 0.5], &[0.5, 0.5]]]);
    let b = samples("B", &[&[&[1.0, 0.0, 0.0]]]);
    let error = estimator(SamplingPlan::Deterministic, Measure::Entropy).score(&[a, b]).unwrap_err();
    assert!(error.message.contains("teacher `B`"), "{error}");
}

#[test]
fn mc_dropout_plans_its_depth_and_refuses_lower_passes_it_cannot_use() {
    let params = |top: i64, lower: i64| {
        ParamTable::default()
            .with("passes", ParamValue::Int(16))
            .with("measure", ParamValue::Text("entropy".into()))
            .with("temperature", ParamValue::Float(1.0))
            .with("scale", ParamValue::Text("raw".into()))
            .with("top_layers", ParamValue::Int(top))
            .with("lower_passes", ParamValue::Int(lower))
    };
    let plan = UncertaintyPlugin::create_estimator("mc-dropout", &params(1, 2)).unwrap().plan();
    assert_eq!(plan, SamplingPlan::Stochastic { passes: 16, top_layers: 1, lower_passes: 2 });
    let error = |top, lower| UncertaintyPlugin::create_estimator("mc-dropout", &params(top, lower)).err().unwrap();
    assert!(error(0, 2).to_string().contains("`lower_passes` needs `top_layers` > 0"), "{}", error(0, 2));
    assert!(error(1, 17).to_string().contains("more than the 16 `passes`"), "{}", error(1, 17));
}

#[test]
fn max_logit_of_one_pass_picks_the_teacher_holding_the_concatenated_argmax() {
    // Logits A [2, 0], B [1, 3, 0]: the concatenation's argmax (3) is B's -> scores [2, 3].
    // A [4, 1], B [0, 0, 3.5]: A's 4 -> [4, 3.5].
    let one_pass = |teacher, logits: Tensor| TeacherSamples::of_every_text(teacher, logits.clone(), logits.part(0));
    let a = one_pass("A", Tensor::new(vec![1, 2, 2], vec![2.0, 0.0, 4.0, 1.0]).unwrap());
    let b = one_pass("B", Tensor::new(vec![1, 2, 3], vec![1.0, 3.0, 0.0, 0.0, 0.0, 3.5]).unwrap());
    let scores = estimator(SamplingPlan::Deterministic, Measure::MaxLogit).score(&[a.clone(), b.clone()]).unwrap();
    assert_scores(&scores, &[[2.0, 3.0], [4.0, 3.5]]);
    // Energy of the same: A [2, 0] -> ln(e^2 + 1) - ln 2 = 2.126928 - 0.693147 = 1.433781;
    // A [4, 1] -> ln(e^4 + e) - ln 2 = 4.048587 - 0.693147 = 3.355440; B [1, 3, 0] -> ln(e + e^3 + 1)
    // - ln 3 = 3.169846 - 1.098612 = 2.071234; B [0, 0, 3.5] -> ln(2 + e^3.5) - ln 3 = 3.558641 - 1.098612
    // = 2.460029.
    let scores = estimator(SamplingPlan::Deterministic, Measure::Energy).score(&[a, b]).unwrap();
    assert_scores(&scores, &[[1.433781, 2.071234], [3.35544, 2.460029]]);
}

#[test]
fn the_scale_rescales_every_score_of_the_call_together() {
    // Raw MC entropy scores of the two-pass example: [[0, 1], [0.188722, 0.369070], [0.188722, 0]].
    // Rank over all six (n - 1 = 5): the two 0s -> 0.5/5 = 0.1; the two 0.188722 -> 2.5/5 = 0.5;
    // 0.369070 -> 4/5 = 0.8; 1 -> 1.
    let ranked = SampleEstimator { scale: Scale::Rank, ..estimator(MC, Measure::Entropy) };
    assert_scores(&ranked.score(&two_pass_samples()).unwrap(), &[[0.1, 1.0], [0.5, 0.8], [0.5, 0.1]]);
    // Every instance keeps its most certain teacher.
    let standard = SampleEstimator { scale: Scale::Standard, ..estimator(MC, Measure::Entropy) };
    let scores = standard.score(&two_pass_samples()).unwrap();
    let mean: f32 = scores.data().iter().sum::<f32>() / 6.0;
    assert!(mean.abs() < 1e-6, "standardized scores have mean 0, got {mean}");
    for b in 0..3 {
        let (raw, std) =
            (estimator(MC, Measure::Entropy).score(&two_pass_samples()).unwrap(), scores.at(&[b]).to_vec());
        assert_eq!(raw.at(&[b])[0] > raw.at(&[b])[1], std[0] > std[1]);
    }
}

#[test]
fn top_variance_reads_disagreement_between_passes() {
    // A0 flips [1,0]/[0,1]: variance of the top class 1/4 -> 0; A1 repeats -> 1; A2 [1,0] then
    // [1/2,1/2]: top 0 with values 1 and 1/2, variance 1/16 -> 0.75. B0 repeats -> 1; B1 [1,0,0]
    // then [0,1,0]: top 0 (first on the tie), variance 1/4 -> 0; B2 repeats -> 1.
    let scores = estimator(MC, Measure::TopVariance).score(&two_pass_samples()).unwrap();
    assert_scores(&scores, &[[0.0, 1.0], [1.0, 0.0], [0.75, 1.0]]);
}

/// One standardized feature x = [-1, 1] (mean 0, spread 1) and a constant, targets [0, 2],
/// lambda 1: X'X = 2 I, X'y = [2, 2], so w = [2/3, 2/3]; at x = 3: 2/3 * 3 + 2/3 = 8/3.
#[test]
fn ridge_fit_by_hand() {
    let ridge = fit::Ridge::fit(&[vec![-1.0], vec![1.0]], &[0.0, 2.0], 1.0);
    assert!((ridge.predict(&[3.0]) - 8.0 / 3.0).abs() < 1e-5, "{}", ridge.predict(&[3.0]));
    assert!((ridge.predict(&[0.0]) - 2.0 / 3.0).abs() < 1e-5, "{}", ridge.predict(&[0.0]));
    // Features on another scale fit the same: standardization takes x = [9, 11] to [-1, 1].
    let shifted = fit::Ridge::fit(&[vec![9.0], vec![11.0]], &[0.0, 2.0], 1.0);
    assert!((shifted.predict(&[13.0]) - 8.0 / 3.0).abs() < 1e-5, "{}", shifted.predict(&[13.0]));
}

/// Targets on an exact plane y = 2 x0 - x1 + 0.5 over 12 rows: every bootstrap fit (lambda
/// 1e-9) recovers the plane from a resample with 3 distinct rows not on a line, so the mean of
/// 8 such fits predicts the plane too, at a row none of them saw.
#[test]
fn bagged_ridge_fits_average_to_the_plane_they_each_recover() {
    let rows: Vec<Vec<f64>> = (0..12).map(|i| vec![f64::from(i % 4), f64::from(i * i % 7)]).collect();
    let plane = |r: &[f64]| 2.0 * r[0] - r[1] + 0.5;
    let targets: Vec<f64> = rows.iter().map(|r| plane(r)).collect();
    let bagged = fit::Bagged::fit(&rows, &targets, 1e-9, 8);
    assert!((bagged.predict(&[10.0, -3.0]) - 23.5).abs() < 1e-4, "{}", bagged.predict(&[10.0, -3.0]));
    // Off the plane the resamples disagree: their mean is not the fit on every row, and one bag is.
    let noisy: Vec<f64> = targets.iter().enumerate().map(|(i, t)| t + [0.3, -0.2, 0.1][i % 3]).collect();
    let whole = fit::Ridge::fit(&rows, &noisy, 1.0).predict(&[10.0, -3.0]);
    assert_eq!(fit::Bagged::fit(&rows, &noisy, 1.0, 1).predict(&[10.0, -3.0]), whole);
    let bagged = fit::Bagged::fit(&rows, &noisy, 1.0, 8).predict(&[10.0, -3.0]);
    assert!((bagged - whole).abs() > 1e-3, "bagged {bagged}, whole {whole}");
    // The resamples come from a fixed seed: the same call gives the same prediction.
    assert_eq!(fit::Bagged::fit(&rows, &noisy, 1.0, 8).predict(&[10.0, -3.0]), bagged);
}

/// `mc-fitted` with Entropy over 2 passes, fitting from `minimum` sampled texts.
fn fitted(minimum: u32, ridge: f64) -> FittedEstimator {
    let plan = SamplingPlan::StochasticShare { passes: 2, per_mille: 500, minimum };
    FittedEstimator {
        measured: SampleEstimator { plan, measure: Measure::Entropy, temperature: 1.0, scale: Scale::Raw },
        ridge,
        fit_ranks: false,
        bags: 1,
    }
}

/// A split of fewer texts than the minimum is sampled whole and measured exactly as
/// `mc-dropout` measures it; from the minimum on, even a whole split gets the fit's values
/// (lambda 1e9 shrinks every weight, the constant's too, to about 0, where B measures 1 on text 0).
#[test]
fn mc_fitted_measures_a_split_below_its_minimum_and_fits_from_it_on() {
    let mc = estimator(MC, Measure::Entropy).score(&two_pass_samples()).unwrap();
    assert_eq!(fitted(4, 1e9).score(&two_pass_samples()).unwrap(), mc);
    let [a, b] = two_pass_samples().map(|t| {
        let hidden = Tensor::new(vec![3, 1], vec![1.0, 2.0, 3.0]).unwrap();
        TeacherSamples::of_some_texts(
            &t.teacher,
            t.logits.clone(),
            vec![0, 1, 2],
            t.deterministic.clone(),
            Some(hidden),
        )
    });
    let shrunk = fitted(3, 1e9).score(&[a, b]).unwrap();
    assert!(shrunk.data().iter().all(|v| v.abs() < 1e-6), "{:?} against {:?}", shrunk.data(), mc.data());
}

/// Teacher A sampled on texts 0 and 2 of 3 (the two-pass example's texts 0 and 2: MC entropy 0
/// and 0.188722); text 1 has the same deterministic pass and hidden state as text 2, so a fit
/// that interpolates (lambda 1e-6) predicts text 2's value for it, and the sampled texts' own.
#[test]
fn mc_fitted_measures_the_sampled_texts_and_predicts_the_others() {
    let [a, _] = two_pass_samples();
    let row = |s, b| a.logits.at(&[s, b]).to_vec();
    let sampled = Tensor::new(vec![2, 2, 2], [row(0, 0), row(0, 2), row(1, 0), row(1, 2)].concat()).unwrap();
    let deterministic =
        Tensor::new(vec![3, 2], [a.logits.at(&[0, 0]), a.logits.at(&[0, 2]), a.logits.at(&[0, 2])].concat()).unwrap();
    let hidden = Tensor::new(vec![3, 2], vec![0.5, -1.0, 2.0, 0.25, 2.0, 0.25]).unwrap();
    let teacher = TeacherSamples::of_some_texts("A", sampled.clone(), vec![0, 2], deterministic.clone(), Some(hidden));
    let scores = fitted(2, 1e-6).score(std::slice::from_ref(&teacher)).unwrap();
    assert_eq!(scores.shape(), &[3, 1]);
    for (got, want) in scores.data().iter().zip([0.0, 0.188722, 0.188722]) {
        assert!((got - want).abs() < 1e-4, "{:?}", scores.data());
    }
    // Fitted to ranks: the two sampled texts rank 0 and 1 within the teacher, and so does the
    // text that looks like text 2.
    let ranked = FittedEstimator { fit_ranks: true, ..fitted(2, 1e-6) }.score(&[teacher]).unwrap();
    for (got, want) in ranked.data().iter().zip([0.0, 1.0, 1.0]) {
        assert!((got - want).abs() < 1e-4, "{:?}", ranked.data());
    }
    // Without hidden states the texts that were not sampled cannot be predicted.
    let blind = TeacherSamples::of_some_texts("A", sampled.clone(), vec![0, 2], deterministic.clone(), None);
    let error = fitted(2, 1e-6).score(&[blind]).unwrap_err().to_string();
    assert!(
        error.contains("teacher `A` has samples of 2 of its 3 texts but no hidden states to fit their certainty on"),
        "{error}"
    );
    // Rows must name distinct texts in order.
    let unordered =
        TeacherSamples::of_some_texts("A", sampled, vec![2, 0], deterministic, Some(Tensor::zeros(vec![3, 2])));
    let error = fitted(2, 1e-6).score(&[unordered]).unwrap_err().to_string();
    assert!(
        error.contains(
            "sampled rows of teacher `A` must be at least 2 distinct texts in ascending order below 3, got [2, 0]"
        ),
        "{error}"
    );
}

#[test]
fn mc_fitted_plans_its_share_from_its_parameters() {
    let params = |share: f64| {
        let defaults = UncertaintyPlugin::manifest().component("mc-fitted").unwrap().params.clone();
        let table = defaults.iter().fold(ParamTable::default(), |table, spec| {
            table.with(&spec.name, spec.default.clone().into_option().unwrap())
        });
        table.with("share", ParamValue::Float(share))
    };
    let plan = UncertaintyPlugin::create_estimator("mc-fitted", &params(0.25)).unwrap().plan();
    assert_eq!(plan, SamplingPlan::StochasticShare { passes: 16, per_mille: 250, minimum: 256 });
    // 25 % of 2,000 texts is 500; of 900 it is 225, below the minimum 256; 100 texts: all of them.
    assert_eq!([2000, 900, 100].map(|n| plan.sampled_texts(n)), [500, 256, 100]);
}
