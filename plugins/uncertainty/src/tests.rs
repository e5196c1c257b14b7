//! Hand-computed examples: 2 teachers with 2 and 3 labels, 3 instances, exact zero
//! probabilities, and a batch of size 1.

use workbench_plugin_api::{ParamValue, SamplingPlan, TeacherSamples, Tensor};

use super::*;

/// `[S, B, L]` samples from `passes[s][b]` rows.
fn samples(teacher: &str, passes: &[&[&[f32]]]) -> TeacherSamples {
    let (s, b, l) = (passes.len(), passes[0].len(), passes[0][0].len());
    let data: Vec<f32> = passes.iter().flat_map(|p| p.iter().flat_map(|row| row.to_vec())).collect();
    TeacherSamples { teacher: teacher.into(), probs: Tensor::new(vec![s, b, l], data).unwrap() }
}

fn assert_scores(scores: &Tensor, expected: &[[f32; 2]]) {
    assert_eq!(scores.shape(), &[expected.len(), 2]);
    for (got, want) in scores.data().iter().zip(expected.iter().flatten()) {
        assert!((got - want).abs() < 1e-5, "got {:?}, expected {expected:?}", scores.data());
    }
}

fn estimator(plan: SamplingPlan, measure: Measure) -> SampleEstimator {
    SampleEstimator { plan, measure }
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
            .with("top_layers", ParamValue::Int(top))
            .with("lower_passes", ParamValue::Int(lower))
    };
    let plan = UncertaintyPlugin::create_estimator("mc-dropout", &params(1, 2)).unwrap().plan();
    assert_eq!(plan, SamplingPlan::Stochastic { passes: 16, top_layers: 1, lower_passes: 2 });
    let error = |top, lower| UncertaintyPlugin::create_estimator("mc-dropout", &params(top, lower)).err().unwrap();
    assert!(error(0, 2).to_string().contains("`lower_passes` needs `top_layers` > 0"), "{}", error(0, 2));
    assert!(error(1, 17).to_string().contains("more than the 16 `passes`"), "{}", error(1, 17));
}
