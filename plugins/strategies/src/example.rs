//! Hand-computed examples for every strategy: teacher A with 2 labels (union 0, 1), teacher B
//! with 3 labels (union 2, 3, 4), 3 instances, exact zero probabilities (a logit of -1000
//! underflows to 0), and a batch of size 1.
//!
//! Teacher probabilities at T = 1:
//!   A: i0 [0, ln3] -> [1/4, 3/4];  i1 [0, 0] -> [1/2, 1/2];  i2 [0, -1000] -> [1, 0]
//!   B: i0 [0, 0, 0] -> [1/3]*3;    i1 [ln2, 0, -1000] -> [2/3, 1/3, 0];  i2 [0, ln2, ln5] -> [1/8, 2/8, 5/8]
//! Scores [B, T]: i0 [0.8, 0.2], i1 [0.1, 0.5], i2 [0.6, 0.6] (a tie).

use workbench_plugin_api::{
    DistributionTerm, FeatureMatch, FeatureTerm, Recipe, Strategy, StrategyInput, TeacherSignals, Tensor, Term,
};

use crate::{features::FeatureSettings, integration_weights, margin, Cfl, Dfa, Integration, Muka, Uhc, VanillaKd};

const NEG: f32 = -1000.0;

fn teacher(name: &str, label_map: Vec<u32>, rows: Vec<Vec<f32>>, hidden: Vec<Vec<f32>>) -> TeacherSignals {
    TeacherSignals {
        name: name.into(),
        label_map: label_map.into(),
        logits: Tensor::from_rows(&rows).unwrap(),
        hidden: Some(Tensor::from_rows(&hidden).unwrap()).into(),
    }
}

/// The example, or the single instance `only` of it (a batch of size 1).
fn input(only: Option<usize>) -> StrategyInput {
    let (l3, l2, l5) = (3f32.ln(), 2f32.ln(), 5f32.ln());
    let a = vec![vec![0.0, l3], vec![0.0, 0.0], vec![0.0, NEG]];
    let b = vec![vec![0.0, 0.0, 0.0], vec![l2, 0.0, NEG], vec![0.0, l2, l5]];
    let ha = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
    let hb = vec![vec![-1.0], vec![-2.0], vec![-3.0]];
    let scores = vec![vec![0.8, 0.2], vec![0.1, 0.5], vec![0.6, 0.6]];
    let pick = |rows: Vec<Vec<f32>>| match only {
        Some(i) => vec![rows[i].clone()],
        None => rows,
    };
    StrategyInput {
        union_labels: ["a0", "a1", "b0", "b1", "b2"].iter().map(|&l| l.into()).collect(),
        teachers: vec![teacher("A", vec![0, 1], pick(a), pick(ha)), teacher("B", vec![2, 3, 4], pick(b), pick(hb))]
            .into(),
        scores: Some(Tensor::from_rows(&pick(scores)).unwrap()).into(),
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

fn distribution(recipe: &Recipe, i: usize) -> &DistributionTerm {
    match &recipe.terms[i] {
        Term::Distribution(term) => term,
        other => panic!("term {i} is not a distribution term: {other:?}"),
    }
}

fn feature(recipe: &Recipe, i: usize) -> &FeatureTerm {
    match &recipe.terms[i] {
        Term::Feature(term) => term,
        other => panic!("term {i} is not a feature term: {other:?}"),
    }
}

fn recipe(strategy: &dyn Strategy, only: Option<usize>) -> Recipe {
    let input = input(only);
    let recipe = strategy.recipe(&input).unwrap();
    recipe.validate(input.batch_size(), 5).unwrap();
    recipe
}

/// Vanilla KD rows at T = 1: softmax of the concatenated logits.
/// i0 [0, ln3, 0, 0, 0] -> [1, 3, 1, 1, 1] / 7; i1 [0, 0, ln2, 0, -1000] -> [1, 1, 2, 1, 0] / 5;
/// i2 [0, -1000, 0, ln2, ln5] -> [1, 0, 1, 2, 5] / 9.
const KD: [[f32; 5]; 3] = [
    [1.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0],
    [0.2, 0.2, 0.4, 0.2, 0.0],
    [1.0 / 9.0, 0.0, 1.0 / 9.0, 2.0 / 9.0, 5.0 / 9.0],
];

#[test]
fn vanilla_kd_is_the_softmax_of_the_concatenated_logits() {
    let r = recipe(&VanillaKd { temperature: 1.0 }, None);
    let term = distribution(&r, 0);
    assert_eq!(term.labels.as_slice(), &[0, 1, 2, 3, 4]);
    assert_close(term.target.data(), KD.as_flattened());
    assert_eq!((term.temperature, term.scale), (1.0, 1.0));
    assert_close(distribution(&recipe(&VanillaKd { temperature: 1.0 }, Some(1)), 0).target.data(), &KD[1]);
    // T = 2 halves the logits; i0 [0, ln3/2, 0, 0, 0] -> [1, √3, 1, 1, 1] / (4 + √3); scale T² = 4.
    let r = recipe(&VanillaKd { temperature: 2.0 }, Some(0));
    let z = 4.0 + 3f32.sqrt();
    assert_close(distribution(&r, 0).target.data(), &[1.0 / z, 3f32.sqrt() / z, 1.0 / z, 1.0 / z, 1.0 / z]);
    assert_eq!(distribution(&r, 0).scale, 4.0);
}

#[test]
fn uhc_matches_each_teacher_on_its_own_labels() {
    let r = recipe(&Uhc { temperature: 1.0 }, None);
    assert_eq!(r.terms.len(), 2);
    let (a, b) = (distribution(&r, 0), distribution(&r, 1));
    assert_eq!((a.labels.as_slice(), b.labels.as_slice()), (&[0, 1][..], &[2, 3, 4][..]));
    assert_close(a.target.data(), &[0.25, 0.75, 0.5, 0.5, 1.0, 0.0]);
    let third = 1.0 / 3.0;
    assert_close(b.target.data(), &[third, third, third, 2.0 / 3.0, third, 0.0, 0.125, 0.25, 0.625]);
    assert_eq!(a.scale, 1.0);
    // T = 2 on i0 of A: [0, ln3/2] -> [1, √3] / (1 + √3) = [0.366025, 0.633975]; each term
    // scaled by T² = 4, as vanilla KD's.
    let r = recipe(&Uhc { temperature: 2.0 }, Some(0));
    assert_close(distribution(&r, 0).target.data(), &[0.366025, 0.633975]);
    assert_eq!((distribution(&r, 0).scale, distribution(&r, 1).scale), (4.0, 4.0));
}

#[test]
fn vanilla_kd_merges_a_label_two_teachers_own() {
    // A owns union {0, 1}, B owns {1, 2}. Concatenation [0, 0 | 0, ln 2] -> [1, 1, 1, 2] / 5;
    // label 1's two copies add up: [1/5, 2/5, 2/5] over the distinct labels 0, 1, 2.
    let mut overlapping = input(Some(0));
    overlapping.union_labels = ["x", "shared", "y"].iter().map(|&l| l.into()).collect();
    overlapping.teachers[0].label_map = vec![0, 1].into();
    overlapping.teachers[0].logits = Tensor::from_rows(&[vec![0.0, 0.0]]).unwrap();
    overlapping.teachers[1].label_map = vec![1, 2].into();
    overlapping.teachers[1].logits = Tensor::from_rows(&[vec![0.0, 2f32.ln()]]).unwrap();
    let recipe = VanillaKd { temperature: 1.0 }.recipe(&overlapping).unwrap();
    recipe.validate(1, 3).unwrap();
    let term = distribution(&recipe, 0);
    assert_eq!(term.labels.as_slice(), &[0, 1, 2]);
    assert_close(term.target.data(), &[0.2, 0.4, 0.4]);
}

#[test]
fn muka_margins_can_be_scaled_to_mean_one() {
    // Margins 0.600001, 0.400001, 0.000001 have mean 1.000003 / 3 = 0.333334; divided by it:
    // 1.799999, 1.200000, 0.000003. They average 1 by construction.
    let scaled = Muka {
        integration: Integration::Hard,
        margin: true,
        margin_mean_one: true,
        temperature: 1.0,
        within_blocks: false,
        margin_against_rival: false,
    };
    let weights = distribution(&recipe(&scaled, None), 0).weights().unwrap().to_vec();
    assert_close(&weights, &[1.799999, 1.2, 0.000003]);
    // A single instance is its own mean.
    assert_close(distribution(&recipe(&scaled, Some(0)), 0).weights().unwrap(), &[1.0]);
}

#[test]
fn muka_hard_takes_the_most_certain_teacher() {
    let hard = Muka {
        integration: Integration::Hard,
        margin: true,
        margin_mean_one: false,
        temperature: 1.0,
        within_blocks: false,
        margin_against_rival: false,
    };
    let r = recipe(&hard, None);
    let term = distribution(&r, 0);
    assert_eq!(term.labels.as_slice(), &[0, 1, 2, 3, 4]);
    // i0: A (0.8 > 0.2); i1: B (0.5 > 0.1); i2: a tie, the first teacher A.
    assert_close(
        term.target.data(),
        &[0.25, 0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0 / 3.0, 1.0 / 3.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    );
    // Margins |s1 - s2| + 1e-6: 0.6, 0.4, 0 (the tie).
    assert_close(term.weights().unwrap(), &[0.600001, 0.400001, 0.000001]);
    // A batch of size 1 works and gives the same row.
    let single = recipe(&hard, Some(1));
    assert_close(distribution(&single, 0).target.data(), &[0.0, 0.0, 2.0 / 3.0, 1.0 / 3.0, 0.0]);
    // Margin off: no weights.
    let off = Muka { margin: false, ..hard };
    assert!(distribution(&recipe(&off, None), 0).weights().is_none());
}

#[test]
fn muka_hard_equals_the_one_hot_choice_of_teacher() {
    // Hard integration is soft integration with one-hot weights on the argmax teacher.
    assert_eq!(integration_weights(&[0.8, 0.2], Integration::Hard), vec![1.0, 0.0]);
    assert_eq!(integration_weights(&[0.1, 0.5], Integration::Hard), vec![0.0, 1.0]);
    let hard = distribution(
        &recipe(
            &Muka {
                integration: Integration::Hard,
                margin: false,
                margin_mean_one: false,
                temperature: 1.0,
                within_blocks: false,
                margin_against_rival: false,
            },
            None,
        ),
        0,
    )
    .clone();
    let uhc = recipe(&Uhc { temperature: 1.0 }, None);
    let (pa, pb) = (distribution(&uhc, 0).target.data(), distribution(&uhc, 1).target.data());
    let choice = [0, 1, 0];
    for (b, &chosen) in choice.iter().enumerate() {
        let mut one_hot_row = [0.0f32; 5];
        if chosen == 0 {
            one_hot_row[..2].copy_from_slice(&pa[b * 2..b * 2 + 2]);
        } else {
            one_hot_row[2..].copy_from_slice(&pb[b * 3..b * 3 + 3]);
        }
        assert_close(hard.target.at(&[b]), &one_hot_row);
    }
}

#[test]
fn muka_within_blocks_adds_each_teachers_own_labels_after_the_integrated_target() {
    // Term 0 is MUKA's integrated target, unchanged; terms 1 and 2 are UHC's at T = 2: each
    // teacher on its own labels, every instance, no weights, scaled by T² = 4. On i0, A at T = 2:
    // [0, ln3/2] -> [1, √3] / (1 + √3); B stays uniform.
    let plain = Muka {
        integration: Integration::Hard,
        margin: true,
        margin_mean_one: false,
        temperature: 2.0,
        within_blocks: false,
        margin_against_rival: false,
    };
    let both = Muka { within_blocks: true, ..plain };
    let (alone, r) = (recipe(&plain, Some(0)), recipe(&both, Some(0)));
    assert_eq!((alone.terms.len(), r.terms.len()), (1, 3));
    assert_eq!(distribution(&r, 0), distribution(&alone, 0));
    let (a, b) = (distribution(&r, 1), distribution(&r, 2));
    assert_eq!((a.labels.as_slice(), b.labels.as_slice()), (&[0, 1][..], &[2, 3, 4][..]));
    assert_close(a.target.data(), &[0.366025, 0.633975]);
    assert_close(b.target.data(), &[1.0 / 3.0; 3]);
    assert_eq!((a.weights(), a.scale, b.scale), (None, 4.0, 4.0));
}

#[test]
fn muka_soft_integrates_by_softmax_of_scores() {
    // i0: w = softmax([0.8, 0.2] / 0.2) = softmax([4, 1]) = [0.952574, 0.047426];
    //     target = [0.952574 * 1/4, 0.952574 * 3/4, 0.047426 / 3 (x3)].
    // i1: w = softmax([0.5, 2.5]) = [0.119203, 0.880797]; target = [0.059601, 0.059601,
    //     0.880797 * 2/3, 0.880797 / 3, 0] (the exact zero stays zero).
    // i2: w = [1/2, 1/2]; target = [0.5, 0, 1/16, 1/8, 5/16].
    let soft = Muka {
        integration: Integration::Soft { tau: 0.2 },
        margin: true,
        margin_mean_one: false,
        temperature: 1.0,
        within_blocks: false,
        margin_against_rival: false,
    };
    let term = distribution(&recipe(&soft, None), 0).clone();
    assert_close(
        term.target.data(),
        &[
            0.238144, 0.714431, 0.015809, 0.015809, 0.015809, 0.059601, 0.059601, 0.587198, 0.293599, 0.0, 0.5, 0.0,
            0.0625, 0.125, 0.3125,
        ],
    );
    assert_eq!(term.target.at(&[1])[4], 0.0);
    assert_close(term.weights().unwrap(), &[0.600001, 0.400001, 0.000001]);
}

#[test]
fn muka_soft_approaches_hard_as_tau_goes_to_zero() {
    let hard = distribution(
        &recipe(
            &Muka {
                integration: Integration::Hard,
                margin: true,
                margin_mean_one: false,
                temperature: 1.0,
                within_blocks: false,
                margin_against_rival: false,
            },
            Some(0),
        ),
        0,
    )
    .clone();
    let mut previous_gap = f32::INFINITY;
    for tau in [1.0, 0.1, 0.01, 0.001] {
        let soft = Muka {
            integration: Integration::Soft { tau },
            margin: true,
            margin_mean_one: false,
            temperature: 1.0,
            within_blocks: false,
            margin_against_rival: false,
        };
        let term = distribution(&recipe(&soft, Some(0)), 0).clone();
        let gap = term.target.data().iter().zip(hard.target.data()).map(|(s, h)| (s - h).abs()).fold(0.0, f32::max);
        assert!(gap < previous_gap, "gap {gap} at tau {tau} did not shrink from {previous_gap}");
        previous_gap = gap;
    }
    assert!(previous_gap < 1e-6, "at tau 0.001 the soft target is the hard one (gap {previous_gap})");
}

#[test]
fn margins_are_the_gap_between_the_two_highest_scores() {
    assert!((margin(&[0.8, 0.2]) - 0.600001).abs() < 1e-7);
    assert!((margin(&[0.2, 0.9, 0.5]) - 0.400001).abs() < 1e-6, "top two of three");
    assert_eq!(margin(&[0.3, 0.3]), 1e-6);
    assert_eq!(margin(&[0.7]), 1.0, "a single teacher is never contested");
}

#[test]
fn muka_without_scores_is_refused() {
    let mut no_scores = input(None);
    no_scores.scores = None.into();
    let error = Muka {
        integration: Integration::Hard,
        margin: true,
        margin_mean_one: false,
        temperature: 1.0,
        within_blocks: false,
        margin_against_rival: false,
    }
    .recipe(&no_scores)
    .unwrap_err();
    assert!(error.message.contains("configure an estimator"), "{error}");
}

const FEATURES: FeatureSettings =
    FeatureSettings { temperature: 1.0, code_dim: 4, feature_weight: 0.5, reconstruction_weight: 2.0 };

#[test]
fn dfa_adds_the_concatenated_hidden_states_to_vanilla_kd() {
    let r = recipe(&Dfa(FEATURES), None);
    assert_eq!(r.terms.len(), 2);
    assert_close(distribution(&r, 0).target.data(), KD.as_flattened());
    let f = feature(&r, 1);
    assert_eq!((f.name.as_str(), f.matching, f.code_dim), ("dfa", FeatureMatch::Mse, 4));
    assert_eq!((f.weight, f.reconstruction_weight), (0.5, 2.0));
    assert_eq!(f.target.shape(), &[3, 3]);
    assert_eq!(f.target.data(), &[1.0, 2.0, -1.0, 3.0, 4.0, -2.0, 5.0, 6.0, -3.0]);
    assert_eq!(feature(&recipe(&Dfa(FEATURES), Some(2)), 1).target.data(), &[5.0, 6.0, -3.0]);
}

#[test]
fn cfl_matches_each_teacher_in_a_common_space_with_mmd() {
    let r = recipe(&Cfl(FEATURES), None);
    assert_eq!(r.terms.len(), 3);
    assert_close(distribution(&r, 0).target.data(), KD.as_flattened());
    let (a, b) = (feature(&r, 1), feature(&r, 2));
    assert_eq!((a.name.as_str(), b.name.as_str()), ("cfl/A", "cfl/B"));
    assert_eq!((a.matching, b.matching), (FeatureMatch::Mmd, FeatureMatch::Mmd));
    assert_eq!(a.target.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(b.target.data(), &[-1.0, -2.0, -3.0]);
}

#[test]
fn feature_strategies_refuse_teachers_without_hidden_states() {
    let mut no_hidden = input(None);
    no_hidden.teachers[1].hidden = None.into();
    let error = Dfa(FEATURES).recipe(&no_hidden).unwrap_err();
    assert!(error.message.contains("teacher `B` gave none"), "{error}");
}

/// Teachers sharing a label: A over x, y (union 0, 1), B over y, z (union 1, 2).
/// i0: A is on top (0.9 > 0.7) and predicts y, which B owns too: no rival, so the batch's largest
///     margin, 0.5 (against the second score it would be 0.2).
/// i1: A on top (0.8) predicts x; B does not own x: rival B (0.3), margin 0.5.
/// i2: B on top (0.6) predicts z; A does not own z: rival A (0.2), margin 0.4.
#[test]
fn muka_margins_against_a_rival_leave_out_teachers_that_own_the_predicted_label() {
    let teachers = vec![
        teacher("A", vec![0, 1], vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.0, 0.0]], vec![vec![0.0]; 3]),
        teacher("B", vec![1, 2], vec![vec![0.0, 0.0], vec![0.0, 0.0], vec![0.0, 2.0]], vec![vec![0.0]; 3]),
    ];
    let scores = vec![vec![0.9, 0.7], vec![0.8, 0.3], vec![0.2, 0.6]];
    let input = StrategyInput {
        union_labels: ["x", "y", "z"].iter().map(|&l| l.into()).collect(),
        teachers: teachers.into(),
        scores: Some(Tensor::from_rows(&scores).unwrap()).into(),
    };
    let muka = |margin_against_rival| Muka {
        integration: Integration::Hard,
        margin: true,
        margin_mean_one: false,
        margin_against_rival,
        temperature: 1.0,
        within_blocks: false,
    };
    let weights = |rival| distribution(&muka(rival).recipe(&input).unwrap(), 0).weights().unwrap().to_vec();
    assert_close(&weights(true), &[0.500001, 0.500001, 0.400001]);
    assert_close(&weights(false), &[0.200001, 0.500001, 0.400001]);
}
