use candle_core::{Device, Tensor, Var};
use workbench_plugin_api::{DistributionTerm, FeatureMatch, FeatureTerm, Recipe, Tensor as PlainTensor, Term};

use super::*;

fn distribution(
    labels: Vec<u32>,
    rows: &[Vec<f32>],
    weights: Option<Vec<f32>>,
    temperature: f32,
    scale: f32,
) -> DistributionTerm {
    DistributionTerm {
        labels: labels.into(),
        target: PlainTensor::from_rows(rows).unwrap(),
        weights: weights.map(Into::into).into(),
        temperature,
        scale,
    }
}

fn feature(name: &str, rows: &[Vec<f32>], matching: FeatureMatch) -> FeatureTerm {
    FeatureTerm {
        name: name.into(),
        target: PlainTensor::from_rows(rows).unwrap(),
        matching,
        code_dim: 3,
        reconstruction_weight: 1.0,
        weight: 1.0,
    }
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

fn student_logits(rows: &[[f32; 3]]) -> Tensor {
    Tensor::from_iter(rows.iter().flatten().copied(), &Device::Cpu).unwrap().reshape((rows.len(), 3)).unwrap()
}

#[test]
fn distribution_loss_by_hand() {
    // Student logits over labels 0, 1 are [0, ln3]: q = [1/4, 3/4] (label 2 is left out).
    let logits = student_logits(&[[0.0, 3f32.ln(), 5.0]]);
    // KL([1/2,1/2] || q) = 1/2 ln(2) + 1/2 ln(2/3) = 0.346574 - 0.202733 = 0.143841
    let term = distribution(vec![0, 1], &[vec![0.5, 0.5]], None, 1.0, 1.0);
    assert!((scalar(&distribution_loss(&term, &logits).unwrap()) - 0.143841).abs() < 1e-5);
    // An exact zero in the target contributes 0 (no NaN): KL([1, 0] || q) = ln 4 = 1.386294.
    let term = distribution(vec![0, 1], &[vec![1.0, 0.0]], None, 1.0, 1.0);
    assert!((scalar(&distribution_loss(&term, &logits).unwrap()) - 1.386294).abs() < 1e-5);
    // Temperature 2 halves the logits: q = softmax([0, ln3/2]) = [0.366025, 0.633975];
    // KL([1, 0] || q) = -ln 0.366025 = 1.005053; scale 4 gives 4.020212.
    let term = distribution(vec![0, 1], &[vec![1.0, 0.0]], None, 2.0, 4.0);
    assert!((scalar(&distribution_loss(&term, &logits).unwrap()) - 4.020212).abs() < 1e-4);
}

#[test]
fn instance_weights_scale_each_row_before_the_batch_mean() {
    // Two instances with KL 0.143841 and 1.386294 (as above), weights 2 and 0.5:
    // (2 * 0.143841 + 0.5 * 1.386294) / 2 = (0.287682 + 0.693147) / 2 = 0.490415.
    let logits = student_logits(&[[0.0, 3f32.ln(), 0.0], [0.0, 3f32.ln(), 0.0]]);
    let term = distribution(vec![0, 1], &[vec![0.5, 0.5], vec![1.0, 0.0]], Some(vec![2.0, 0.5]), 1.0, 1.0);
    assert!((scalar(&distribution_loss(&term, &logits).unwrap()) - 0.490415).abs() < 1e-5);
}

#[test]
fn mmd_is_zero_for_identical_batches_and_grows_with_a_shift() {
    let x = Tensor::new(&[[0.0f32, 1.0], [1.0, 0.0], [0.5, 0.5]], &Device::Cpu).unwrap();
    assert!(scalar(&mmd(&x, &x).unwrap()).abs() < 1e-6);
    let near = scalar(&mmd(&x, &(x.clone() + 0.5).unwrap()).unwrap());
    let far = scalar(&mmd(&x, &(x.clone() + 3.0).unwrap()).unwrap());
    assert!(0.0 < near && near < far, "near {near}, far {far}");
}

/// A linear student over fixed inputs: logits = X W, hidden = X V.
struct Student {
    w: Var,
    v: Var,
    x: Tensor,
}

impl Student {
    fn new() -> Self {
        let device = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, 0.5, -1.0, 2.0], [0.0, 1.0, 1.0, -0.5]], &device).unwrap();
        let w = Var::from_tensor(
            &Tensor::new(&[[0.1f32, -0.2, 0.3], [0.0, 0.1, 0.2], [0.3, 0.1, 0.0], [-0.1, 0.2, 0.1]], &device).unwrap(),
        )
        .unwrap();
        let v = Var::from_tensor(&Tensor::new(&[[0.2f32, -0.1], [0.1, 0.3], [0.0, 0.2], [0.1, 0.1]], &device).unwrap())
            .unwrap();
        Self { w, v, x }
    }

    /// Gradient norms of W and V and of every adapter variable for `recipe`'s loss.
    fn gradient_norms(&self, recipe: &Recipe) -> (f32, f32, Vec<f32>) {
        let logits = self.x.matmul(self.w.as_tensor()).unwrap();
        let hidden = self.x.matmul(self.v.as_tensor()).unwrap();
        let mut adapters = FeatureAdapters::new(0, &Device::Cpu);
        let loss =
            recipe_loss(recipe, &StudentOutput { logits: &logits, hidden: Some(&hidden) }, &mut adapters).unwrap();
        let grads = loss.backward().unwrap();
        let norm = |var: &Var| grads.get(var).map_or(0.0, |g| scalar(&g.sqr().unwrap().sum_all().unwrap()));
        (norm(&self.w), norm(&self.v), adapters.vars().iter().map(norm).collect())
    }
}

fn recipe(terms: Vec<Term>) -> Recipe {
    Recipe { terms: terms.into() }
}

#[test]
fn gradients_reach_the_student_through_every_kind_of_term() {
    let student = Student::new();
    let union =
        distribution(vec![0, 1, 2], &[vec![0.2, 0.3, 0.5], vec![1.0, 0.0, 0.0]], Some(vec![0.7, 0.1]), 2.0, 4.0);
    let per_teacher_a = distribution(vec![0, 1], &[vec![0.9, 0.1], vec![0.5, 0.5]], None, 1.0, 1.0);
    let per_teacher_b = distribution(vec![2], &[vec![1.0], vec![1.0]], None, 1.0, 1.0);
    let cases: Vec<(&str, Vec<Term>, bool)> = vec![
        ("distribution over the union, weighted", vec![Term::Distribution(union)], false),
        (
            "one distribution per teacher",
            vec![Term::Distribution(per_teacher_a.clone()), Term::Distribution(per_teacher_b)],
            false,
        ),
        (
            "feature, mse",
            vec![Term::Feature(feature("dfa", &[vec![1.0, 2.0, 3.0], vec![0.0, -1.0, 0.5]], FeatureMatch::Mse))],
            true,
        ),
        (
            "feature, mmd",
            vec![Term::Feature(feature("cfl/a", &[vec![1.0, 2.0], vec![0.5, -1.0]], FeatureMatch::Mmd))],
            true,
        ),
    ];
    for (name, terms, is_feature) in cases {
        let (w, v, adapters) = student.gradient_norms(&recipe(terms));
        if is_feature {
            assert!(v > 0.0, "{name}: the student's hidden layer gets a gradient ({v})");
            assert_eq!(adapters.len(), 6, "{name}: encoder, decoder and projection, weight and bias each");
            assert!(adapters.iter().step_by(2).all(|&g| g > 0.0), "{name}: every adapter weight learns: {adapters:?}");
        } else {
            assert!(w > 0.0, "{name}: the student's logits get a gradient ({w})");
            assert_eq!(v, 0.0, "{name}: no feature term, no gradient on the hidden layer");
        }
    }
    // A single-label distribution has a constant softmax: no gradient, as it should be.
    let (w, _, _) = student.gradient_norms(&recipe(vec![Term::Distribution(distribution(
        vec![2],
        &[vec![1.0], vec![1.0]],
        None,
        1.0,
        1.0,
    ))]));
    assert_eq!(w, 0.0);
}

#[test]
fn a_feature_term_without_student_hidden_state_is_refused() {
    let logits = student_logits(&[[0.0, 0.0, 0.0]]);
    let recipe = recipe(vec![Term::Feature(feature("dfa", &[vec![1.0]], FeatureMatch::Mse))]);
    let error = recipe_loss(
        &recipe,
        &StudentOutput { logits: &logits, hidden: None },
        &mut FeatureAdapters::new(0, &Device::Cpu),
    )
    .unwrap_err();
    assert!(error.to_string().contains("feature term `dfa` needs the student's hidden state"), "{error}");
}

#[test]
fn mmd_bandwidths_follow_the_scale_of_the_data() {
    // x = [0], y = [2]: the one distinct pair is 4 apart (squared), so the base bandwidth is 4;
    // kernels exp(-d / (4 m)) for m = 1/4, 1/2, 1, 2, 4 give 5 at d = 0 and at d = 4
    // e^-4 + e^-2 + e^-1 + e^-1/2 + e^-1/4 = 0.018316 + 0.135335 + 0.367879 + 0.606531 + 0.778801
    // = 1.906862; MMD² = 5 + 5 - 2 * 1.906862 = 6.186276.
    let x = Tensor::new(&[[0f32]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[2f32]], &Device::Cpu).unwrap();
    assert!((scalar(&mmd(&x, &y).unwrap()) - 6.186276).abs() < 1e-5);
    // Scaled by 100, the same value: the kernels follow the data instead of fixed widths.
    let (x100, y100) = ((x * 100.0).unwrap(), (y * 100.0).unwrap());
    assert!((scalar(&mmd(&x100, &y100).unwrap()) - 6.186276).abs() < 1e-4);
}

#[test]
fn feature_matching_moves_the_student_not_the_teacher_code() {
    // Without reconstruction, the encoder of the teacher features gets no gradient at all: the
    // code is a fixed target of the matching term. The projection of the student learns.
    let student = Student::new();
    for matching in [FeatureMatch::Mse, FeatureMatch::Mmd] {
        let mut term = feature("dfa", &[vec![1.0, 2.0, 3.0], vec![0.0, -1.0, 0.5]], matching);
        term.reconstruction_weight = 0.0;
        let (_, v, adapters) = student.gradient_norms(&recipe(vec![Term::Feature(term)]));
        // Adapter variables in creation order: encoder, decoder, projection (weight, bias each).
        assert_eq!(&adapters[..4], &[0.0; 4], "{matching:?}: encoder and decoder get nothing: {adapters:?}");
        assert!(adapters[4] > 0.0 && v > 0.0, "{matching:?}: projection and student learn: {adapters:?}, {v}");
    }
}
