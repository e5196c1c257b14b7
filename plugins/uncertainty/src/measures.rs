//! Certainty measures over the S sampled logit rows of one teacher for one instance, and the
//! scales that put a measure's scores on a footing common to every measure.

use workbench_plugin_api::{
    math::{argmax, entropy, softmax},
    FromParam, ParamTable, PluginError, PluginResult,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// 1 - H(mean p) / ln L: normalized predictive entropy.
    Entropy,
    /// 1 - (H(mean p) - mean H(p_s)) / ln L: mutual information between passes (BALD).
    MutualInformation,
    /// (max mean p - 1/L) / (1 - 1/L).
    MaxProb,
    /// 1 - 4 Var_s(p_s[k]) for the top class k of the mean: how much the passes disagree about
    /// the teacher's own choice (a probability varies by at most 1/4).
    TopVariance,
    /// mean_s T logsumexp(z_s / T) - T ln L: the negative free energy, high where the input
    /// looks like the teacher's training data; the ln L makes L equal logits score their common
    /// value whatever L, so teachers with more labels are not favoured.
    Energy,
    /// mean_s max z_s: with one deterministic pass, the teacher it ranks first is the one whose
    /// block holds the argmax of the concatenated logits (the concat-argmax selector).
    MaxLogit,
}

pub const MEASURES: [&str; 6] = ["entropy", "mutual-information", "max-prob", "top-variance", "energy", "max-logit"];

impl Measure {
    pub fn parse(name: &str) -> PluginResult<Self> {
        match name {
            "entropy" => Ok(Measure::Entropy),
            "mutual-information" => Ok(Measure::MutualInformation),
            "max-prob" => Ok(Measure::MaxProb),
            "top-variance" => Ok(Measure::TopVariance),
            "energy" => Ok(Measure::Energy),
            "max-logit" => Ok(Measure::MaxLogit),
            other => Err(PluginError::invalid_input(format!(
                "unknown measure `{other}`: use one of {}",
                MEASURES.join(", ")
            ))),
        }
    }
}

/// T ln sum_i exp(z_i / T), computed stably.
fn free_energy(logits: &[f32], temperature: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&z| ((z - max) / temperature).exp()).sum();
    max + temperature * sum.ln()
}

/// Certainty (high = certain) of one teacher for one instance from `passes`, each a row of
/// logits over the same L labels, read at `temperature`. Entropy, mutual information, max-prob
/// and top-variance lie in [0, 1]; energy and max-logit are in logit units.
pub fn certainty(measure: Measure, passes: &[&[f32]], temperature: f32) -> f32 {
    let labels = passes[0].len();
    let count = passes.len() as f32;
    match measure {
        Measure::Energy => {
            let mean = passes.iter().map(|z| free_energy(z, temperature)).sum::<f32>() / count;
            return mean - temperature * (labels as f32).ln();
        }
        Measure::MaxLogit => {
            return passes.iter().map(|z| z.iter().copied().fold(f32::NEG_INFINITY, f32::max)).sum::<f32>() / count
        }
        _ if labels < 2 => return 1.0,
        _ => {}
    }
    let probs: Vec<Vec<f32>> = passes.iter().map(|z| softmax(z, temperature)).collect();
    let mut mean = vec![0.0f32; labels];
    for pass in &probs {
        mean.iter_mut().zip(pass).for_each(|(m, p)| *m += p / count);
    }
    let log_labels = (labels as f32).ln();
    match measure {
        Measure::Entropy => 1.0 - entropy(&mean) / log_labels,
        Measure::MutualInformation => {
            let expected_entropy = probs.iter().map(|p| entropy(p)).sum::<f32>() / count;
            1.0 - (entropy(&mean) - expected_entropy) / log_labels
        }
        Measure::MaxProb => {
            let max = mean.iter().copied().fold(0.0, f32::max);
            let uniform = 1.0 / labels as f32;
            (max - uniform) / (1.0 - uniform)
        }
        Measure::TopVariance => {
            let top = argmax(&mean);
            let variance = probs.iter().map(|p| (p[top] - mean[top]).powi(2)).sum::<f32>() / count;
            1.0 - 4.0 * variance
        }
        Measure::Energy | Measure::MaxLogit => unreachable!("returned above"),
    }
}

/// How the scores of one call (`[N, T]`, instance-major) are rescaled. `raw`, `standard` and
/// `rank` map all scores at once by one monotone function, so every instance keeps its most
/// certain teacher (the selection); what changes is the spread that soft integration and the
/// margin weights read. `teacher-rank` reads each teacher's score against that teacher's own
/// scores, so it changes the selection too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The measure's own values (the paper's form).
    Raw,
    /// (s - mean) / std over every score of the call; all zeros when they are all equal.
    Standard,
    /// The share of the other scores below s (ties count half), in [0, 1]: spread uniformly
    /// whatever the measure's own distribution, so a measure whose scores crowd together
    /// keeps usable margins.
    Rank,
    /// The share of the same teacher's other scores below s, in [0, 1]: a calibration of each
    /// teacher against itself, without labels. A teacher that is more certain than the other
    /// everywhere (over-confident on classes it never saw) is no longer picked everywhere; it
    /// assumes each teacher's classes make up a comparable share of the texts.
    TeacherRank,
}

pub const SCALES: [&str; 4] = ["raw", "standard", "rank", "teacher-rank"];

/// The share of the other values below each value (ties count half), in [0, 1].
fn ranks(values: &[f32]) -> Vec<f32> {
    let n = values.len();
    if n < 2 {
        return vec![0.5; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0f32; n];
    let mut start = 0;
    while start < n {
        let mut end = start;
        while end + 1 < n && values[order[end + 1]] == values[order[start]] {
            end += 1;
        }
        // `start` values below, `end - start` other values tied.
        let rank = (start as f32 + 0.5 * (end - start) as f32) / (n - 1) as f32;
        order[start..=end].iter().for_each(|&i| ranks[i] = rank);
        start = end + 1;
    }
    ranks
}

/// [`ranks`] of f64 values, for `mc-fitted`'s fit to ranks: its measured values are f32
/// certainties widened, so narrowing them back loses nothing.
pub(crate) fn ranks_f64(values: &[f64]) -> Vec<f64> {
    let narrowed: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    ranks(&narrowed).into_iter().map(f64::from).collect()
}

impl Scale {
    pub fn parse(name: &str) -> PluginResult<Self> {
        match name {
            "raw" => Ok(Scale::Raw),
            "standard" => Ok(Scale::Standard),
            "rank" => Ok(Scale::Rank),
            "teacher-rank" => Ok(Scale::TeacherRank),
            other => Err(PluginError::invalid_input(format!("unknown scale `{other}`: use {}", SCALES.join(", ")))),
        }
    }

    /// Rescales `scores`, `[N, teachers]` instance-major, in place.
    pub fn apply(self, scores: &mut [f32], teachers: usize) {
        let n = scores.len();
        match self {
            Scale::Raw => {}
            Scale::Standard => {
                let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n as f64;
                let variance = scores.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n as f64;
                let std = variance.sqrt();
                for s in scores.iter_mut() {
                    *s = if std > 0.0 { ((f64::from(*s) - mean) / std) as f32 } else { 0.0 };
                }
            }
            Scale::Rank => scores.copy_from_slice(&ranks(scores)),
            Scale::TeacherRank => {
                for teacher in 0..teachers {
                    let column: Vec<f32> = scores.iter().skip(teacher).step_by(teachers).copied().collect();
                    for (s, r) in scores.iter_mut().skip(teacher).step_by(teachers).zip(ranks(&column)) {
                        *s = r;
                    }
                }
            }
        }
    }
}

impl FromParam for Measure {
    fn from_param(table: &ParamTable, name: &str) -> PluginResult<Self> {
        Measure::parse(&table.text(name)?)
    }
}

impl FromParam for Scale {
    fn from_param(table: &ParamTable, name: &str) -> PluginResult<Self> {
        Scale::parse(&table.text(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f32, expected: f32) {
        assert!((actual - expected).abs() < 1e-5, "got {actual}, expected {expected}");
    }

    /// Logits whose softmax at T = 1 is `probs` (ln 0 = -inf gives an exact zero).
    fn logits(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn of(measure: Measure, passes: &[&[f32]]) -> f32 {
        let rows: Vec<Vec<f32>> = passes.iter().map(|p| logits(p)).collect();
        certainty(measure, &rows.iter().map(Vec::as_slice).collect::<Vec<_>>(), 1.0)
    }

    #[test]
    fn entropy_certainty_by_hand() {
        // uniform over 2: H = ln 2, normalized 1, certainty 0
        close(of(Measure::Entropy, &[&[0.5, 0.5]]), 0.0);
        // one-hot over 3 with exact zeros: H = 0 (0 ln 0 = 0), certainty 1, no NaN
        close(of(Measure::Entropy, &[&[1.0, 0.0, 0.0]]), 1.0);
        // [1/4, 3/4]: H = 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762 = 0.562335;
        // / ln 2 = 0.811278; certainty 0.188722
        close(of(Measure::Entropy, &[&[0.25, 0.75]]), 0.188722);
        // [1/2, 1/2, 0] over 3 labels: H = ln 2 = 0.693147; / ln 3 = 0.630930; certainty 0.369070
        close(of(Measure::Entropy, &[&[0.5, 0.5, 0.0]]), 0.369070);
    }

    #[test]
    fn the_temperature_flattens_the_distribution_before_scoring() {
        // Logits [0, ln 9] at T = 2 are [0, ln 3]: p = [1/4, 3/4], certainty 0.188722 as above;
        // at T = 1 they give [1/10, 9/10]: H = 0.1 ln 10 + 0.9 ln(10/9) = 0.230259 + 0.094824
        // = 0.325083, / ln 2 = 0.468996, certainty 0.531004.
        let row = [0.0, 9f32.ln()];
        close(certainty(Measure::Entropy, &[&row], 2.0), 0.188722);
        close(certainty(Measure::Entropy, &[&row], 1.0), 0.531004);
    }

    #[test]
    fn max_prob_certainty_by_hand() {
        // (0.75 - 0.5) / (1 - 0.5) = 0.5
        close(of(Measure::MaxProb, &[&[0.25, 0.75]]), 0.5);
        // (0.5 - 1/3) / (2/3) = 0.25
        close(of(Measure::MaxProb, &[&[0.5, 0.5, 0.0]]), 0.25);
    }

    #[test]
    fn mutual_information_by_hand() {
        // passes [1,0] and [0,1]: mean [1/2,1/2], H(mean) = ln 2, each pass H = 0:
        // MI = ln 2, normalized 1, certainty 0
        close(of(Measure::MutualInformation, &[&[1.0, 0.0], &[0.0, 1.0]]), 0.0);
        // identical passes: MI = 0, certainty 1, even though each pass is uncertain
        close(of(Measure::MutualInformation, &[&[0.5, 0.5], &[0.5, 0.5]]), 1.0);
    }

    #[test]
    fn top_variance_by_hand() {
        // passes [0.9, 0.1] and [0.5, 0.5]: mean [0.7, 0.3], top class 0; its values 0.9 and
        // 0.5 vary by ((0.2)^2 + (0.2)^2) / 2 = 0.04; certainty 1 - 0.16 = 0.84.
        close(of(Measure::TopVariance, &[&[0.9, 0.1], &[0.5, 0.5]]), 0.84);
        // one-hot passes that flip: top class 0 (first on the tie), values 1 and 0, variance
        // 1/4, certainty 0; identical passes: certainty 1.
        close(of(Measure::TopVariance, &[&[1.0, 0.0], &[0.0, 1.0]]), 0.0);
        close(of(Measure::TopVariance, &[&[0.3, 0.7], &[0.3, 0.7]]), 1.0);
    }

    #[test]
    fn energy_by_hand() {
        // [0, ln 3]: logsumexp = ln 4; minus ln 2 = ln 2 = 0.693147.
        close(certainty(Measure::Energy, &[&[0.0, 3f32.ln()]], 1.0), 2f32.ln());
        // Equal logits score their common value for any label count: [5, 5, 5] -> 5 + ln 3 - ln 3.
        close(certainty(Measure::Energy, &[&[5.0, 5.0, 5.0]], 1.0), 5.0);
        close(certainty(Measure::Energy, &[&[0.0, 0.0, 0.0]], 1.0), 0.0);
        // T = 2: [0, ln 9] -> 2 ln(1 + 3) - 2 ln 2 = 2 ln 2 = 1.386294; two passes average:
        // with [0, 0] (2 ln 2 - 2 ln 2 = 0) gives 0.693147.
        close(certainty(Measure::Energy, &[&[0.0, 9f32.ln()]], 2.0), 2.0 * 2f32.ln());
        close(certainty(Measure::Energy, &[&[0.0, 9f32.ln()], &[0.0, 0.0]], 2.0), 2f32.ln());
    }

    #[test]
    fn max_logit_by_hand() {
        close(certainty(Measure::MaxLogit, &[&[1.5, -2.0, 0.25]], 1.0), 1.5);
        // Averaged over passes: (3 + 1) / 2 = 2; the temperature does not enter.
        close(certainty(Measure::MaxLogit, &[&[3.0, 0.0], &[-1.0, 1.0]], 4.0), 2.0);
    }

    #[test]
    fn scales_by_hand() {
        // Standard: [1, 2, 3, 6] has mean 3 and std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5) = 1.870829.
        let mut scores = [1.0, 2.0, 3.0, 6.0];
        Scale::Standard.apply(&mut scores, 1);
        for (got, want) in scores.iter().zip([-1.069045, -0.534522, 0.0, 1.603567]) {
            close(*got, want);
        }
        let mut equal = [0.9, 0.9];
        Scale::Standard.apply(&mut equal, 2);
        assert_eq!(equal, [0.0, 0.0]);
        // Rank: [0.99, 0.90, 0.95, 0.95, 0.97]: 0.90 has none below -> 0; the two 0.95 have one
        // below and one tie -> (1 + 0.5) / 4 = 0.375; 0.97 -> 3/4; 0.99 -> 1.
        let mut crowded = [0.99, 0.90, 0.95, 0.95, 0.97];
        Scale::Rank.apply(&mut crowded, 1);
        assert_eq!(crowded, [1.0, 0.0, 0.375, 0.375, 0.75]);
        let mut single = [0.3];
        Scale::Rank.apply(&mut single, 1);
        assert_eq!(single, [0.5]);
        let mut raw = [0.3, 7.0];
        Scale::Raw.apply(&mut raw, 2);
        assert_eq!(raw, [0.3, 7.0]);
    }

    #[test]
    fn teacher_rank_calibrates_each_teacher_against_itself_and_changes_the_selection() {
        // 3 instances x 2 teachers; teacher 1 (column 1) is more certain everywhere, so every
        // other scale picks it for all three. Column 0 [0.2, 0.5, 0.1] ranks [0.5, 1, 0];
        // column 1 [0.9, 0.6, 0.95] ranks [0.5, 0, 1]: instance 1 now goes to teacher 0, and
        // instance 0 is a tie.
        let mut scores = [0.2, 0.9, 0.5, 0.6, 0.1, 0.95];
        Scale::TeacherRank.apply(&mut scores, 2);
        assert_eq!(scores, [0.5, 0.5, 1.0, 0.0, 0.0, 1.0]);
        let mut global = [0.2, 0.9, 0.5, 0.6, 0.1, 0.95];
        Scale::Rank.apply(&mut global, 2);
        assert!((0..3).all(|i| global[2 * i + 1] > global[2 * i]), "one ranking for all: teacher 1 everywhere");
    }
}
