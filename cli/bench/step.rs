//! The whole training step as bench rows (`engine-train bench --only step`): multilingual-e5-small
//! on the device (models/bert_cuda), a sentence-pair classification batch and the alignment
//! loss's two parallel batches, each `batch x seq` tokens of random ids with no padding, then
//! one [`GpuStep::step`]: three forward passes, their backward passes, the global-norm clip and
//! AdamW, with the losses and the gradient norm read back as a training loop does.
//!
//! Two rows per shape: `gpu-step` (every projection on cuBLAS on a GPU: engine/cuda/blas.rs and
//! lora_blas.rs) and `gpu-step-fused` (every projection through the fused LoRA kernel, at rank 0
//! where there is no LoRA; the only path on the shim).
//!
//! Methods, as benches/gpu/torch_step.py builds them with peft: `lora` (r 8, alpha 16, q and v),
//! `prefix` (20 virtual tokens, no MLP) and `lora_prefix`. Dropout is off on both sides. The model
//! comes from the cache (`fetch-model multilingual-e5-small`); on the GPU machine, which cannot
//! fetch, benches/gpu/standin_model.py puts a stand-in there with the real shapes.
//!
//! FLOPs (the row's TFLOP/s): per pass, the projections' `2 B S (4 h^2 + 2 h f)` per layer and
//! attention's `4 B S (S + P) h`; a backward pass computes only the frozen products' input
//! gradients (as much again as their forward) and attention's four products (twice its
//! forward); LoRA's products and the head are left out (under 1%).

use polyadapt::data::EncodedBatch;
use polyadapt::engine::cuda::bench::{Bound, Case, Config, Spec};
use polyadapt::engine::cuda::Elem;
use polyadapt::engine::rng;
use polyadapt::models::bert_cuda::{AlignSpec, GpuStep, GpuStepConfig, StepBatch};
use polyadapt::models::config::BertConfig;
use polyadapt::models::fetch::{default_cache_dir, fetch_model};
use polyadapt::models::heads::Pooling;
use polyadapt::models::losses::Distance;
use polyadapt::models::peft::{LoraConfig, MethodsConfig, PrefixConfig};
use polyadapt::Result;

const MODEL: &str = "multilingual-e5-small";
const METHODS: [&str; 3] = ["lora", "prefix", "lora_prefix"];
const PREFIX: usize = 20;
const RANK: usize = 8;
const ALIGN_WEIGHT: f32 = 1.0;
const LR: f32 = 1e-4;

fn methods(name: &str) -> MethodsConfig {
    let lora = name.contains("lora").then(|| LoraConfig {
        r: RANK,
        alpha: 2.0 * RANK as f32,
        dropout: 0.0,
        targets: vec!["q".into(), "v".into()],
        layers: None,
        rslora: false,
    });
    let prefix = name.contains("prefix").then_some(PrefixConfig {
        virtual_tokens: PREFIX,
        projection: None,
        layers: None,
        peft_positions: true,
    });
    MethodsConfig {
        lora,
        prefix,
        ..Default::default()
    }
}

/// FLOPs of one step (see the module head).
fn step_flops(c: &BertConfig, batch: usize, seq: usize, prefix: usize) -> f64 {
    let (b, s, p, h, f) = (
        batch as f64,
        seq as f64,
        prefix as f64,
        c.hidden_size as f64,
        c.intermediate_size as f64,
    );
    let proj = 2.0 * b * s * (4.0 * h * h + 2.0 * h * f);
    let attn = 4.0 * b * s * (s + p) * h;
    3.0 * c.num_hidden_layers as f64 * (2.0 * proj + 3.0 * attn)
}

/// A batch of `batch` sequences of `seq` random ids (no padding), from `stream`.
fn random_batch(batch: usize, seq: usize, vocab: usize, stream: u64) -> EncodedBatch {
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|r| {
            (0..seq)
                .map(|i| {
                    5 + (rng::uniform(0x57e9, stream, (r * seq + i) as u64) * (vocab - 5) as f32)
                        as u32
                })
                .collect()
        })
        .collect();
    let types = vec![0u32; seq];
    let seqs: Vec<(&[u32], &[u32])> = ids
        .iter()
        .map(|i| (i.as_slice(), types.as_slice()))
        .collect();
    EncodedBatch::from_sequences(&seqs, 1)
}

/// The step's rows: every method for every element type of `cfg` (f16 left out: the step's
/// f16 activations are not a configuration a researcher trains e5 in).
pub fn specs(cfg: &Config) -> Result<Vec<Spec>> {
    let dir = fetch_model(MODEL, &default_cache_dir())?;
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let (batch, seq, path) = (cfg.batch, cfg.seq, cfg.path);
    let mut v = Vec::new();
    for &elem in cfg.dtypes.iter().filter(|&&e| e != Elem::F16) {
        for method in METHODS {
            let prefix = if method.contains("prefix") { PREFIX } else { 0 };
            let params = serde_json::json!({
                "model_dir": dir, "method": method, "batch": batch, "seq": seq, "prefix": prefix,
                "rank": RANK, "alpha": 2 * RANK, "targets": ["query", "value"], "classes": 2,
                "align_weight": ALIGN_WEIGHT, "align_pooling": "mean", "head_pooling": "first",
                "clip_norm": 1.0, "lr": LR, "dropout": 0.0,
            });
            let flops = step_flops(&config, batch, seq, prefix);
            for (imp, cublas) in [("gpu-step", true), ("gpu-step-fused", false)] {
                let (dir, vocab, params) = (dir.clone(), config.vocab_size, params.clone());
                v.push(Spec::new(
                    "step",
                    imp,
                    elem.suffix(),
                    format!("e5-small.{method}.b{batch}.s{seq}"),
                    params,
                    Bound::Compute,
                    move |dev| {
                        let step_cfg = GpuStepConfig {
                            elem,
                            path,
                            align: Some(AlignSpec {
                                weight: ALIGN_WEIGHT,
                                layer: None,
                                pooling: Pooling::Mean,
                                distance: Distance::SqL2,
                            }),
                            cublas,
                            ..GpuStepConfig::default()
                        };
                        let mut step = GpuStep::load(
                            dev,
                            &dir,
                            &methods(method),
                            2,
                            Pooling::First,
                            17,
                            step_cfg,
                        )?;
                        let (task, source, target) = (
                            random_batch(batch, seq, vocab, 1),
                            random_batch(batch, seq, vocab, 2),
                            random_batch(batch, seq, vocab, 3),
                        );
                        let labels: Vec<usize> = (0..batch).map(|i| i % 2).collect();
                        Ok(Case::new(0.0, flops, move || {
                            let b = StepBatch {
                                task: &task,
                                labels: &labels,
                                align: Some((&source, &target)),
                                dropout: None,
                            };
                            step.step(&b, LR).map(|_| ())
                        }))
                    },
                ));
            }
        }
    }
    Ok(v)
}
