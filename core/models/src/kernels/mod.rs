//! Fused CPU kernels, with their backward passes, for the element-wise work of a BERT layer:
//! scaled and masked softmax, exact (erf) GELU, layer normalisation, linear layers, dropout and
//! dropout + residual (and, in [`bf16`], the matrix kernel of bf16 inference). Composed from
//! candle operations these take many passes over memory and scalar `libm` calls, which cost
//! more than the matrix products on a CPU. Each kernel runs on candle's own thread pool and is
//! compiled twice, the hot copy with AVX2/FMA picked at run time. Other devices and dtypes take
//! the composed operations (also the reference the tests hold the kernels to).

pub(crate) mod bf16;

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor, D};

type CResult<T> = candle_core::Result<T>;

/// Compiles `$body` twice: once for the baseline target and once with AVX2 and FMA enabled, so
/// that the compiler vectorises the loops with 256-bit registers; the copy is picked at run time.
macro_rules! simd_fn {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $body
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

/// Whether `xs` can take the fused kernels.
fn fused(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> CResult<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("fused kernels take contiguous tensors"),
    }
}

struct SharedOut(*mut f32);
// SAFETY: every parallel task writes a disjoint range of the buffer.
unsafe impl Sync for SharedOut {}

/// Runs `fill(positions, values)` in parallel over `values`, `chunk` values at a time.
fn par_chunks(values: &mut [f32], chunk: usize, fill: impl Fn(Range<usize>, &mut [f32]) + Sync) {
    let len = values.len();
    let shared = SharedOut(values.as_mut_ptr());
    let shared = &shared;
    candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(chunk), |chunks| {
        for index in chunks {
            let start = index * chunk;
            let end = len.min(start + chunk);
            // SAFETY: chunk ranges are disjoint and inside `values`, borrowed for the call.
            let part = unsafe { std::slice::from_raw_parts_mut(shared.0.add(start), end - start) };
            fill(start..end, part);
        }
    });
}

/// A new buffer of `len` values, filled in parallel `chunk` values at a time:
/// `fill(positions, values)` gets the positions its chunk covers.
fn par_fill(len: usize, chunk: usize, fill: impl Fn(Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; len];
    par_chunks(&mut out, chunk, fill);
    out
}

/// A new buffer of rows of `width` values, filled in parallel: `fill(row, positions, values)`,
/// where `positions` are the row's, also in inputs of the same shape.
fn par_fill_rows(len: usize, width: usize, fill: impl Fn(usize, Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    let rows_per_task = (4096 / width.max(1)).max(1);
    par_fill(len, rows_per_task * width, |positions, values| {
        for (offset, row) in values.chunks_mut(width).enumerate() {
            let start = positions.start + offset * width;
            fill(start / width, start..start + width, row);
        }
    })
}

/// Per-column reductions over the rows of a `[rows, width]` matrix: `accumulate(positions,
/// partial)` adds the row at `positions` into a partial of `length` values; row blocks run in
/// parallel, each into its own partial, and the partials are summed at the end.
fn column_reduce(
    rows: usize,
    width: usize,
    length: usize,
    accumulate: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let blocks = rows.div_ceil(64).clamp(1, 32);
    let partials = par_fill(blocks * length, length, |positions, partial| {
        let block = positions.start / length;
        for row in block * rows / blocks..(block + 1) * rows / blocks {
            accumulate(row * width..(row + 1) * width, partial);
        }
    });
    let mut total = partials[..length].to_vec();
    for partial in partials.chunks_exact(length).skip(1) {
        add_into(&mut total, partial);
    }
    total
}

/// Adds `bias` to every row of `values` (rows of its length), in parallel.
fn add_bias_in_place(values: &mut [f32], bias: &[f32]) {
    let rows_per_task = (4096 / bias.len().max(1)).max(1);
    par_chunks(values, rows_per_task * bias.len(), |_, rows| {
        for row in rows.chunks_exact_mut(bias.len()) {
            add_into(row, bias);
        }
    });
}

simd_fn! {
    fn add_into(total: &mut [f32], values: &[f32]) {
        for (t, v) in total.iter_mut().zip(values) {
            *t += v;
        }
    }
}

const LANES: usize = 16;

/// Sum with independent lanes, so that the compiler can vectorise it.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
fn dot(xs: &[f32], ys: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (chunks_x, chunks_y) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let rest: f32 = chunks_x.remainder().iter().zip(chunks_y.remainder()).map(|(x, y)| x * y).sum();
    for (cx, cy) in chunks_x.zip(chunks_y) {
        for ((lane, x), y) in lanes.iter_mut().zip(cx).zip(cy) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    lanes.iter().fold(rest, |m, &x| if x > m { x } else { m })
}

/// e^x with a relative error of about 1e-7 (Cephes' polynomial), branch-free so that it
/// vectorises; 0 below -87 (where f32 underflows anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let clamped = x.clamp(-88.0, 88.0);
    let n = (clamped * std::f32::consts::LOG2_E + 0.5).floor();
    let r = clamped - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let value = (p * r * r + r + 1.0) * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        value
    }
}

/// erf(x) to within 3e-7 (the rational approximation Eigen and XLA use for f32).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const INV_SQRT_TAU: f32 = 0.398_942_3;

simd_fn! {
    fn gelu_values(xs: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = 0.5 * x * (1.0 + erf(x * SQRT_HALF));
        }
    }
}

simd_fn! {
    fn gelu_gradients(xs: &[f32], grads: &[f32], out: &mut [f32]) {
        for ((o, &x), &g) in out.iter_mut().zip(xs).zip(grads) {
            let cdf = 0.5 * (1.0 + erf(x * SQRT_HALF));
            *o = g * (cdf + x * INV_SQRT_TAU * exp(-0.5 * x * x));
        }
    }
}

simd_fn! {
    /// softmax(scale * scores + mask) of one row.
    fn softmax_row(scores: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
        for ((o, &s), &m) in out.iter_mut().zip(scores).zip(mask) {
            *o = s * scale + m;
        }
        let top = max(out);
        for o in out.iter_mut() {
            *o = exp(*o - top);
        }
        let inverse = 1.0 / sum(out);
        for o in out.iter_mut() {
            *o *= inverse;
        }
    }
}

simd_fn! {
    /// d scores = scale * y * (g - <g, y>) for one row.
    fn softmax_gradient_row(probs: &[f32], grads: &[f32], scale: f32, out: &mut [f32]) {
        let inner = dot(probs, grads);
        for ((o, &y), &g) in out.iter_mut().zip(probs).zip(grads) {
            *o = scale * y * (g - inner);
        }
    }
}

/// Mean and 1 / standard deviation of a row.
#[inline(always)]
fn moments(xs: &[f32], eps: f32) -> (f32, f32) {
    let width = xs.len() as f32;
    let mean = sum(xs) / width;
    let mut lanes = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|x| (x - mean) * (x - mean)).sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += (x - mean) * (x - mean);
        }
    }
    let variance = (lanes.iter().sum::<f32>() + rest) / width;
    (mean, 1.0 / (variance + eps).sqrt())
}

simd_fn! {
    fn layer_norm_row(xs: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
        let (mean, inverse_std) = moments(xs, eps);
        for (((o, &x), &w), &b) in out.iter_mut().zip(xs).zip(weight).zip(bias) {
            *o = (x - mean) * inverse_std * w + b;
        }
    }
}

simd_fn! {
    /// dx = (g' - mean(g') - x_hat * mean(g' * x_hat)) / std with g' = g * weight, x_hat
    /// recomputed from x.
    fn layer_norm_gradient_row(xs: &[f32], grads: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let (mean, inverse_std) = moments(xs, eps);
        let width = xs.len() as f32;
        let (mut grad_sum, mut projection) = (0f32, 0f32);
        for ((&x, &g), &w) in xs.iter().zip(grads).zip(weight) {
            let scaled = g * w;
            grad_sum += scaled;
            projection += scaled * (x - mean) * inverse_std;
        }
        let (grad_mean, projection) = (grad_sum / width, projection / width);
        for (((o, &x), &g), &w) in out.iter_mut().zip(xs).zip(grads).zip(weight) {
            *o = (g * w - grad_mean - (x - mean) * inverse_std * projection) * inverse_std;
        }
    }
}

simd_fn! {
    /// Adds one row's contribution to the weight and bias gradients: `[sum g * x_hat, sum g]`.
    fn layer_norm_parameter_row(xs: &[f32], grads: &[f32], eps: f32, partial: &mut [f32]) {
        let (mean, inverse_std) = moments(xs, eps);
        let (weight_grad, bias_grad) = partial.split_at_mut(xs.len());
        for (((dw, db), &x), &g) in weight_grad.iter_mut().zip(bias_grad.iter_mut()).zip(xs).zip(grads) {
            *dw += g * (x - mean) * inverse_std;
            *db += g;
        }
    }
}

/// Whether dropout keeps value `index` of a pass: a hash of (seed, index), so that the mask
/// needs no storage (the backward pass recomputes it) and is the same on every device.
#[inline(always)]
fn keeps(seed: u64, index: u64, threshold: u32) -> bool {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 32) as u32 >= threshold
}

/// Value `index` of a pass after inverted dropout.
#[inline(always)]
fn dropped(x: f32, seed: u64, index: u64, threshold: u32, keep_scale: f32) -> f32 {
    if keeps(seed, index, threshold) {
        x * keep_scale
    } else {
        0.0
    }
}

simd_fn! {
    fn dropout_values(xs: &[f32], seed: u64, start: u64, threshold: u32, keep_scale: f32, out: &mut [f32]) {
        for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
            *o = dropped(x, seed, start + i as u64, threshold, keep_scale);
        }
    }
}

simd_fn! {
    /// `dropout_values` plus `residual`, rounded as the two steps are.
    fn dropout_add_values(
        xs: &[f32],
        residual: &[f32],
        seed: u64,
        start: u64,
        threshold: u32,
        keep_scale: f32,
        out: &mut [f32],
    ) {
        for (i, ((o, &x), &r)) in out.iter_mut().zip(xs).zip(residual).enumerate() {
            *o = dropped(x, seed, start + i as u64, threshold, keep_scale) + r;
        }
    }
}

fn output(values: Vec<f32>, layout: &Layout) -> (CpuStorage, Shape) {
    (CpuStorage::F32(values), layout.shape().clone())
}

const ELEMENTWISE_CHUNK: usize = 1 << 14;

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let xs = contiguous(storage, layout)?;
        let out = par_fill(xs.len(), ELEMENTWISE_CHUNK, |at, o| gelu_values(&xs[at], o));
        Ok(output(out, layout))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?))
    }
}

struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (xs, grads) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        let out = par_fill(xs.len(), ELEMENTWISE_CHUNK, |at, o| gelu_gradients(&xs[at.clone()], &grads[at], o));
        Ok(output(out, l1))
    }
}

/// GELU with the exact erf, as BERT uses it.
pub fn gelu(xs: &Tensor) -> CResult<Tensor> {
    if fused(xs) {
        xs.contiguous()?.apply_op1(Gelu)
    } else {
        xs.gelu_erf()
    }
}

/// softmax(scale * scores + mask) of every row of `scores` `[B, .., T]`, with the additive
/// `mask` `[B, T]` of the row's item.
fn masked_softmax_rows(scores: &[f32], mask: &[f32], mask_layout: &Layout, scale: f32) -> CResult<Vec<f32>> {
    let (batch, width) = mask_layout.shape().dims2()?;
    let rows_per_item = scores.len() / width / batch.max(1);
    Ok(par_fill_rows(scores.len(), width, |row, at, o| {
        let item = row / rows_per_item;
        softmax_row(&scores[at], &mask[item * width..(item + 1) * width], scale, o)
    }))
}

struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (probs, grads) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        let width = l1.shape().dims().last().copied().unwrap_or(1);
        let out = par_fill_rows(probs.len(), width, |_, at, o| {
            softmax_gradient_row(&probs[at.clone()], &grads[at], self.scale, o)
        });
        Ok(output(out, l1))
    }
}

/// `masked_softmax(q @ k^T, mask, scale)` as one operation, so that a training step keeps the
/// probabilities (which the backward pass needs) but not the scores (which it does not).
struct AttentionProbabilities {
    scale: f32,
}

impl CustomOp3 for AttentionProbabilities {
    fn name(&self) -> &'static str {
        "fused-attention-probabilities"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let cpu =
            |storage, layout: &Layout| Tensor::from_slice(contiguous(storage, layout)?, layout.shape(), &Device::Cpu);
        // candle's batched product, so that the scores are those of the unfused path.
        let scores = cpu(s1, l1)?.matmul(&cpu(s2, l2)?.t()?)?;
        let shape = scores.shape().clone();
        let scores = scores.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(masked_softmax_rows(&scores, contiguous(s3, l3)?, l3, self.scale)?), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        _: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k) = (q.detach(), k.detach());
        let scores_grad = probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        // As candle's matmul and transpose pass them back, so that the sums run in the same order.
        Ok((Some(scores_grad.matmul(&k)?), Some(q.t()?.matmul(&scores_grad)?.t()?), None))
    }
}

/// Attention probabilities of queries and keys `[B, heads, T, head_dim]`: softmax over the last
/// axis of `scale * q @ k^T + mask`, with the additive mask `[B, T]` broadcast over heads and
/// query positions.
pub fn attention_probabilities(q: &Tensor, k: &Tensor, mask: &Tensor, scale: f64) -> CResult<Tensor> {
    if fused(q) {
        q.contiguous()?.apply_op3(&k.contiguous()?, &mask.contiguous()?, AttentionProbabilities { scale: scale as f32 })
    } else {
        composed_masked_softmax(&q.matmul(&k.t()?)?, mask, scale)
    }
}

/// The masked softmax of `scores` `[B, heads, T, T]` in candle's operations, for the devices and
/// dtypes the kernels do not serve.
fn composed_masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> CResult<Tensor> {
    let (batch, length) = mask.dims2()?;
    let logits = (scores * scale)?.broadcast_add(&mask.reshape((batch, 1, 1, length))?)?;
    candle_nn::ops::softmax(&logits, D::Minus1)
}

/// Layer normalisation over the last axis of x `[.., width]`, with weight and bias `[width]`.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (xs, weight, bias) = (contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        let width = weight.len();
        let out = par_fill_rows(xs.len(), width, |_, at, o| layer_norm_row(&xs[at], weight, bias, self.eps, o));
        Ok(output(out, l1))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let input_grad = xs.apply_op3_no_bwd(&grad, weight, &LayerNormInputGrad { eps: self.eps })?;
        let parameter_grads = xs.apply_op2_no_bwd(&grad, &LayerNormParameterGrads { eps: self.eps })?;
        let width = weight.elem_count();
        Ok((
            Some(input_grad),
            Some(parameter_grads.narrow(0, 0, width)?),
            Some(parameter_grads.narrow(0, width, width)?),
        ))
    }
}

struct LayerNormInputGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormInputGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (xs, grads, weight) = (contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        let width = weight.len();
        let out = par_fill_rows(xs.len(), width, |_, at, o| {
            layer_norm_gradient_row(&xs[at.clone()], &grads[at], weight, self.eps, o)
        });
        Ok(output(out, l1))
    }
}

/// The weight and bias gradients of a layer norm, concatenated: `[2 * width]`.
struct LayerNormParameterGrads {
    eps: f32,
}

impl CustomOp2 for LayerNormParameterGrads {
    fn name(&self) -> &'static str {
        "fused-layer-norm-parameter-grads"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (xs, grads) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        let width = l1.shape().dims().last().copied().unwrap_or(1);
        let sums = column_reduce(xs.len() / width, width, 2 * width, |at, partial| {
            layer_norm_parameter_row(&xs[at.clone()], &grads[at], self.eps, partial)
        });
        Ok((CpuStorage::F32(sums), Shape::from(2 * width)))
    }
}

/// Layer normalisation over the last axis.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> CResult<Tensor> {
    if fused(xs) {
        xs.contiguous()?.apply_op3(weight, bias, LayerNorm { eps: eps as f32 })
    } else {
        let centered = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered.broadcast_div(&(variance + eps)?.sqrt()?)?.broadcast_mul(weight)?.broadcast_add(bias)
    }
}

/// `xs @ weight^T + bias` for `xs` of `[rows, inputs]`, the bias added in place, so that the layer
/// leaves one tensor (candle's matmul then a bias add left two, both held for the backward pass).
/// The product is complete before the bias is added (gemm accumulating onto the bias would round
/// differently where it splits the inputs: runs would no longer reproduce earlier ones). The bias
/// gradient (a column sum) runs in parallel, where candle's reduction over leading axes runs on one
/// thread. With `gelu_input`, the layer reads GELU of its input, computed on the fly and again in
/// the backward pass, so that a training step holds the feed-forward block's intermediate once
/// (before GELU) rather than twice.
struct FusedLinear {
    gelu_input: bool,
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (xs, weight, bias) = (contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        let (rows, inputs) = l1.shape().dims2()?;
        let outputs = bias.len();
        if weight.len() != outputs * inputs {
            candle_core::bail!("a linear layer of [{outputs}, {inputs}] got a weight of {:?}", l2.shape())
        }
        let activated;
        let xs = if self.gelu_input {
            activated = par_fill(xs.len(), ELEMENTWISE_CHUNK, |at, o| gelu_values(&xs[at], o));
            &activated[..]
        } else {
            xs
        };
        let mut out = vec![0f32; rows * outputs];
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: `out` is [rows, outputs], `xs` [rows, inputs] and `weight` [outputs, inputs],
        // all contiguous; the strides below read `weight` transposed.
        unsafe {
            gemm::gemm(
                rows,
                outputs,
                inputs,
                out.as_mut_ptr(),
                1,
                outputs as isize,
                false,
                xs.as_ptr(),
                1,
                inputs as isize,
                weight.as_ptr(),
                inputs as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        add_bias_in_place(&mut out, bias);
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached: a gradient that recorded its own graph would chain every step's graph to the
        // optimizer's moments (candle detaches the gradients of inner nodes, not of variables).
        let (grad, xs, weight) = (grad.contiguous()?.detach(), xs.detach(), weight.detach());
        let grad_inputs = grad.matmul(&weight)?;
        let (inputs, grad_xs) = if self.gelu_input {
            (xs.apply_op1_no_bwd(&Gelu)?, xs.apply_op2_no_bwd(&grad_inputs, &GeluBackward)?)
        } else {
            (xs, grad_inputs)
        };
        // As candle's matmul of `xs` and `weight^T` computes it, so that the sums run in the same order.
        let grad_weight = inputs.t()?.matmul(&grad)?.t()?;
        Ok((Some(grad_xs), Some(grad_weight), Some(grad.apply_op1_no_bwd(&ColumnSums)?)))
    }
}

struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "fused-column-sums"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let values = contiguous(storage, layout)?;
        let width = layout.shape().dims().last().copied().unwrap_or(1);
        let sums = column_reduce(values.len() / width, width, width, |at, partial| add_into(partial, &values[at]));
        Ok((CpuStorage::F32(sums), Shape::from(width)))
    }
}

/// `layer` applied to `xs` with its leading axes flattened into rows (`[rows, inputs]` to
/// `[rows, outputs]`), the axes restored after.
fn over_rows(xs: &Tensor, outputs: usize, layer: impl FnOnce(Tensor) -> CResult<Tensor>) -> CResult<Tensor> {
    let (rows, width) = (xs.elem_count() / xs.dim(D::Minus1)?, xs.dim(D::Minus1)?);
    let mut dims = xs.dims().to_vec();
    *dims.last_mut().expect("a linear input has at least one axis") = outputs;
    layer(xs.contiguous()?.reshape((rows, width))?)?.reshape(dims)
}

/// A linear layer, `xs @ weight^T + bias`, as one matrix product over all leading axes.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: &Tensor) -> CResult<Tensor> {
    over_rows(xs, weight.dim(0)?, |xs| {
        if fused(&xs) {
            xs.apply_op3(&weight.contiguous()?, &bias.contiguous()?, FusedLinear { gelu_input: false })
        } else {
            xs.matmul(&weight.t()?)?.broadcast_add(bias)
        }
    })
}

/// `linear(gelu(xs), weight, bias)`, keeping only `xs` for the backward pass.
pub fn gelu_linear(xs: &Tensor, weight: &Tensor, bias: &Tensor) -> CResult<Tensor> {
    over_rows(xs, weight.dim(0)?, |xs| {
        if fused(&xs) {
            xs.apply_op3(&weight.contiguous()?, &bias.contiguous()?, FusedLinear { gelu_input: true })
        } else {
            xs.gelu_erf()?.matmul(&weight.t()?)?.broadcast_add(bias)
        }
    })
}

struct PackedLinear<'a>(&'a bf16::PackedWeight);

impl CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "bf16-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let xs = contiguous(storage, layout)?;
        let rows = xs.len() / self.0.inputs();
        Ok((CpuStorage::F32(self.0.forward(xs)), Shape::from((rows, self.0.outputs()))))
    }
}

/// A linear layer with bf16 weights (see [`bf16`]), for inference: no gradient flows through it.
/// Inputs that cannot take the fused kernels are refused (packed weights exist only on the CPU).
pub fn packed_linear(xs: &Tensor, packed: &bf16::PackedWeight) -> CResult<Tensor> {
    if !fused(xs) {
        candle_core::bail!("bf16 linear layers take f32 inputs on the CPU, not {:?} on {:?}", xs.dtype(), xs.device())
    }
    let width = xs.dim(D::Minus1)?;
    if width != packed.inputs() {
        candle_core::bail!("a bf16 linear layer of {} inputs got {width}", packed.inputs())
    }
    over_rows(xs, packed.outputs(), |xs| xs.apply_op1_no_bwd(&PackedLinear(packed)))
}

#[derive(Clone, Copy)]
struct Dropout {
    seed: u64,
    threshold: u32,
    keep_scale: f32,
}

impl Dropout {
    fn new(p: f32, seed: u64) -> Self {
        Self { seed, threshold: (f64::from(p) * 4_294_967_296.0) as u32, keep_scale: 1.0 / (1.0 - p) }
    }

    /// The mask (0 or 1/(1-p)) for a tensor of `count` values, on the CPU.
    fn mask(&self, count: usize) -> Vec<f32> {
        let ones = vec![1f32; count];
        let mut mask = vec![0f32; count];
        dropout_values(&ones, self.seed, 0, self.threshold, self.keep_scale, &mut mask);
        mask
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let xs = contiguous(storage, layout)?;
        let out = par_fill(xs.len(), ELEMENTWISE_CHUNK, |at, o| {
            dropout_values(&xs[at.clone()], self.seed, at.start as u64, self.threshold, self.keep_scale, o)
        });
        Ok(output(out, layout))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// `dropout(xs) + residual` in one pass: the dropped values are never stored (a layer's two
/// residual branches kept two such tensors for the backward pass).
struct DropoutAdd(Dropout);

impl CustomOp2 for DropoutAdd {
    fn name(&self) -> &'static str {
        "fused-dropout-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (xs, residual) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        if xs.len() != residual.len() {
            candle_core::bail!("dropout-add of {:?} and {:?}", l1.shape(), l2.shape())
        }
        let Dropout { seed, threshold, keep_scale } = self.0;
        let out = par_fill(xs.len(), ELEMENTWISE_CHUNK, |at, o| {
            dropout_add_values(&xs[at.clone()], &residual[at.clone()], seed, at.start as u64, threshold, keep_scale, o)
        });
        Ok(output(out, l1))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        Ok((Some(grad.apply_op1_no_bwd(&self.0)?), Some(grad)))
    }
}

/// `dropout(xs, p, seed) + residual` (the same masks), fused where the kernels run.
pub fn dropout_add(xs: &Tensor, residual: &Tensor, p: f32, seed: u64) -> CResult<Tensor> {
    if fused(xs) && fused(residual) && xs.shape() == residual.shape() {
        xs.contiguous()?.apply_op2(&residual.contiguous()?, DropoutAdd(Dropout::new(p, seed)))
    } else {
        dropout(xs, p, seed)? + residual
    }
}

/// Inverted dropout with probability `p`; the mask is a function of `seed` and the position of
/// each value, identical on every device.
pub fn dropout(xs: &Tensor, p: f32, seed: u64) -> CResult<Tensor> {
    let op = Dropout::new(p, seed);
    if fused(xs) {
        xs.contiguous()?.apply_op1(op)
    } else {
        let mask = Tensor::from_vec(op.mask(xs.elem_count()), xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs * mask
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-scale..scale)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// The value, as f32, and the gradients with respect to `inputs` of a fixed random
    /// projection of it.
    fn gradients(inputs: &[&Tensor], f: impl Fn(&[&Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let out = f(&vars.iter().map(|v| v.as_tensor()).collect::<Vec<_>>());
        let projection = random(out.dims(), 99, 1.0).to_dtype(out.dtype()).unwrap();
        let grads = (&out * projection).unwrap().sum_all().unwrap().backward().unwrap();
        let as_f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        (as_f32(&out), vars.iter().map(|v| as_f32(grads.get(v.as_tensor()).unwrap())).collect())
    }

    fn value_and_gradient(xs: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let (out, mut grads) = gradients(&[xs], |t| f(t[0]));
        (out, grads.remove(0))
    }

    /// An f64 copy, which takes the composed path (the fused kernels are for f32).
    fn f64(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    /// The same function through the composed operations.
    fn composed(xs: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        value_and_gradient(&f64(xs), f)
    }

    #[test]
    fn approximations_match_libm() {
        for i in -400..=400 {
            let x = i as f32 * 0.0125;
            assert!(
                (f64::from(erf(x)) - reference_erf(x)).abs() < 4e-7,
                "erf({x}) = {} not {}",
                erf(x),
                reference_erf(x)
            );
            let x = x * 16.0;
            assert!((exp(x) - x.exp()).abs() <= 2e-7 * x.exp(), "exp({x})");
        }
        assert_eq!(exp(-90.0), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
    }

    /// erf by Simpson's rule in f64 (the standard library has no erf).
    fn reference_erf(x: f32) -> f64 {
        let n = 1000;
        let h = f64::from(x) / n as f64;
        let f = |t: f64| (-t * t).exp();
        let simpson: f64 = (0..n)
            .map(|k| {
                let a = k as f64 * h;
                (f(a) + 4.0 * f(a + h / 2.0) + f(a + h)) * h / 6.0
            })
            .sum();
        simpson * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_the_composed_operation_and_its_gradient() {
        let xs = random(&[7, 37], 1, 5.0);
        let (fused, fused_grad) = value_and_gradient(&xs, |x| gelu(x).unwrap());
        let (reference, reference_grad) = composed(&xs, |x| gelu(x).unwrap());
        assert!(max_difference(&fused, &reference) < 1e-6);
        assert!(max_difference(&fused_grad, &reference_grad) < 1e-6);
    }

    /// The softmax rows and their backward as an operation on given scores: the unfused
    /// reference of [`AttentionProbabilities`], whose scores come from candle's product.
    struct MaskedSoftmax {
        scale: f32,
    }

    impl CustomOp2 for MaskedSoftmax {
        fn name(&self) -> &'static str {
            "masked-softmax-reference"
        }

        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
            let (scores, mask) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
            Ok(output(masked_softmax_rows(scores, mask, l2, self.scale)?, l1))
        }

        fn bwd(
            &self,
            _: &Tensor,
            _: &Tensor,
            probs: &Tensor,
            grad: &Tensor,
        ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
            let scores_grad = probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
            Ok((Some(scores_grad), None))
        }
    }

    fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f32) -> Tensor {
        scores.contiguous().unwrap().apply_op2(mask, MaskedSoftmax { scale }).unwrap()
    }

    #[test]
    fn masked_softmax_matches_the_composed_operation_and_its_gradient() {
        let scores = random(&[2, 3, 5, 19], 2, 4.0);
        let mask = Tensor::from_vec(
            (0..2 * 19).map(|i| if i % 19 >= 15 && i >= 19 { f32::MIN } else { 0.0 }).collect::<Vec<_>>(),
            (2, 19),
            &Device::Cpu,
        )
        .unwrap();
        let (fused, fused_grad) = value_and_gradient(&scores, |s| masked_softmax(s, &mask, 0.125));
        let mask64 = mask.to_dtype(DType::F64).unwrap();
        let (reference, reference_grad) = composed(&scores, |s| composed_masked_softmax(s, &mask64, 0.125).unwrap());
        assert!(max_difference(&fused, &reference) < 1e-6);
        assert!(max_difference(&fused_grad, &reference_grad) < 1e-6);
        // Masked positions of the second item get exactly zero probability.
        let masked = fused.narrow(0, 1, 1).unwrap().narrow(3, 15, 4).unwrap();
        assert_eq!(masked.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn layer_norm_matches_the_composed_operation_and_its_gradient() {
        let xs = (random(&[4, 6, 40], 3, 3.0) + 1.5).unwrap();
        let weight = random(&[40], 4, 1.0);
        let bias = random(&[40], 5, 1.0);
        let (fused, fused_grads) = gradients(&[&xs, &weight, &bias], |t| layer_norm(t[0], t[1], t[2], 1e-12).unwrap());
        let (reference, reference_grads) =
            gradients(&[&xs, &weight, &bias].map(f64).each_ref(), |t| layer_norm(t[0], t[1], t[2], 1e-12).unwrap());
        assert!(max_difference(&fused, &reference) < 2e-6);
        for (fused, reference) in fused_grads.iter().zip(&reference_grads) {
            assert!(max_difference(fused, reference) < 2e-5);
        }
    }

    #[test]
    fn linear_matches_the_composed_operation_and_its_gradients() {
        let xs = random(&[3, 70, 24], 7, 1.0);
        let weight = random(&[40, 24], 8, 1.0);
        let bias = random(&[40], 9, 1.0);
        let (fused, fused_grads) = gradients(&[&xs, &weight, &bias], |t| linear(t[0], t[1], t[2]).unwrap());
        let (reference, reference_grads) = gradients(&[&xs, &weight, &bias].map(f64).each_ref(), |t| {
            t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap().broadcast_add(t[2]).unwrap()
        });
        assert_eq!(fused.dims(), &[3, 70, 40]);
        assert!(max_difference(&fused, &reference) < 1e-5);
        for (fused, reference) in fused_grads.iter().zip(&reference_grads) {
            assert!(max_difference(fused, reference) < 1e-4);
        }
    }

    /// The GELU computed inside the layer (and again in the backward pass) gives what GELU then
    /// the layer give, bit for bit, values and gradients.
    #[test]
    fn gelu_linear_is_gelu_then_linear_bit_for_bit_with_its_gradients() {
        let xs = random(&[3, 70, 24], 12, 3.0);
        let weight = random(&[40, 24], 13, 1.0);
        let bias = random(&[40], 14, 1.0);
        let (fused, fused_grads) = gradients(&[&xs, &weight, &bias], |t| gelu_linear(t[0], t[1], t[2]).unwrap());
        let (apart, apart_grads) =
            gradients(&[&xs, &weight, &bias], |t| linear(&gelu(t[0]).unwrap(), t[1], t[2]).unwrap());
        assert_eq!(fused.dims(), &[3, 70, 40]);
        assert_eq!(max_difference(&fused, &apart), 0.0);
        for (fused, apart) in fused_grads.iter().zip(&apart_grads) {
            assert_eq!(max_difference(fused, apart), 0.0);
        }
    }

    /// Scores and softmax in one operation give what they give apart, bit for bit, values and
    /// gradients; with a padded position and a single query row (a `cls` top layer).
    #[test]
    fn attention_probabilities_are_the_masked_softmax_of_the_scores_bit_for_bit() {
        let mask = Tensor::from_vec(
            (0..2 * 9).map(|i| if i >= 16 { f32::MIN } else { 0.0 }).collect::<Vec<_>>(),
            (2, 9),
            &Device::Cpu,
        )
        .unwrap();
        for queries in [9, 1] {
            let (q, k) = (random(&[2, 3, queries, 8], 15, 2.0), random(&[2, 3, 9, 8], 16, 2.0));
            let (fused, fused_grads) =
                gradients(&[&q, &k], |t| attention_probabilities(t[0], t[1], &mask, 0.35).unwrap());
            let (apart, apart_grads) =
                gradients(&[&q, &k], |t| masked_softmax(&t[0].matmul(&t[1].t().unwrap()).unwrap(), &mask, 0.35));
            assert_eq!(fused.dims(), &[2, 3, queries, 9]);
            assert_eq!(max_difference(&fused, &apart), 0.0);
            for (fused, apart) in fused_grads.iter().zip(&apart_grads) {
                assert_eq!(max_difference(fused, apart), 0.0);
            }
            // The composed path, which f64 takes, agrees to f32's precision.
            let mask64 = mask.to_dtype(DType::F64).unwrap();
            let (composed, composed_grads) = gradients(&[&q, &k].map(f64).each_ref(), |t| {
                attention_probabilities(t[0], t[1], &mask64, 0.35).unwrap()
            });
            assert!(max_difference(&fused, &composed) < 1e-6);
            for (fused, composed) in fused_grads.iter().zip(&composed_grads) {
                assert!(max_difference(fused, composed) < 1e-5);
            }
        }
    }

    /// A gradient that recorded a graph of its own would keep every training step's graph alive
    /// through the optimizer's moments (a run grew to 21 GB before this test).
    #[test]
    fn linear_gradients_record_no_graph() {
        let vars: Vec<Var> = [random(&[5, 8], 1, 1.0), random(&[3, 8], 2, 1.0), random(&[3], 3, 1.0)]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let out = linear(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor()).unwrap();
        let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for var in &vars {
            assert!(
                !grads.get(var.as_tensor()).unwrap().track_op(),
                "a gradient of shape {:?} tracks its graph",
                var.dims()
            );
        }
    }

    #[test]
    fn dropout_add_is_dropout_then_add_bit_for_bit_with_its_gradients() {
        let (xs, residual) = (random(&[64, 257], 10, 1.0), random(&[64, 257], 11, 1.0));
        let (fused, fused_grads) = gradients(&[&xs, &residual], |t| dropout_add(t[0], t[1], 0.25, 7).unwrap());
        let (apart, apart_grads) = gradients(&[&xs, &residual], |t| (dropout(t[0], 0.25, 7).unwrap() + t[1]).unwrap());
        assert_eq!(max_difference(&fused, &apart), 0.0);
        for (fused, apart) in fused_grads.iter().zip(&apart_grads) {
            assert_eq!(max_difference(fused, apart), 0.0);
        }
    }

    #[test]
    fn dropout_is_the_same_on_every_path_seeded_and_about_p() {
        let xs = random(&[64, 257], 6, 1.0);
        let (fused, fused_grad) = value_and_gradient(&xs, |x| dropout(x, 0.25, 7).unwrap());
        let (reference, reference_grad) = composed(&xs, |x| dropout(x, 0.25, 7).unwrap());
        assert!(max_difference(&fused, &reference) < 1e-6);
        assert!(max_difference(&fused_grad, &reference_grad) < 1e-6);
        let dropped = fused.eq(0f32).unwrap().to_dtype(DType::F32).unwrap().mean_all().unwrap();
        let dropped: f32 = dropped.to_scalar().unwrap();
        assert!((dropped - 0.25).abs() < 0.01, "dropped {dropped}");
        // Kept values are scaled by 1 / (1 - p).
        let kept = fused.ne(0f32).unwrap().to_dtype(DType::F32).unwrap();
        assert!(max_difference(&fused, &((&xs * kept).unwrap() / 0.75).unwrap()) < 1e-6);
        assert_eq!(dropout(&xs, 0.25, 7).unwrap().to_vec2::<f32>().unwrap(), fused.to_vec2::<f32>().unwrap());
        assert!(max_difference(&dropout(&xs, 0.25, 8).unwrap(), &fused) > 0.1);
    }
}
