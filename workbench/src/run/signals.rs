//! The teachers' outputs a run reads (deterministic passes, the estimator's samples, the
//! oracle's and the selector's), through the signal cache, and the certainty scores.

use abi_stable::std_types::RString;
use rand::SeedableRng;
use workbench_plugin_api::{math::softmax, LabelSpace, SamplingPlan, TeacherSamples, Tensor};

use super::prepare::{prepare, student_examples, student_texts, texts, Prepared, Teacher, UnionModel};
use crate::{
    config::ResolvedConfig,
    host::{EstimatorHandle, Registry},
    signal_cache::{Provenance, SignalCache, TeacherSignalSet},
    Error, Result,
};

pub(super) struct Signals {
    pub deterministic: Vec<TeacherSignalSet>,
    /// Per teacher, what the estimator scored; empty without an estimator.
    pub sampled: Vec<TeacherSamples>,
    pub scores: Option<Tensor>,
    pub provenance: Vec<SignalRecord>,
}

/// Where one teacher output of a run came from, as the manifest records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignalRecord {
    pub teacher: String,
    pub split: String,
    /// `deterministic`, or the estimator's sampling plan.
    pub plan: String,
    pub provenance: Provenance,
    /// Wall time of the computation; none when the cache had it.
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// Where a run's certainty scores come from.
pub(super) enum Scorer<'a> {
    Nothing,
    Estimator(&'a EstimatorHandle),
    /// A model over the union labels (`[selector]`), run through the teacher plugins.
    Selector {
        model: &'a mut UnionModel,
        labels: &'a LabelSpace,
    },
}

impl<'a> Scorer<'a> {
    /// The prepared selector if there is one, else the estimator if there is one.
    pub fn of(
        prepared_selector: Option<&'a mut UnionModel>,
        estimator: Option<&'a EstimatorHandle>,
        labels: &'a LabelSpace,
    ) -> Self {
        match (prepared_selector, estimator) {
            (Some(model), _) => Scorer::Selector { model, labels },
            (None, Some(estimator)) => Scorer::Estimator(estimator),
            (None, None) => Scorer::Nothing,
        }
    }
}

impl SignalRecord {
    /// The record of one output of `teacher`, timed from `started` when it was computed.
    fn new(teacher: &str, split: &str, plan: String, provenance: Provenance, started: std::time::Instant) -> Self {
        SignalRecord {
            teacher: teacher.to_string(),
            split: split.to_string(),
            plan,
            provenance,
            seconds: (provenance == Provenance::Computed).then(|| started.elapsed().as_secs_f64()),
        }
    }
}

/// Every teacher's deterministic signals over `texts`, and the certainty scores.
///
/// `training`: the training split's signals when `texts` are held out (validation, test). Under
/// a share plan whose training split was sampled (at least `minimum` texts), a held-out split
/// gets no passes of its own: the estimator scores its texts beside the training split's samples,
/// so `mc-fitted` predicts them from the fit on the training texts (steadier than a fit on a
/// share of a small split, and free).
pub(super) fn signals(
    config: &ResolvedConfig,
    teachers: &mut [Teacher],
    scorer: &mut Scorer<'_>,
    texts: &[RString],
    want_hidden: bool,
    split: &str,
    training: Option<&Signals>,
) -> Result<Signals> {
    let cache = SignalCache::new(&config.cache);
    let estimator = match scorer {
        Scorer::Estimator(estimator) => Some(*estimator),
        _ => None,
    };
    let plan = estimator.map(|e| e.plan()).transpose()?;
    let want_hidden = want_hidden || plan.is_some_and(|p| p.signals().hidden_states);
    // (training signals, passes per sampled text) where this split is scored beside them.
    let fitted_from = plan.zip(training).and_then(|(plan, t)| scored_beside(plan, t).map(|passes| (t, passes)));
    let (mut deterministic, mut samples, mut provenance) = (Vec::new(), Vec::new(), Vec::new());
    for teacher in teachers.iter_mut() {
        let started = std::time::Instant::now();
        let (det, from) = cache.get(
            &teacher.name,
            &mut teacher.handle,
            &teacher.info,
            &teacher.identity,
            texts,
            SamplingPlan::Deterministic,
            config.mc_seed,
            want_hidden,
        )?;
        provenance.push(SignalRecord::new(&teacher.name, split, "deterministic".into(), from, started));
        if let Some(plan) = plan {
            let one_pass = det.logits.part(0);
            let name = teacher.name.as_str();
            samples.push(if plan == SamplingPlan::Deterministic {
                TeacherSamples::of_every_text(name, det.logits.clone(), one_pass)
            } else if let Some((_, passes)) = fitted_from {
                let none_sampled = Tensor::zeros(vec![passes as usize, 0, one_pass.shape()[1]]);
                TeacherSamples::of_some_texts(name, none_sampled, Vec::new(), one_pass, det.hidden.clone())
            } else {
                let sampled = SampledTexts::of(plan, texts, config.mc_seed);
                let started = std::time::Instant::now();
                let (s, from) = cache.get(
                    name,
                    &mut teacher.handle,
                    &teacher.info,
                    &teacher.identity,
                    &sampled.texts,
                    sampled.plan,
                    config.mc_seed,
                    false,
                )?;
                let record = format!("{plan:?}");
                provenance.push(SignalRecord::new(name, split, record, from, started));
                // A share plan's estimator fits on hidden states even where every text was sampled.
                let hidden = if plan.signals().hidden_states { det.hidden.clone() } else { None };
                TeacherSamples::of_some_texts(name, s.logits, sampled.rows, one_pass, hidden)
            });
        }
        deterministic.push(det);
    }
    let scores = match scorer {
        Scorer::Nothing => None,
        Scorer::Estimator(estimator) => Some(match fitted_from {
            Some((training, _)) => {
                let beside: Vec<_> = training.sampled.iter().zip(&samples).map(|(t, own)| beside(t, own)).collect();
                last_rows(&estimator.score(&beside)?, texts.len())
            }
            None => estimator.score(&samples)?,
        }),
        Scorer::Selector { model, labels } => {
            let started = std::time::Instant::now();
            let (signals, from) = model.signals(config, texts)?;
            let plan = if model.cross_fit { "cross-fitted members".into() } else { "deterministic".into() };
            provenance.push(SignalRecord::new(model.key, split, plan, from, started));
            Some(selector_scores(&signals.logits, &model.scoring_rows(texts), &model.union_indices(labels), labels))
        }
    };
    Ok(Signals { deterministic, sampled: samples, scores, provenance })
}

/// The passes per sampled text where a held-out split is scored beside the `training` signals
/// under `plan` rather than sampled itself: under a share plan, when the training split was
/// large enough to be sampled rather than measured whole.
fn scored_beside(plan: SamplingPlan, training: &Signals) -> Option<u32> {
    let SamplingPlan::StochasticShare { passes, minimum, .. } = plan else { return None };
    training.sampled.first().is_some_and(|t| t.texts() >= minimum as usize).then_some(passes)
}

/// The training split's samples of one teacher followed by the unsampled texts of `own`, as
/// one split: the sampled rows keep their indices, `own`'s texts come after the training texts.
fn beside(training: &TeacherSamples, own: &TeacherSamples) -> TeacherSamples {
    // Both `[B, W]` passes of the same teacher: the same width W.
    let stacked = |a: &Tensor, b: &Tensor| {
        let data = a.data().iter().chain(b.data()).copied().collect();
        Tensor::new(vec![a.shape()[0] + b.shape()[0], a.shape()[1]], data).expect("rows of one teacher's width")
    };
    let hidden = match (training.hidden(), own.hidden()) {
        (Some(a), Some(b)) => Some(stacked(a, b)),
        _ => None,
    };
    TeacherSamples::of_some_texts(
        own.teacher.as_str(),
        training.logits.clone(),
        training.rows.to_vec(),
        stacked(&training.deterministic, &own.deterministic),
        hidden,
    )
}

/// The scores `[B, T]` of the last `texts` rows of `scores`.
fn last_rows(scores: &Tensor, texts: usize) -> Tensor {
    let (rows, teachers) = (scores.shape()[0], scores.shape()[1]);
    let start = rows.checked_sub(texts).expect("the held-out texts follow the training texts");
    Tensor::new(vec![texts, teachers], scores.data()[start * teachers..].to_vec()).expect("[texts, T] scores")
}

/// The texts an estimator's plan samples: all of them, or under `StochasticShare` a share
/// drawn with the MC seed (the same texts for every teacher), with the plan the teachers run
/// on them.
struct SampledTexts {
    /// Their indices among all the texts, ascending.
    rows: Vec<u32>,
    texts: Vec<RString>,
    plan: SamplingPlan,
}

impl SampledTexts {
    fn of(plan: SamplingPlan, texts: &[RString], seed: u64) -> Self {
        let count = plan.sampled_texts(texts.len());
        let mut rows: Vec<u32> = if count < texts.len() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            rand::seq::index::sample(&mut rng, texts.len(), count).into_iter().map(|i| i as u32).collect()
        } else {
            (0..texts.len() as u32).collect()
        };
        rows.sort_unstable();
        let texts = rows.iter().map(|&r| texts[r as usize].clone()).collect();
        SampledTexts { texts, rows, plan: plan.per_text() }
    }
}

/// Certainty scores `[B, T]` from a model over the union labels, whose labels have the union
/// indices `union`: the probability mass its softmax puts on each teacher's labels (a union label
/// two teachers own counts for both; the model's labels outside the union count for none).
/// `logits`: `[S, B, L]`; text b is scored by row `rows[b]` (a cross-fitted selector's members).
pub(super) fn selector_scores(logits: &Tensor, rows: &[usize], union: &[Option<u32>], labels: &LabelSpace) -> Tensor {
    let texts = logits.shape()[1];
    assert_eq!(rows.len(), texts, "one scoring row per text");
    let mut scores = Vec::with_capacity(texts * labels.maps.len());
    for (b, &row) in rows.iter().enumerate() {
        let probabilities = softmax(logits.at(&[row, b]), 1.0);
        for map in &labels.maps {
            let owned = union.iter().zip(&probabilities).filter(|(u, _)| u.is_some_and(|u| map.contains(&u)));
            scores.push(owned.map(|(_, p)| p).sum::<f32>());
        }
    }
    Tensor::new(vec![texts, labels.maps.len()], scores).expect("one score per text and teacher")
}

/// The split whose texts a teacher's signals cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One cached teacher output: which teacher (its config key: `teachers.NAME`, `oracle` or `selector`),
/// over which split, under which sampling plan, with hidden states or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignalRequest {
    pub teacher: String,
    pub split: Split,
    pub plan: SamplingPlan,
    pub hidden: bool,
}

/// The signals each teacher output a run of `config` reads; `hidden` when its strategy needs
/// hidden states, `plan` its estimator's sampling plan.
pub fn signal_requests(config: &ResolvedConfig, plan: Option<SamplingPlan>, hidden: bool) -> Vec<SignalRequest> {
    let mut requests = Vec::new();
    for name in config.teachers.keys() {
        let teacher = format!("teachers.{name}");
        let request = |split, plan, hidden| SignalRequest { teacher: teacher.clone(), split, plan, hidden };
        let plan_hidden = plan.is_some_and(|p| p.signals().hidden_states);
        requests.push(request(Split::Train, SamplingPlan::Deterministic, hidden || plan_hidden));
        requests.push(request(Split::Test, SamplingPlan::Deterministic, plan_hidden));
        if let Some(plan) = plan.filter(|p| *p != SamplingPlan::Deterministic) {
            requests.push(request(Split::Train, plan, false));
            // A share plan scores the test texts beside the training split's samples (the run
            // samples them itself only where the training split is below the plan's minimum).
            if !matches!(plan, SamplingPlan::StochasticShare { .. }) {
                requests.push(request(Split::Test, plan, false));
            }
        }
    }
    let deterministic = |teacher: &str, split| SignalRequest {
        teacher: teacher.into(),
        split,
        plan: SamplingPlan::Deterministic,
        hidden: false,
    };
    if config.oracle.is_some() {
        requests.push(deterministic("oracle", Split::Test));
    }
    if let Some(selector) = &config.selector {
        let plan = UnionModel::plan(selector.cross_fit);
        requests.extend(
            [Split::Train, Split::Test].map(|split| SignalRequest { plan, ..deterministic("selector", split) }),
        );
    }
    requests
}

/// A sweep's signal job: computes one teacher output into the cache (or finds it there), the
/// same entry a run of `config` reads.
pub fn teacher_signals(config: &ResolvedConfig, registry: &Registry, request: &SignalRequest) -> Result<Provenance> {
    let Prepared { splits, mut teachers, selector, labels, .. } = prepare(config, registry)?;
    let examples = student_examples(&splits, &labels)?;
    let texts = match request.split {
        Split::Train => student_texts(config, &examples, &mut Default::default())?.0,
        Split::Test => texts(&examples.test),
    };
    // The selector is loaded (and checked) by the preparation; the oracle is not.
    let union_model = match request.teacher.as_str() {
        "oracle" => {
            Some(config.oracle.as_ref().map(|choice| UnionModel::load(registry, "oracle", choice)).transpose()?)
        }
        "selector" => Some(selector),
        _ => None,
    };
    if let Some(model) = union_model {
        let mut model = model.ok_or_else(|| Error::InvalidConfig {
            problems: vec![format!("no [{}] table in the config", request.teacher)],
        })?;
        return Ok(model.signals(config, &texts)?.1);
    }
    let teacher =
        teachers.iter_mut().find(|t| request.teacher.strip_prefix("teachers.") == Some(t.name.as_str())).ok_or_else(
            || Error::InvalidConfig { problems: vec![format!("no teacher table `{}` in the config", request.teacher)] },
        )?;
    let sampled = SampledTexts::of(request.plan, &texts, config.mc_seed);
    let (_, provenance) = SignalCache::new(&config.cache).get(
        &teacher.name,
        &mut teacher.handle,
        &teacher.info,
        &teacher.identity,
        &sampled.texts,
        sampled.plan,
        config.mc_seed,
        request.hidden,
    )?;
    Ok(provenance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 % of 1,000 texts with a minimum of 64: 100 distinct texts in order, the same for the
    /// same seed, others for another; a minimum above the share raises the count; a full plan
    /// samples every text.
    #[test]
    fn a_share_plan_samples_a_seeded_share_of_the_texts() {
        let texts: Vec<RString> = (0..1000).map(|i| RString::from(format!("text {i}"))).collect();
        let plan = SamplingPlan::StochasticShare { passes: 16, per_mille: 100, minimum: 64 };
        let sampled = SampledTexts::of(plan, &texts, 7);
        assert_eq!(sampled.rows.len(), 100);
        assert!(sampled.rows.windows(2).all(|w| w[0] < w[1]), "{:?}", sampled.rows);
        assert!(sampled.rows.iter().zip(&sampled.texts).all(|(&r, t)| *t == texts[r as usize]));
        assert_eq!(sampled.plan, SamplingPlan::Stochastic { passes: 16, top_layers: 0, lower_passes: 0 });
        assert_eq!(SampledTexts::of(plan, &texts, 7).rows, sampled.rows);
        assert_ne!(SampledTexts::of(plan, &texts, 8).rows, sampled.rows);
        assert_eq!(SampledTexts::of(plan, &texts[..500], 7).rows.len(), 64, "the minimum");
        let full = SamplingPlan::Stochastic { passes: 16, top_layers: 0, lower_passes: 0 };
        assert_eq!(SampledTexts::of(full, &texts, 7).rows, (0..1000).collect::<Vec<u32>>());
    }

    /// A held-out split of two texts beside a training split of three, texts 0 and 2 sampled
    /// (two passes): one split of five texts with the same sampled rows and passes, the
    /// training texts first; its scores' last two rows are the held-out texts'.
    #[test]
    fn a_held_out_split_is_scored_after_the_training_texts_with_their_samples() {
        let rows = |n: usize, width: usize, from: f32| {
            Tensor::new(vec![n, width], (0..n * width).map(|i| from + i as f32).collect()).unwrap()
        };
        let passes = Tensor::new(vec![2, 2, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        let training =
            TeacherSamples::of_some_texts("a", passes.clone(), vec![0, 2], rows(3, 2, 0.0), Some(rows(3, 4, 0.0)));
        let none = Tensor::zeros(vec![2, 0, 2]);
        let own = TeacherSamples::of_some_texts("a", none, Vec::new(), rows(2, 2, 10.0), Some(rows(2, 4, 20.0)));
        let both = beside(&training, &own);
        assert_eq!((both.texts(), both.rows.as_slice(), &both.logits), (5, &[0, 2][..], &passes));
        assert_eq!(both.deterministic.data(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 13.0]);
        let hidden = both.hidden().unwrap();
        assert_eq!(
            (hidden.shape(), hidden.at(&[2]), hidden.at(&[3])),
            (&[5, 4][..], &[8.0, 9.0, 10.0, 11.0][..], &[20.0, 21.0, 22.0, 23.0][..])
        );
        let scores = rows(5, 2, 0.0);
        assert_eq!(last_rows(&scores, 2).data(), [6.0, 7.0, 8.0, 9.0]);
    }

    /// A held-out split is scored beside the training split under a share plan whose training
    /// split reached the minimum (it was sampled, not measured whole); never under plain MC.
    #[test]
    fn only_a_share_plan_over_a_sampled_training_split_scores_held_out_texts_beside_it() {
        let training = |texts: usize| Signals {
            deterministic: Vec::new(),
            sampled: vec![TeacherSamples::of_every_text(
                "a",
                Tensor::zeros(vec![1, texts, 2]),
                Tensor::zeros(vec![texts, 2]),
            )],
            scores: None,
            provenance: Vec::new(),
        };
        let share = SamplingPlan::StochasticShare { passes: 16, per_mille: 100, minimum: 256 };
        assert_eq!(scored_beside(share, &training(256)), Some(16));
        assert_eq!(scored_beside(share, &training(255)), None);
        let plain = SamplingPlan::Stochastic { passes: 16, top_layers: 0, lower_passes: 0 };
        assert_eq!(scored_beside(plain, &training(1000)), None);
    }

    /// Teachers `a` over x, y and `b` over y, z (y shared); the selector knows z, x, y and w (w
    /// outside the union). Softmax of [0, ln 2, ln 3, ln 4] is [1, 2, 3, 4] / 10: `a` gets
    /// x + y = 0.2 + 0.3, `b` gets y + z = 0.3 + 0.1; equal logits give 1/4 each: 0.5 and 0.5.
    #[test]
    fn a_selector_scores_each_teacher_by_the_mass_on_its_labels() {
        let labels = LabelSpace::union([&["x".to_string(), "y".into()][..], &["y".to_string(), "z".into()][..]]);
        let (l2, l3, l4) = (2f32.ln(), 3f32.ln(), 4f32.ln());
        let logits = Tensor::new(vec![1, 2, 4], vec![0.0, l2, l3, l4, 1.0, 1.0, 1.0, 1.0]).unwrap();
        let union: Vec<Option<u32>> = ["z", "x", "y", "w"].iter().map(|l| labels.index_of(l)).collect();
        let scores = selector_scores(&logits, &[0, 0], &union, &labels);
        assert_eq!(scores.shape(), &[2, 2]);
        for (got, want) in scores.data().iter().zip([0.5, 0.4, 0.5, 0.5]) {
            assert!((got - want).abs() < 1e-6, "{:?}", scores.data());
        }
    }

    /// A cross-fitted selector with two members: text 0 is scored by member 1 and text 1 by
    /// member 0, each row as in the test above (member 0's row for text 0 and member 1's for
    /// text 1, all zeros, would give 0.5 everywhere).
    #[test]
    fn a_cross_fitted_selector_scores_each_text_with_the_member_of_its_fold() {
        let labels = LabelSpace::union([&["x".to_string(), "y".into()][..], &["y".to_string(), "z".into()][..]]);
        let (l2, l3, l4) = (2f32.ln(), 3f32.ln(), 4f32.ln());
        let member_0 = [0.0; 4].into_iter().chain([l4, l3, l2, 0.0]);
        let member_1 = [0.0, l2, l3, l4].into_iter().chain([0.0; 4]);
        let logits = Tensor::new(vec![2, 2, 4], member_0.chain(member_1).collect()).unwrap();
        let union: Vec<Option<u32>> = ["z", "x", "y", "w"].iter().map(|l| labels.index_of(l)).collect();
        let scores = selector_scores(&logits, &[1, 0], &union, &labels);
        // Text 1 under member 0: z, x, y, w = 0.4, 0.3, 0.2, 0.1: `a` 0.5, `b` 0.6.
        for (got, want) in scores.data().iter().zip([0.5, 0.4, 0.5, 0.6]) {
            assert!((got - want).abs() < 1e-6, "{:?}", scores.data());
        }
    }
}
