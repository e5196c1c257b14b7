//! Linear layers in bf16 for inference: weights rounded to bf16 once and packed for the
//! AVX512-BF16 dot-product instruction (pairs of bf16 products summed into fp32), activations
//! rounded to bf16 as each product starts, accumulation and bias in fp32. On a CPU without
//! AVX512-BF16 nothing is packed and the layers stay fp32 (see [`PackedWeight::new`]).

/// Output columns per packed panel: two 16-lane registers.
const PANEL: usize = 32;
/// Rows of the output a kernel call holds in registers (2 x `ROWS` accumulators).
const ROWS: usize = 8;
/// Rows of the output one parallel task fills: its slice of the inputs, rounded to bf16, stays
/// in the core's cache while it passes every panel.
const TASK_ROWS: usize = 64;

/// Whether this CPU has the instructions of the bf16 path.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `value` rounded to the nearest bf16 (ties to even), as the hardware conversion does.
pub fn round_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// Two bf16 side by side, the first in the low half: the unit the dot-product instruction takes.
fn pair(first: f32, second: f32) -> u32 {
    u32::from(round_to_bf16(first)) | (u32::from(round_to_bf16(second)) << 16)
}

/// A linear layer's weight `[n, k]` and bias `[n]` in the bf16 kernel's layout: panels of
/// `PANEL` output columns; in each, for every pair of inputs, the pair of weights of each column.
/// Columns past `n` (the last panel's padding) are zero.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    outputs: usize,
    inputs: usize,
    panels: Vec<u32>,
    bias: Vec<f32>,
}

impl PackedWeight {
    /// The packed layer, or none when this CPU cannot run the bf16 kernel.
    pub fn new(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        supported().then(|| Self::pack(weight, bias, outputs, inputs))
    }

    fn pack(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "a weight of [outputs, inputs]");
        assert_eq!(bias.len(), outputs, "one bias per output");
        let pairs = inputs.div_ceil(2);
        let panel_count = outputs.div_ceil(PANEL);
        let mut panels = vec![0u32; panel_count * pairs * PANEL];
        let at = |row: usize, column: usize| if column < inputs { weight[row * inputs + column] } else { 0.0 };
        for row in 0..outputs {
            let (panel, lane) = (row / PANEL, row % PANEL);
            for p in 0..pairs {
                panels[(panel * pairs + p) * PANEL + lane] = pair(at(row, 2 * p), at(row, 2 * p + 1));
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panel_count * PANEL, 0.0);
        Self { outputs, inputs, panels, bias: padded_bias }
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// `xs @ weight^T + bias` for `xs` of `[rows, inputs]` (row-major): `[rows, outputs]`.
    pub fn forward(&self, xs: &[f32]) -> Vec<f32> {
        assert_eq!(xs.len() % self.inputs.max(1), 0, "inputs of [rows, {}]", self.inputs);
        let rows = xs.len() / self.inputs.max(1);
        super::par_fill(rows * self.outputs, TASK_ROWS * self.outputs, |positions, out| {
            let first = positions.start / self.outputs;
            let count = out.len() / self.outputs;
            let inputs = &xs[first * self.inputs..(first + count) * self.inputs];
            self.fill(inputs, count, out);
        })
    }

    /// One task's rows: its inputs rounded to bf16 pairs, then each panel against them.
    fn fill(&self, xs: &[f32], rows: usize, out: &mut [f32]) {
        let pairs = self.inputs.div_ceil(2);
        let mut paired = vec![0u32; rows * pairs];
        for (row, target) in paired.chunks_exact_mut(pairs).enumerate() {
            let values = &xs[row * self.inputs..(row + 1) * self.inputs];
            for (p, unit) in target.iter_mut().enumerate() {
                *unit = pair(values[2 * p], values.get(2 * p + 1).copied().unwrap_or(0.0));
            }
        }
        for panel in 0..self.outputs.div_ceil(PANEL) {
            let weights = &self.panels[panel * pairs * PANEL..(panel + 1) * pairs * PANEL];
            let bias = &self.bias[panel * PANEL..(panel + 1) * PANEL];
            let columns = PANEL.min(self.outputs - panel * PANEL);
            for start in (0..rows).step_by(ROWS) {
                let block = ROWS.min(rows - start);
                let tile = Tile {
                    inputs: &paired[start * pairs..(start + block) * pairs],
                    pairs,
                    weights,
                    bias,
                    out: &mut out[start * self.outputs + panel * PANEL..],
                    out_stride: self.outputs,
                    columns,
                };
                tile.run(block);
            }
        }
    }
}

/// One kernel call: up to `ROWS` rows against one panel.
struct Tile<'a> {
    /// `[rows, pairs]` bf16 pairs.
    inputs: &'a [u32],
    pairs: usize,
    /// `[pairs, PANEL]` bf16 pairs.
    weights: &'a [u32],
    bias: &'a [f32],
    /// The first row's first column of the panel; rows `out_stride` apart.
    out: &'a mut [f32],
    out_stride: usize,
    /// The panel's columns inside the layer (the rest is padding).
    columns: usize,
}

impl Tile<'_> {
    fn run(self, rows: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(supported(), "the bf16 kernel runs only where AVX512-BF16 is");
            // SAFETY: the CPU has the features (checked above); `rows` <= ROWS and the slices
            // hold what the kernel reads and writes (checked in `kernel`).
            unsafe {
                match rows {
                    8 => avx512::kernel::<8>(self),
                    7 => avx512::kernel::<7>(self),
                    6 => avx512::kernel::<6>(self),
                    5 => avx512::kernel::<5>(self),
                    4 => avx512::kernel::<4>(self),
                    3 => avx512::kernel::<3>(self),
                    2 => avx512::kernel::<2>(self),
                    _ => avx512::kernel::<1>(self),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = rows;
            unreachable!("nothing is packed without AVX512-BF16")
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL};

    /// `R` rows x `PANEL` columns: 2R accumulators start at the bias; every input pair is
    /// broadcast and multiplied with the panel's two registers of weight pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn kernel<const R: usize>(tile: Tile<'_>) {
        let Tile { inputs, pairs, weights, bias, out, out_stride, columns } = tile;
        assert!(inputs.len() >= R * pairs && weights.len() >= pairs * PANEL && bias.len() >= PANEL);
        assert!(out.len() >= (R - 1) * out_stride + columns);
        let (low_bias, high_bias) = (_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias.as_ptr().add(16)));
        let mut low = [low_bias; R];
        let mut high = [high_bias; R];
        let (a, b) = (inputs.as_ptr(), weights.as_ptr());
        for p in 0..pairs {
            let low_weights: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * PANEL).cast()));
            let high_weights: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * PANEL + 16).cast()));
            for r in 0..R {
                let input: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
                low[r] = _mm512_dpbf16_ps(low[r], input, low_weights);
                high[r] = _mm512_dpbf16_ps(high[r], input, high_weights);
            }
        }
        let lanes = |from: usize| -> __mmask16 {
            let count = columns.saturating_sub(from).min(16);
            ((1u32 << count) - 1) as __mmask16
        };
        let (low_mask, high_mask) = (lanes(0), lanes(16));
        for r in 0..R {
            let row = out.as_mut_ptr().add(r * out_stride);
            _mm512_mask_storeu_ps(row, low_mask, low[r]);
            _mm512_mask_storeu_ps(row.add(16), high_mask, high[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    /// The f32 a bf16 stands for (exact).
    fn bf16_to_f32(value: u16) -> f32 {
        f32::from_bits(u32::from(value) << 16)
    }

    #[test]
    fn rounding_to_bf16_keeps_eight_bits_of_mantissa_ties_to_even() {
        assert_eq!(round_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even, 1 + 2^-6.
        assert_eq!(bf16_to_f32(round_to_bf16(1.0 + 3.0 * 2f32.powi(-8))), 1.0 + 2f32.powi(-6));
        assert_eq!(bf16_to_f32(round_to_bf16(-2.5)), -2.5);
        assert!(bf16_to_f32(round_to_bf16(f32::NAN)).is_nan());
    }

    /// The product in f64 of the bf16-rounded inputs and weights: what the kernel computes,
    /// up to the order of its fp32 sums.
    fn reference(xs: &[f32], weight: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
        let round = |v: f32| f64::from(bf16_to_f32(round_to_bf16(v)));
        let outputs = bias.len();
        let mut out = Vec::new();
        for row in xs.chunks_exact(inputs) {
            for o in 0..outputs {
                let w = &weight[o * inputs..(o + 1) * inputs];
                let dot: f64 = row.iter().zip(w).map(|(&x, &w)| round(x) * round(w)).sum();
                out.push((dot + f64::from(bias[o])) as f32);
            }
        }
        out
    }

    fn random(count: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Odd sizes on purpose: a partial panel (45 outputs), an odd number of inputs (37), rows
    /// that leave a partial kernel block and span two tasks (70).
    #[test]
    fn the_bf16_kernel_computes_the_product_of_the_rounded_values_to_fp32_accuracy() {
        if !supported() {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16; the bf16 kernel cannot run here");
            return;
        }
        let mut rng = StdRng::seed_from_u64(7);
        for (rows, outputs, inputs) in [(70, 45, 37), (1, 32, 384), (9, 64, 2), (64, 1, 1)] {
            let (xs, weight, bias) =
                (random(rows * inputs, &mut rng), random(outputs * inputs, &mut rng), random(outputs, &mut rng));
            let packed = PackedWeight::new(&weight, &bias, outputs, inputs).expect("supported");
            let got = packed.forward(&xs);
            let want = reference(&xs, &weight, &bias, inputs);
            assert_eq!(got.len(), rows * outputs);
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            // fp32 sums of at most 384 products of size <= 1: errors of a few ulp of the total.
            assert!(worst < 1e-5 * (inputs as f32).sqrt().max(1.0), "{rows}x{outputs}x{inputs}: {worst}");
        }
    }
}
