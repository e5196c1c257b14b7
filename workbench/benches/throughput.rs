//! Throughput of our BERT on MiniLM-L6 shapes, printed as JSON lines for `benches/run.sh`,
//! which measures PyTorch on the same model, batch, length and threads and prints the ratios.
//! `MINILM_DIR` names the checkpoint; `BENCH_BATCH`, `BENCH_LENGTH` and `BENCH_SECONDS` tune it.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use workbench::training::train::{AdamW, AdamWSettings};
use workbench_models::{Batch, Checkpoint, ClassifierOptions, McDepth, Precision, StochasticPass};

// The allocator the workbench binary runs with, set up the same way.
#[global_allocator]
static ALLOCATOR: workbench::allocator::Allocator = workbench::allocator::Allocator;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Calls `work` until `seconds` have passed (after one warm-up call); returns calls per second.
fn rate(seconds: f64, work: &mut dyn FnMut()) -> f64 {
    work();
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed().as_secs_f64() < seconds || calls < 3 {
        work();
        calls += 1;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    workbench::allocator::keep_freed_memory();
    let dir = std::env::var("MINILM_DIR").expect("set MINILM_DIR to the MiniLM checkpoint directory");
    let (batch_size, length, seconds) =
        (env("BENCH_BATCH", 32), env("BENCH_LENGTH", 64), env("BENCH_SECONDS", 10) as f64);
    let device = Device::Cpu;
    let checkpoint = Checkpoint::open(dir.as_ref(), length, &device).unwrap();
    let labels: Vec<String> = (0..10).map(|i| format!("label{i}")).collect();
    let options = |trainable| ClassifierOptions {
        labels: labels.clone(),
        layers: None,
        seed: 0,
        trainable,
        freeze_word_embeddings: true,
        pooling: None,
    };
    let frozen = checkpoint.classifier_for(&options(false), &device).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch_size * length).map(|_| rng.random_range(1000..30000)).collect();
    let batch = Batch {
        ids: Tensor::from_vec(ids, (batch_size, length), &device).unwrap(),
        mask: Tensor::ones((batch_size, length), candle_core::DType::F32, &device).unwrap(),
    };
    let tokens = (batch_size * length) as f64;
    // `BENCH_ONLY=training_step` (say; a comma-separated list) measures only those workloads.
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |workload: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == workload));
    let measure = |workload: &str, work: &mut dyn FnMut()| {
        if wanted(workload) {
            let per_second = rate(seconds, work);
            println!("{}", serde_json::json!({ "workload": workload, "tokens_per_s": per_second * tokens }));
        }
    };
    measure("eval_forward", &mut || drop(frozen.forward(&batch, None).unwrap()));
    let mut seed = 0;
    measure("stochastic_forward", &mut || {
        seed += 1;
        drop(frozen.forward(&batch, Some(&mut StochasticPass::new(seed))).unwrap());
    });
    let student = checkpoint.classifier_for(&options(true), &device).unwrap();
    let targets =
        Tensor::from_vec((0..batch_size as u32).map(|i| i % 10).collect::<Vec<_>>(), batch_size, &device).unwrap();
    let mut optimizer = AdamW::new(student.vars(), AdamWSettings::default()).unwrap();
    measure("training_step", &mut || {
        seed += 1;
        let logits = student.forward(&batch, Some(&mut StochasticPass::new(seed))).unwrap().logits;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        optimizer.step(&loss.backward().unwrap(), 1e-4).unwrap();
    });
    // MC scoring with K = 16, batched as the mc-dropout estimator runs it: every layer stochastic;
    // only the top layer (the rest run once); only the top layer, over 2, 3 or 4 stochastic samples
    // of the rest (`lower_passes`); only the top layer's output dropout and the head's
    // (`outputs_only`). Reported per scored token, so the cost relative to one deterministic pass
    // is eval_forward / mc16_scoring.
    for (workload, top_layers, lower_passes, outputs_only) in [
        ("mc16_scoring", 0, 0, false),
        ("mc16_top1_scoring", 1, 0, false),
        ("mc16_top1_lower2_scoring", 1, 2, false),
        ("mc16_top1_lower3_scoring", 1, 3, false),
        ("mc16_top1_lower4_scoring", 1, 4, false),
        ("mc16_top1_outputs_scoring", 1, 0, true),
    ] {
        let depth = McDepth { top_layers, lower_passes, outputs_only };
        measure(workload, &mut || drop(frozen.mc_logits(&batch, 16, 0, depth).unwrap()));
    }
    // The inference workloads again with bf16 linear layers, where this CPU has AVX512-BF16.
    let mut bf16 = frozen;
    if bf16.set_precision(Precision::Bf16).unwrap() != Precision::Bf16 {
        eprintln!("no AVX512-BF16 on this CPU: no bf16 rows");
        return;
    }
    measure("eval_forward_bf16", &mut || drop(bf16.forward(&batch, None).unwrap()));
    for (workload, top_layers, lower_passes, outputs_only) in [
        ("mc16_scoring_bf16", 0, 0, false),
        ("mc16_top1_scoring_bf16", 1, 0, false),
        ("mc16_top1_lower3_scoring_bf16", 1, 3, false),
        ("mc16_top1_outputs_scoring_bf16", 1, 0, true),
    ] {
        let depth = McDepth { top_layers, lower_passes, outputs_only };
        measure(workload, &mut || drop(bf16.mc_logits(&batch, 16, 0, depth).unwrap()));
    }
    // Full MC over the first quarter of each text's tokens (a teacher's `mc_max_length` at a
    // quarter of its `max_length`, `mc_precision = "bf16"`), counted per token of the whole
    // texts: its cost against one deterministic fp32 pass over them is eval_forward / this.
    let quarter = length.div_ceil(4);
    let prefix =
        Batch { ids: batch.ids.narrow(1, 0, quarter).unwrap(), mask: batch.mask.narrow(1, 0, quarter).unwrap() };
    measure("mc16_quarter_length_scoring_bf16", &mut || {
        drop(bf16.mc_logits(&prefix, 16, 0, McDepth::default()).unwrap())
    });
}
