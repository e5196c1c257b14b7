//! Evaluation measures computed by the engine for any estimator or student.

use workbench_plugin_api::Tensor;

pub use workbench_plugin_api::math::argmax;

/// For each instance, whether the highest-scored teacher is one whose label set contains the
/// gold label. `scores` is `[B, T]`; `gold` holds union label indices; `maps[t]` the union
/// indices of teacher t's labels. Ties go to the first teacher, as in MUKA's hard integration.
pub fn adequate_picks(scores: &Tensor, gold: &[u32], maps: &[Vec<u32>]) -> Vec<bool> {
    gold.iter().enumerate().map(|(b, label)| maps[argmax(scores.at(&[b]))].contains(label)).collect()
}

/// The concat-argmax selector as scores `[N, T]`: each teacher's largest deterministic logit
/// (`[1, N, L_t]` each), so that the top-scored teacher is the one whose block holds the argmax
/// of the concatenated logits. Every certainty selector is measured against it.
pub fn concat_argmax_scores(teachers: &[&Tensor]) -> Tensor {
    let n = teachers.first().map_or(0, |t| t.shape()[1]);
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|i| teachers.iter().map(|t| t.at(&[0, i]).iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect())
        .collect();
    Tensor::new(vec![n, teachers.len()], rows.concat()).expect("one score per instance and teacher")
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
    fn concat_argmax_picks_the_teacher_holding_the_largest_logit() {
        // Teacher 0 [2, 0] and [4, 1]; teacher 1 [1, 3, 0] and [0, 0, 3.5]: maxima [2, 3] and [4, 3.5].
        let t0 = Tensor::new(vec![1, 2, 2], vec![2.0, 0.0, 4.0, 1.0]).unwrap();
        let t1 = Tensor::new(vec![1, 2, 3], vec![1.0, 3.0, 0.0, 0.0, 0.0, 3.5]).unwrap();
        let scores = concat_argmax_scores(&[&t0, &t1]);
        assert_eq!(scores.shape(), &[2, 2]);
        assert_eq!(scores.data(), &[2.0, 3.0, 4.0, 3.5]);
        // Gold union labels 3 (teacher 1's) and 0 (teacher 0's): both picks adequate.
        assert_eq!(selection_accuracy(&scores, &[3, 0], &[vec![0, 1], vec![2, 3, 4]]), 1.0);
    }
}
