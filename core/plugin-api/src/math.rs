//! Small numeric helpers on plain slices, shared by plugins that need no tensor library.

/// Softmax of `logits / temperature`, computed stably.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| ((x - max) / temperature).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest value; ties go to the first (as MUKA's hard integration breaks them).
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// `x * ln(x)` with the limit 0 at 0, so a zero probability adds no NaN.
pub fn x_ln_x(x: f32) -> f32 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

/// Shannon entropy in nats; zero probabilities contribute nothing.
pub fn entropy(probs: &[f32]) -> f32 {
    -probs.iter().copied().map(x_ln_x).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_hand_values() {
        // e^0 / (e^0 + e^ln3) = 1/4, e^ln3 / 4 = 3/4
        let p = softmax(&[0.0, 3f32.ln()], 1.0);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        // temperature 2 halves the logits: [0, ln 9 / 2 = ln 3] gives the same
        let q = softmax(&[0.0, 9f32.ln()], 2.0);
        assert!((q[1] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn entropy_treats_zero_as_zero() {
        assert_eq!(entropy(&[1.0, 0.0]), 0.0);
        // H([1/2, 1/2, 0]) = ln 2
        assert!((entropy(&[0.5, 0.5, 0.0]) - 2f32.ln()).abs() < 1e-6);
    }
}
