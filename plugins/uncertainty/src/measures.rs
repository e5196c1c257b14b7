//! Certainty measures over the S sampled distributions of one teacher for one instance.

use workbench_plugin_api::{math::entropy, PluginError, PluginResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// 1 - H(mean p) / ln L: normalized predictive entropy.
    Entropy,
    /// 1 - (H(mean p) - mean H(p_s)) / ln L: mutual information between passes (BALD).
    MutualInformation,
    /// (max mean p - 1/L) / (1 - 1/L).
    MaxProb,
}

impl Measure {
    pub fn parse(name: &str) -> PluginResult<Self> {
        match name {
            "entropy" => Ok(Measure::Entropy),
            "mutual-information" => Ok(Measure::MutualInformation),
            "max-prob" => Ok(Measure::MaxProb),
            other => Err(PluginError::invalid_input(format!(
                "unknown measure `{other}`: use entropy, mutual-information or max-prob"
            ))),
        }
    }
}

/// Certainty in [0, 1] (high = certain) from `passes`, each a distribution over the same L labels.
pub fn certainty(measure: Measure, passes: &[&[f32]]) -> f32 {
    let labels = passes[0].len();
    if labels < 2 {
        return 1.0;
    }
    let mut mean = vec![0.0f32; labels];
    for pass in passes {
        mean.iter_mut().zip(pass.iter()).for_each(|(m, p)| *m += p / passes.len() as f32);
    }
    let log_labels = (labels as f32).ln();
    match measure {
        Measure::Entropy => 1.0 - entropy(&mean) / log_labels,
        Measure::MutualInformation => {
            let expected_entropy = passes.iter().map(|p| entropy(p)).sum::<f32>() / passes.len() as f32;
            1.0 - (entropy(&mean) - expected_entropy) / log_labels
        }
        Measure::MaxProb => {
            let max = mean.iter().copied().fold(0.0, f32::max);
            let uniform = 1.0 / labels as f32;
            (max - uniform) / (1.0 - uniform)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f32, expected: f32) {
        assert!((actual - expected).abs() < 1e-5, "got {actual}, expected {expected}");
    }

    #[test]
    fn entropy_certainty_by_hand() {
        // uniform over 2: H = ln 2, normalized 1, certainty 0
        close(certainty(Measure::Entropy, &[&[0.5, 0.5]]), 0.0);
        // one-hot over 3 with exact zeros: H = 0 (0 ln 0 = 0), certainty 1, no NaN
        close(certainty(Measure::Entropy, &[&[1.0, 0.0, 0.0]]), 1.0);
        // [1/4, 3/4]: H = 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762 = 0.562335;
        // / ln 2 = 0.811278; certainty 0.188722
        close(certainty(Measure::Entropy, &[&[0.25, 0.75]]), 0.188722);
        // [1/2, 1/2, 0] over 3 labels: H = ln 2 = 0.693147; / ln 3 = 0.630930; certainty 0.369070
        close(certainty(Measure::Entropy, &[&[0.5, 0.5, 0.0]]), 0.369070);
    }

    #[test]
    fn max_prob_certainty_by_hand() {
        // (0.75 - 0.5) / (1 - 0.5) = 0.5
        close(certainty(Measure::MaxProb, &[&[0.25, 0.75]]), 0.5);
        // (0.5 - 1/3) / (2/3) = 0.25
        close(certainty(Measure::MaxProb, &[&[0.5, 0.5, 0.0]]), 0.25);
    }

    #[test]
    fn mutual_information_by_hand() {
        // passes [1,0] and [0,1]: mean [1/2,1/2], H(mean) = ln 2, each pass H = 0:
        // MI = ln 2, normalized 1, certainty 0
        close(certainty(Measure::MutualInformation, &[&[1.0, 0.0], &[0.0, 1.0]]), 0.0);
        // identical passes: MI = 0, certainty 1, even though each pass is uncertain
        close(certainty(Measure::MutualInformation, &[&[0.5, 0.5], &[0.5, 0.5]]), 1.0);
    }
}
