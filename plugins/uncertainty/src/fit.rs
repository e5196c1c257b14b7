//! The fitted certainty of `mc-fitted`: a ridge regression from a text's deterministic pass to
//! the certainty its stochastic passes measure, fitted on the texts that were sampled and
//! predicting the others.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use workbench_plugin_api::math::softmax;

/// What the fit reads of one text: its log-probabilities sorted from the largest (the shape of
/// the distribution, whatever the class), as they are (which classes), and its pooled hidden state.
pub fn features(logits: &[f32], hidden: &[f32]) -> Vec<f64> {
    let log_probs: Vec<f64> = softmax(logits, 1.0).iter().map(|&p| f64::from(p).max(f64::MIN_POSITIVE).ln()).collect();
    let mut sorted = log_probs.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted.into_iter().chain(log_probs).chain(hidden.iter().map(|&h| f64::from(h))).collect()
}

/// A linear model over standardized features plus a constant.
pub struct Ridge {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
}

impl Ridge {
    /// Fits `targets` from `rows` (one feature vector each), with penalty `lambda` on every
    /// weight; each feature is standardized by the mean and spread of `rows`.
    pub fn fit(rows: &[Vec<f64>], targets: &[f64], lambda: f64) -> Ridge {
        let (n, width) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..width).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        // The offset keeps a feature that does not vary (a padded hidden unit) at zero.
        let scale: Vec<f64> = (0..width)
            .map(|j| (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt() + 1e-6)
            .collect();
        let mut ridge = Ridge { mean, scale, weights: Vec::new() };
        let design: Vec<Vec<f64>> = rows.iter().map(|r| ridge.design(r)).collect();
        let size = width + 1;
        let mut gram = vec![0.0; size * size];
        let mut moment = vec![0.0; size];
        for (d, &y) in design.iter().zip(targets) {
            for i in 0..size {
                moment[i] += d[i] * y;
                for j in 0..=i {
                    gram[i * size + j] += d[i] * d[j];
                }
            }
        }
        for i in 0..size {
            gram[i * size + i] += lambda;
        }
        ridge.weights = solve_positive_definite(gram, moment, size);
        ridge
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        self.design(row).iter().zip(&self.weights).map(|(d, w)| d * w).sum()
    }

    fn design(&self, row: &[f64]) -> Vec<f64> {
        row.iter().zip(&self.mean).zip(&self.scale).map(|((x, m), s)| (x - m) / s).chain([1.0]).collect()
    }
}

/// Ridge fits on bootstrap resamples of the rows, predicting their mean: averaging fits that
/// each saw another part of the measured texts steadies the directions a single fit on ~400
/// features from a few hundred rows gets wrong. One bag is one fit on the rows as they are.
pub struct Bagged {
    fits: Vec<Ridge>,
}

/// The resamples are drawn from a fixed seed: a text's score does not depend on which other
/// split is scored in the same call, and a run reproduces without one more seed to record.
const BOOTSTRAP_SEED: u64 = 0x6261_6773;

impl Bagged {
    pub fn fit(rows: &[Vec<f64>], targets: &[f64], lambda: f64, bags: usize) -> Bagged {
        if bags <= 1 {
            return Bagged { fits: vec![Ridge::fit(rows, targets, lambda)] };
        }
        let mut rng = StdRng::seed_from_u64(BOOTSTRAP_SEED);
        let fits = (0..bags)
            .map(|_| {
                let picks: Vec<usize> = (0..rows.len()).map(|_| rng.random_range(0..rows.len())).collect();
                let resampled: Vec<Vec<f64>> = picks.iter().map(|&i| rows[i].clone()).collect();
                let resampled_targets: Vec<f64> = picks.iter().map(|&i| targets[i]).collect();
                Ridge::fit(&resampled, &resampled_targets, lambda)
            })
            .collect();
        Bagged { fits }
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        self.fits.iter().map(|fit| fit.predict(row)).sum::<f64>() / self.fits.len() as f64
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` (`size` x `size`, row-major, lower
/// triangle read) by Cholesky: one small system per fit, not worth a linear-algebra dependency.
fn solve_positive_definite(mut a: Vec<f64>, mut b: Vec<f64>, size: usize) -> Vec<f64> {
    for j in 0..size {
        let pivot = (a[j * size + j] - (0..j).map(|k| a[j * size + k].powi(2)).sum::<f64>()).sqrt();
        a[j * size + j] = pivot;
        for i in j + 1..size {
            let dot: f64 = (0..j).map(|k| a[i * size + k] * a[j * size + k]).sum();
            a[i * size + j] = (a[i * size + j] - dot) / pivot;
        }
    }
    for i in 0..size {
        b[i] = (b[i] - (0..i).map(|k| a[i * size + k] * b[k]).sum::<f64>()) / a[i * size + i];
    }
    for i in (0..size).rev() {
        b[i] = (b[i] - (i + 1..size).map(|k| a[k * size + i] * b[k]).sum::<f64>()) / a[i * size + i];
    }
    b
}
