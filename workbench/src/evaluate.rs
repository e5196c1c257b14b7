//! Test-set evaluation of a run: the student, each teacher alone, the teacher-concat ensemble
//! and the estimator's teacher selection, overall and per teacher label subset.

use serde::{Deserialize, Serialize};
use workbench_plugin_api::{LabelSpace, Tensor};

use crate::metrics::argmax;

/// Accuracy of union-label `predictions` against `gold`, on the instances whose gold label is
/// in `subset` (all instances when `None`).
pub fn accuracy(predictions: &[u32], gold: &[u32], subset: Option<&[u32]>) -> f64 {
    let chosen: Vec<(u32, u32)> = predictions
        .iter()
        .zip(gold)
        .filter(|(_, g)| subset.is_none_or(|s| s.contains(g)))
        .map(|(&p, &g)| (p, g))
        .collect();
    if chosen.is_empty() {
        return 0.0;
    }
    chosen.iter().filter(|(p, g)| p == g).count() as f64 / chosen.len() as f64
}

/// A teacher's own prediction mapped to the union: argmax of its deterministic logits `[1, N, L]`.
pub fn teacher_predictions(logits: &Tensor, map: &[u32]) -> Vec<u32> {
    let n = logits.shape()[1];
    (0..n).map(|i| map[argmax(logits.at(&[0, i]))]).collect()
}

/// The teacher-concat ensemble: argmax over all teachers' logits side by side.
pub fn concat_predictions(teachers: &[&Tensor], labels: &LabelSpace) -> Vec<u32> {
    let n = teachers.first().map_or(0, |t| t.shape()[1]);
    (0..n)
        .map(|i| {
            let logits: Vec<f32> = teachers.iter().flat_map(|t| t.at(&[0, i]).iter().copied()).collect();
            let union: Vec<u32> = labels.maps.iter().flatten().copied().collect();
            union[argmax(&logits)]
        })
        .collect()
}

/// One row of the report: a predictor's accuracy overall and on each teacher's labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub method: String,
    pub accuracy: f64,
    /// Accuracy on the test instances of each teacher's label set, in teacher order.
    pub per_teacher: Vec<f64>,
}

pub fn row(method: &str, predictions: &[u32], gold: &[u32], labels: &LabelSpace) -> ResultRow {
    ResultRow {
        method: method.into(),
        accuracy: accuracy(predictions, gold, None),
        per_teacher: labels.maps.iter().map(|m| accuracy(predictions, gold, Some(m))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_by_hand() {
        // Union labels 0..4; teacher 0 owns {0, 1}, teacher 1 owns {2, 3}.
        let labels =
            LabelSpace { labels: ["a", "b", "c", "d"].map(String::from).to_vec(), maps: vec![vec![0, 1], vec![2, 3]] };
        let gold = [0, 1, 2, 3];
        let predictions = [0, 2, 2, 2];
        let r = row("x", &predictions, &gold, &labels);
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(r.per_teacher, vec![0.5, 0.5]);
        // Teacher 0 logits [1, 4, 2]: argmax 1, 0, 1, 1 -> union 1, 0, 1, 1.
        let t0 = Tensor::new(vec![1, 4, 2], vec![0.0, 1.0, 2.0, 0.0, 0.0, 3.0, -1.0, 0.0]).unwrap();
        assert_eq!(teacher_predictions(&t0, &labels.maps[0]), vec![1, 0, 1, 1]);
        // Concat with teacher 1 [0, 5], [0, 0], [9, 0], [0, -2]: 3, 0, 2, 1.
        let t1 = Tensor::new(vec![1, 4, 2], vec![0.0, 5.0, 0.0, 0.0, 9.0, 0.0, 0.0, -2.0]).unwrap();
        assert_eq!(concat_predictions(&[&t0, &t1], &labels), vec![3, 0, 2, 1]);
    }
}
