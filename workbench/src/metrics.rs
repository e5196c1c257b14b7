//! Evaluation measures computed by the engine for any estimator or student.

use workbench_plugin_api::{math::softmax, Tensor};

/// Softmax over the last axis at temperature 1: a teacher's probabilities from its logits.
pub fn probabilities(logits: &Tensor) -> Tensor {
    let width = *logits.shape().last().expect("logits have at least one axis");
    let probs: Vec<f32> = logits.data().chunks(width).flat_map(|row| softmax(row, 1.0)).collect();
    Tensor::new(logits.shape().to_vec(), probs).expect("same shape as the logits")
}

/// For each instance, whether the highest-scored teacher is one whose label set contains the
/// gold label. `scores` is `[B, T]`; `gold` holds union label indices; `maps[t]` the union
/// indices of teacher t's labels. Ties go to the first teacher, as in MUKA's hard integration.
pub fn adequate_picks(scores: &Tensor, gold: &[u32], maps: &[Vec<u32>]) -> Vec<bool> {
    gold.iter()
        .enumerate()
        .map(|(b, label)| {
            let row = scores.at(&[b]);
            let best = (0..row.len()).fold(0, |best, t| if row[t] > row[best] { t } else { best });
            maps[best].contains(label)
        })
        .collect()
}

/// How often the highest-scored teacher is an adequate one (see [`adequate_picks`]).
pub fn selection_accuracy(scores: &Tensor, gold: &[u32], maps: &[Vec<u32>]) -> f32 {
    share(adequate_picks(scores, gold, maps).into_iter())
}

/// The fraction of `true`; 0 for none.
pub fn share(flags: impl Iterator<Item = bool>) -> f32 {
    let (hits, total) = flags.fold((0usize, 0usize), |(h, t), f| (h + usize::from(f), t + 1));
    if total == 0 {
        0.0
    } else {
        hits as f32 / total as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_accuracy_by_hand() {
        // Teacher 0 owns union labels {0, 1}, teacher 1 owns {2, 3, 4}.
        // Scores: i0 picks 0 (gold 1: right); i1 picks 1 (gold 0: wrong); i2 ties, picks 0 (gold 4: wrong);
        // i3 picks 1 (gold 3: right). Accuracy 2/4.
        let scores = Tensor::from_rows(&[vec![0.9, 0.1], vec![0.2, 0.7], vec![0.5, 0.5], vec![0.0, 1.0]]).unwrap();
        let maps = vec![vec![0, 1], vec![2, 3, 4]];
        assert_eq!(selection_accuracy(&scores, &[1, 0, 4, 3], &maps), 0.5);
        // An overlapping label counts for either teacher.
        let overlapping = vec![vec![0, 1], vec![1, 2]];
        assert_eq!(selection_accuracy(&scores, &[1, 1, 1, 1], &overlapping), 1.0);
        assert_eq!(adequate_picks(&scores, &[1, 0, 4, 3], &maps), [true, false, false, true]);
        assert_eq!(selection_accuracy(&scores, &[], &maps), 0.0);
    }

    #[test]
    fn probabilities_normalize_each_row() {
        // [0, ln3] -> [1/4, 3/4]; [0, 0] -> [1/2, 1/2]
        let logits = Tensor::new(vec![1, 2, 2], vec![0.0, 3f32.ln(), 0.0, 0.0]).unwrap();
        let probs = probabilities(&logits);
        assert_eq!(probs.shape(), &[1, 2, 2]);
        assert!(probs.data().iter().zip([0.25, 0.75, 0.5, 0.5]).all(|(p, e)| (p - e).abs() < 1e-6));
    }
}
