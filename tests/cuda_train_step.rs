//! A whole training step on the CUDA backend (models/bert_cuda) against the same step on the
//! CPU backend (BertModel + Tape + clip + AdamW, as cli/train/trainer.rs runs it), on the real
//! multilingual-e5-small, on every device (host shim; the GPU when there is one).
//!
//! The step: sentence pairs of pseudo/pairs_de.tsv (three pairs of different lengths, packed)
//! through the backbone with prefix keys/values and LoRA, a classifier head and its
//! cross-entropy, plus the alignment loss between English and German sentences
//! (pseudo/pairs_en.tsv, line for line) at a middle or the last layer; the global-norm clip;
//! AdamW. Both sides start from the same values (the GPU copies the CPU's store; LoRA's B is
//! set to random values first so that A has a gradient in the first step). Compared: the task
//! and alignment losses, every trainable tensor's gradient, the gradient norm, and after AdamW
//! every parameter and both moments; then a second step from there on other sentences.
//!
//! Tolerances (norm-wise relative, ||gpu - cpu|| / ||cpu||, per tensor). f32: 1e-4. Both sides
//! compute in f32 and differ only in the order of their sums (blocked products, per-chunk
//! reductions): ~1e-7 relative per dot product, grown through 12 layers of LayerNorm and
//! attention and their backward; measured (printed by the test): losses 1e-7 to 1e-5,
//! gradients and moments up to 1.3e-5, parameters after AdamW up to 5e-6. bf16 (activations and
//! frozen weights in bf16 on the device, against the CPU with bf16 weights and bf16 products but
//! f32 activations; the tensor-core kernels, which also round LoRA's matrices and projection and
//! the attention probabilities to bf16 for their products): every activation and activation
//! gradient is rounded to 8 significant bits (2^-9 relative) at each of some thirty kernel
//! boundaries per layer, and attention's backward (dS = P (dP - delta)) cancels. Measured:
//! losses within 1.4e-3 and the gradient norm within 1.1e-3 (held to 1e-2); per tensor,
//! gradients 0.5% to 4.7% and second moments (squares) up to 8.1% (held to 1e-1, 2e-1).
//! After AdamW, an element whose first moment is within the comparison's noise of zero has no
//! determined step direction on either side (AdamW's first step is about lr * sign(g)): those
//! are held to the size of an AdamW step, the others compared norm-wise (see `compare_params`).
//! Every activation buffer is poisoned (NaN) before its kernel writes it (`poison`): an
//! element no kernel wrote would make a loss or gradient NaN.
#![cfg(feature = "cuda-shim")]

mod common;
mod cuda_util;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{fixtures_dir, real_model};
use cuda_util::on_every_device;
use polyadapt::data::tokenize::Tokens;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::cuda::kernels::adamw::AdamW as GpuAdamW;
use polyadapt::engine::cuda::kernels::KernelPath;
use polyadapt::engine::cuda::{Device, Elem};
use polyadapt::engine::ops;
use polyadapt::engine::optim::{clip_grad_norm, AdamW, AdamWConfig};
use polyadapt::engine::tensor::{DType, Tensor};
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::bert_cuda::{AlignSpec, GpuStep, GpuStepConfig, Part, StepBatch};
use polyadapt::models::heads::{ClassifierHead, Pooling};
use polyadapt::models::losses::{alignment_loss, Distance};
use polyadapt::models::peft::{Adaptation, LoraConfig, MethodsConfig, PrefixConfig};

const SEED: u64 = 17;
const LR: f32 = 5e-3;
const CLIP: f32 = 1.0;
const BETAS: (f32, f32) = (0.9, 0.999);
const EPS: f32 = 1e-8;
const DECAY: f32 = 0.01;

struct Case {
    name: &'static str,
    elem: Elem,
    /// The kernels: bf16 takes the tensor cores (emulated on the shim), as `Auto` does on a GPU.
    path: KernelPath,
    prefix: usize,
    /// The layers with a prefix (all when `None`).
    prefix_layers: Option<Vec<usize>>,
    lora: LoraConfig,
    head_pooling: Pooling,
    align: AlignSpec,
    task_weight: f32,
    /// Dropout on (hidden, attention, LoRA) under fixed seeds.
    dropout: bool,
    steps: usize,
    /// The projections on cuBLAS on a GPU (the fused LoRA kernel otherwise, and always on the
    /// shim, which has no cuBLAS).
    cublas: bool,
    /// Norm-wise relative tolerance of every tensor (gradients, parameters, moments).
    tol: f64,
    /// Relative tolerance of the losses and the gradient norm.
    tol_loss: f64,
}

/// The CPU side: the model, the store with every trainable parameter, and the optimiser.
struct Cpu {
    model: BertModel,
    store: ParamStore,
    adaptation: Adaptation,
    head: ClassifierHead,
    optim: AdamW,
}

fn cpu_setup(c: &Case) -> Cpu {
    let dir = real_model("multilingual-e5-small");
    let mut store = ParamStore::new();
    let opts = match c.elem {
        Elem::F32 => LoadOptions::default(),
        _ => LoadOptions { dtype: DType::BF16, precision: Precision::Bf16 },
    };
    let model = BertModel::load(&dir, &mut store, opts).unwrap();
    let prefix = (c.prefix > 0).then(|| PrefixConfig { virtual_tokens: c.prefix, projection: None, layers: c.prefix_layers.clone(), peft_positions: true });
    let methods = MethodsConfig { lora: Some(c.lora.clone()), prefix, ..Default::default() };
    let adaptation = Adaptation::build(&mut store, &model.config, &methods, SEED, None).unwrap();
    let head = ClassifierHead::new(&mut store, model.config.hidden_size, 2, c.head_pooling, SEED).unwrap();
    // LoRA's B starts at zero, which would leave A without a gradient in the first step.
    for (k, s) in adaptation.lora.as_ref().unwrap().sites().iter().enumerate() {
        let shape = store.value(s.b).shape().to_vec();
        let n = shape.iter().product();
        store.set_value(s.b, Tensor::new(common::rand_vec(1000 + k as u64, n, 0.05), &shape)).unwrap();
    }
    let optim = AdamW::new(AdamWConfig {
        lr: LR as f64,
        beta1: BETAS.0 as f64,
        beta2: BETAS.1 as f64,
        eps: EPS as f64,
        weight_decay: DECAY as f64,
    })
    .unwrap();
    Cpu { model, store, adaptation, head, optim }
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&real_model("multilingual-e5-small").join("tokenizer.json"), None).unwrap()
}

/// Runs a test body on a thread with a 64 MB stack: the tokenizer's copy of multilingual-e5's
/// 250k-entry unigram trie (in `encode_truncated`) recurses deeply, and overflowed a test
/// thread's 2 MB stack under one of these tests' frames. (Bodies run through
/// `on_every_device` already get such a thread.)
fn big_stack(body: impl FnOnce() + Send + 'static) {
    let t = std::thread::Builder::new().stack_size(64 << 20).spawn(body).unwrap();
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

/// One step's inputs: task pairs with labels, parallel sentences for the alignment.
struct Batch {
    task: EncodedBatch,
    labels: Vec<usize>,
    source: EncodedBatch,
    target: EncodedBatch,
}

fn tsv(name: &str) -> Vec<(String, String, usize)> {
    let text = std::fs::read_to_string(fixtures_dir().join("pseudo").join(name)).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].trim().parse().unwrap())
        })
        .collect()
}

/// The batch of step `step`: task pairs 3 * step.., alignment sentences 8 + 3 * step...
fn batch(tok: &TextTokenizer, step: usize) -> Batch {
    let (de, en) = (tsv("pairs_de.tsv"), tsv("pairs_en.tsv"));
    let pack = |tokens: &[Tokens]| {
        let seqs: Vec<(&[u32], &[u32])> = tokens.iter().map(|t| (t.ids.as_slice(), t.type_ids.as_slice())).collect();
        EncodedBatch::from_sequences(&seqs, tok.pad_id())
    };
    let task = &de[3 * step..3 * step + 3];
    let first: Vec<String> = task.iter().map(|t| t.0.clone()).collect();
    let second: Vec<String> = task.iter().map(|t| t.1.clone()).collect();
    let pairs = tok.encode_truncated(&first, Some(&second), 128).unwrap();
    let lines = 8 + 3 * step..8 + 3 * step + 3;
    let one = |rows: &[(String, String, usize)]| {
        let s: Vec<String> = rows[lines.clone()].iter().map(|t| t.0.clone()).collect();
        pack(&tok.encode_truncated(&s, None, 128).unwrap())
    };
    Batch { task: pack(&pairs), labels: task.iter().map(|t| t.2).collect(), source: one(&en), target: one(&de) }
}

fn dropout_seeds(c: &Case, step: usize) -> Option<(u64, u64)> {
    c.dropout.then_some((1000 + step as u64, 2000 + step as u64))
}

/// The CPU trainer's step up to the gradients: returns (task loss, alignment loss).
fn cpu_forward_backward(c: &Case, cpu: &mut Cpu, b: &Batch, step: usize) -> (f32, f32) {
    cpu.store.zero_grad();
    let mut tape = Tape::new();
    let layers = cpu.model.num_layers();
    let seeds = dropout_seeds(c, step);
    let encode = |tape: &mut Tape, batch: &EncodedBatch, layer: usize, seed: u64| {
        let opts = ForwardOptions { training: seeds.is_some(), dropout_seed: seed, layers: vec![layer] };
        let out = cpu.model.forward(tape, &cpu.store, batch, &cpu.adaptation, &opts).unwrap();
        (out.real_tokens(tape, &out.hidden[0].1).unwrap(), out.packing.offsets.clone())
    };
    let (tokens, offsets) = encode(&mut tape, &b.task, layers, seeds.map_or(0, |s| s.0));
    let la = c.align.layer.unwrap_or(layers);
    let (hs, os) = encode(&mut tape, &b.source, la, seeds.map_or(0, |s| s.1));
    let (ht, ot) = encode(&mut tape, &b.target, la, seeds.map_or(0, |s| s.1));
    let logits = cpu.head.logits(&mut tape, &cpu.store, &tokens, &offsets).unwrap();
    let targets: Vec<i64> = b.labels.iter().map(|&l| l as i64).collect();
    let task = ops::cross_entropy(&mut tape, &logits, &targets).unwrap();
    let align = alignment_loss(&mut tape, &hs, &os, &ht, &ot, c.align.pooling, c.align.distance).unwrap();
    let t1 = ops::scale(&mut tape, &task, c.task_weight).unwrap();
    let t2 = ops::scale(&mut tape, &align, c.align.weight).unwrap();
    let total = ops::add(&mut tape, &t2, &t1).unwrap();
    let losses = (task.value().f32s()[0], align.value().f32s()[0]);
    tape.backward(&total, &mut cpu.store).unwrap();
    losses
}

/// Norm-wise relative error and the largest element error relative to the largest value.
fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den, mut worst, mut top) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "a NaN or infinity: an element no kernel wrote, or an overflow");
        let e = (g as f64 - w as f64).abs();
        num += e * e;
        den += (w as f64) * (w as f64);
        worst = worst.max(e);
        top = top.max((w as f64).abs());
    }
    (num.sqrt() / den.sqrt().max(1e-30), worst / top.max(1e-30))
}

/// Compares every tensor of `got` (GPU) with the CPU's; prints and returns the worst errors.
fn compare(what: &str, got: &[(String, Vec<f32>)], want: &BTreeMap<String, Vec<f32>>, tol: f64) -> (f64, f64) {
    let names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), want.len(), "{what}: the GPU has {names:?}, the CPU {:?}", want.keys().collect::<Vec<_>>());
    let (mut worst_rel, mut worst_el, mut worst_name) = (0.0f64, 0.0f64, String::new());
    for (name, g) in got {
        let w = want.get(name).unwrap_or_else(|| panic!("{what}: the CPU has no `{name}`"));
        let (rel, el) = errors(g, w);
        if std::env::var_os("POLYADAPT_TEST_VERBOSE").is_some() {
            eprintln!("    {what} `{name}`: {rel:.2e} (element {el:.2e})");
        }
        assert!(rel <= tol, "{what} `{name}`: relative error {rel:.3e} > {tol:.0e}");
        if rel > worst_rel {
            worst_rel = rel;
            worst_name = name.clone();
        }
        worst_el = worst_el.max(el);
    }
    eprintln!("  {what}: {} tensors, worst norm-wise relative error {worst_rel:.2e} (`{worst_name}`), worst element {worst_el:.2e} of the tensor's largest", got.len());
    (worst_rel, worst_el)
}

/// The parameters after AdamW. Where the first moment is within the comparison's noise of zero
/// (|m| <= tol * max |m| of its tensor: for the first step, a gradient that f32 rounding leaves
/// without a sign), AdamW's step `lr * m / (sqrt(v) + eps)` has no determined direction on
/// either side: such elements are marked (for this and later steps) and held only to the size
/// of an AdamW step (at most 3 lr per step with these betas). Every other element is compared
/// norm-wise within `tol`.
fn compare_params(got: &[(String, Vec<f32>)], cpu: &Cpu, loose: &mut BTreeMap<String, Vec<bool>>, tol: f64, steps: usize) {
    let (values, m) = (cpu_tensors(cpu, Part::Value), cpu_tensors(cpu, Part::M));
    assert_eq!(got.len(), values.len(), "parameters: the GPU and the CPU have different tensors");
    let (mut worst, mut worst_name, mut marked, mut total) = (0.0f64, String::new(), 0usize, 0usize);
    for (name, g) in got {
        let (w, mm) = (&values[name], &m[name]);
        let top = mm.iter().fold(0.0f32, |a, &x| a.max(x.abs())) as f64;
        let mask = loose.entry(name.clone()).or_insert_with(|| vec![false; w.len()]);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 0..w.len() {
            assert!(g[i].is_finite(), "parameter `{name}` element {i} is {}", g[i]);
            mask[i] |= (mm[i].abs() as f64) <= tol * top;
            let e = (g[i] as f64 - w[i] as f64).abs();
            if mask[i] {
                let bound = 3.0 * LR as f64 * steps as f64 + tol * (w[i] as f64).abs();
                assert!(e <= bound, "parameter `{name}` element {i}: {} against {} (an AdamW step is at most {bound:.1e})", g[i], w[i]);
            } else {
                num += e * e;
                den += (w[i] as f64) * (w[i] as f64);
            }
        }
        marked += mask.iter().filter(|&&b| b).count();
        total += w.len();
        let rel = num.sqrt() / den.sqrt().max(1e-30);
        assert!(rel <= tol, "parameter `{name}`: relative error {rel:.3e} > {tol:.0e}");
        if rel > worst {
            worst = rel;
            worst_name = name.clone();
        }
    }
    eprintln!("  parameters after AdamW: worst norm-wise relative error {worst:.2e} (`{worst_name}`); {marked} of {total} elements with an undetermined step direction, each within an AdamW step");
}

fn cpu_tensors(cpu: &Cpu, part: Part) -> BTreeMap<String, Vec<f32>> {
    cpu.store
        .trainable_ids()
        .map(|id| {
            let name = cpu.store.name(id).to_string();
            let v = match part {
                Part::Value => cpu.store.value(id).to_f32_cow().into_owned(),
                Part::Grad => cpu.store.grad(id).expect("every trainable tensor has a gradient").f32s().to_vec(),
                Part::M => cpu.optim.moments(&name).expect("moments").0.to_vec(),
                Part::V => cpu.optim.moments(&name).expect("moments").1.to_vec(),
            };
            (name, v)
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn run_case(dev: &Device, c: &Case) {
    eprintln!("{} on {}:", c.name, dev.name());
    let mut cpu = cpu_setup(c);
    let tok = tokenizer();
    let cfg = GpuStepConfig {
        elem: c.elem,
        path: c.path,
        task_weight: c.task_weight,
        align: Some(c.align),
        clip_norm: CLIP,
        optim: GpuAdamW { lr: LR, beta1: BETAS.0, beta2: BETAS.1, eps: EPS, weight_decay: DECAY },
        poison: true,
        cublas: c.cublas,
    };
    let mut gpu = GpuStep::new(dev, &cpu.model, &cpu.store, &cpu.adaptation, &cpu.head, cfg).unwrap();
    assert_eq!(gpu.uses_cublas(), c.cublas && dev.is_gpu(), "cuBLAS asked for: {}, on {}", c.cublas, dev.name());
    compare("initial values", &gpu.read(Part::Value).unwrap(), &cpu_tensors(&cpu, Part::Value), 0.0);
    let mut loose = BTreeMap::new();
    for step in 0..c.steps {
        let b = batch(&tok, step);
        let t0 = Instant::now();
        let (task, align) = cpu_forward_backward(c, &mut cpu, &b, step);
        let cpu_s = t0.elapsed().as_secs_f64();
        let sb = StepBatch { task: &b.task, labels: &b.labels, align: Some((&b.source, &b.target)), dropout: dropout_seeds(c, step) };
        let t0 = Instant::now();
        let losses = gpu.forward_backward(&sb).unwrap();
        gpu.synchronize().unwrap();
        let gpu_s = t0.elapsed().as_secs_f64();
        let (et, ea) = (rel(losses.task as f64, task as f64), rel(losses.align.unwrap() as f64, align as f64));
        eprintln!(
            " step {}: task loss {} (cpu {task}, rel {et:.2e}), align loss {} (cpu {align}, rel {ea:.2e}); forward+backward {gpu_s:.1} s here, {cpu_s:.2} s on the CPU",
            step + 1,
            losses.task,
            losses.align.unwrap()
        );
        assert!(et <= c.tol_loss && ea <= c.tol_loss, "losses differ: task {et:.3e}, align {ea:.3e}");
        compare("gradients", &gpu.read(Part::Grad).unwrap(), &cpu_tensors(&cpu, Part::Grad), c.tol);
        let cpu_norm = clip_grad_norm(&mut cpu.store, CLIP);
        cpu.optim.step(&mut cpu.store, LR as f64).unwrap();
        let norm = gpu.update(LR).unwrap();
        eprintln!("  gradient norm {norm} (cpu {cpu_norm}, rel {:.2e})", rel(norm as f64, cpu_norm as f64));
        assert!(rel(norm as f64, cpu_norm as f64) <= c.tol_loss, "gradient norms {norm} and {cpu_norm}");
        compare_params(&gpu.read(Part::Value).unwrap(), &cpu, &mut loose, c.tol, step + 1);
        compare("first moments", &gpu.read(Part::M).unwrap(), &cpu_tensors(&cpu, Part::M), c.tol);
        compare("second moments", &gpu.read(Part::V).unwrap(), &cpu_tensors(&cpu, Part::V), 2.0 * c.tol);
        // The next step starts both sides from the same parameters (the device's, just checked):
        // AdamW's first step turns rounding-level gradient differences into differences of up to
        // 2 lr where a gradient has no determined sign (the marked elements), and those would
        // feed the next step's gradients (seen: 5e-4 in one LoRA matrix at step 2 on a stand-in
        // model). What the next step is checked for is its own arithmetic.
        if step + 1 < c.steps {
            set_cpu_values(&mut cpu, gpu.read(Part::Value).unwrap());
        }
    }
}

fn set_cpu_values(cpu: &mut Cpu, values: Vec<(String, Vec<f32>)>) {
    let ids: BTreeMap<String, _> = cpu.store.trainable_ids().map(|id| (cpu.store.name(id).to_string(), id)).collect();
    for (name, v) in values {
        let id = ids[&name];
        let shape = cpu.store.value(id).shape().to_vec();
        cpu.store.set_value(id, Tensor::new(v, &shape)).unwrap();
    }
}

fn lora(targets: &[&str], r: usize, dropout: f32, layers: Option<Vec<usize>>) -> LoraConfig {
    LoraConfig { r, alpha: 2.0 * r as f32, dropout, targets: targets.iter().map(|s| s.to_string()).collect(), layers, rslora: false }
}

/// Prefix (4 tokens, every layer) + LoRA on q and v with dropout, training-mode dropout
/// everywhere, the squared-L2 alignment of mean-pooled layer 8; two steps.
#[test]
fn f32_step_with_prefix_lora_dropout_and_alignment_matches_the_cpu() {
    let c = Case {
        name: "f32, prefix 4, LoRA q/v r 4, dropout, L2 alignment at layer 8",
        elem: Elem::F32,
        path: KernelPath::Auto,
        prefix: 4,
        prefix_layers: None,
        lora: lora(&["q", "v"], 4, 0.1, None),
        head_pooling: Pooling::First,
        align: AlignSpec { weight: 0.5, layer: Some(8), pooling: Pooling::Mean, distance: Distance::SqL2 },
        task_weight: 1.0,
        dropout: true,
        steps: 2,
        cublas: true,
        tol: 1e-4,
        tol_loss: 1e-4,
    };
    on_every_device(|dev| run_case(dev, &c));
}

/// No prefix; LoRA on every projection of layers 4 to 11 (the backward stops at layer 4); a
/// mean-pooled head; the cosine alignment of first tokens at the last layer; no dropout. Every
/// projection goes through the fused LoRA kernel (`cublas: false`; at rank 0 in the frozen
/// layers 0-3), the path a GPU takes without cuBLAS; the other cases take cuBLAS there.
#[test]
fn f32_step_with_lora_everywhere_and_no_prefix_matches_the_cpu() {
    let c = Case {
        name: "f32, no prefix, LoRA on all projections of layers 4..12 r 8, cosine alignment at the last layer",
        elem: Elem::F32,
        path: KernelPath::Auto,
        prefix: 0,
        prefix_layers: None,
        lora: lora(&["q", "k", "v", "o", "ffn_in", "ffn_out"], 8, 0.0, Some((4..12).collect())),
        head_pooling: Pooling::Mean,
        align: AlignSpec { weight: 2.0, layer: None, pooling: Pooling::First, distance: Distance::Cosine },
        task_weight: 0.7,
        dropout: false,
        steps: 1,
        cublas: false,
        tol: 1e-4,
        tol_loss: 1e-4,
    };
    on_every_device(|dev| run_case(dev, &c));
}

/// bf16 activations and frozen weights on the device against the CPU with bf16 weights and
/// products: a prefix on layers 1, 6 and 11 + LoRA q/v, L2 alignment at layer 6; the tensor-core kernels (attention and
/// the fused LoRA layers; on the shim with the matrix instruction emulated).
#[test]
fn bf16_step_matches_the_cpu_within_bf16_rounding() {
    let c = Case {
        name: "bf16 (tensor cores), prefix 4 on layers 1, 6, 11, LoRA q/v r 4, L2 alignment at layer 6",
        elem: Elem::BF16,
        path: KernelPath::TensorCores,
        prefix: 4,
        prefix_layers: Some(vec![1, 6, 11]),
        lora: lora(&["q", "v"], 4, 0.0, None),
        head_pooling: Pooling::First,
        align: AlignSpec { weight: 0.5, layer: Some(6), pooling: Pooling::Mean, distance: Distance::SqL2 },
        task_weight: 1.0,
        dropout: false,
        steps: 1,
        cublas: true,
        tol: 1e-1,
        tol_loss: 1e-2,
    };
    on_every_device(|dev| run_case(dev, &c));
}

/// What has no GPU path is refused, naming it, before anything is copied or run (the tiny
/// XLM-R of the fixtures: only the checks run).
#[test]
fn unsupported_methods_are_refused_by_name() {
    let dev = Device::shim();
    let dir = fixtures_dir().join("tiny-xlmr");
    let refused = |methods: &str| -> String {
        let mut store = ParamStore::new();
        let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
        let methods: MethodsConfig = serde_json::from_str(methods).unwrap();
        let adaptation = Adaptation::build(&mut store, &model.config, &methods, SEED, None).unwrap();
        let head = ClassifierHead::new(&mut store, model.config.hidden_size, 2, Pooling::First, SEED).unwrap();
        match GpuStep::new(&dev, &model, &store, &adaptation, &head, GpuStepConfig::default()) {
            Ok(_) => panic!("{methods:?} was accepted"),
            Err(e) => e.chain(),
        }
    };
    for (methods, says) in [
        (r#"{"prompt": {"virtual_tokens": 3}}"#, "soft prompt"),
        (r#"{"prefix": {"virtual_tokens": 3, "projection": 16}}"#, "reparameterisation MLP"),
        (r#"{"adapter": {"size": 4}}"#, "bottleneck adapter"),
        (r#"{"lora": {"r": 65, "alpha": 8}}"#, "rank 65"),
        (r#"{"lora": {"r": 4, "alpha": 8}, "fine_tune": {"freeze_lowest": 1}}"#, "`encoder.layer.1."),
    ] {
        let e = refused(methods);
        assert!(e.contains(says), "{methods}: {e}");
    }
}

/// Bad step inputs are errors before any pass runs.
#[test]
fn bad_step_inputs_are_errors() {
    big_stack(bad_step_inputs);
}

fn bad_step_inputs() {
    let c = Case {
        name: "inputs",
        elem: Elem::F32,
        path: KernelPath::Auto,
        prefix: 2,
        prefix_layers: None,
        lora: lora(&["q"], 2, 0.0, None),
        head_pooling: Pooling::First,
        align: AlignSpec { weight: 1.0, layer: Some(2), pooling: Pooling::Mean, distance: Distance::SqL2 },
        task_weight: 1.0,
        dropout: false,
        steps: 0,
        cublas: true,
        tol: 0.0,
        tol_loss: 0.0,
    };
    let cpu = cpu_setup(&c);
    let tok = tokenizer();
    let b = batch(&tok, 0);
    let dev = Device::shim();
    let cfg = GpuStepConfig { align: Some(c.align), ..Default::default() };
    let mut gpu = GpuStep::new(&dev, &cpu.model, &cpu.store, &cpu.adaptation, &cpu.head, cfg).unwrap();
    let step = |labels: &[usize], align: bool, gpu: &mut GpuStep| {
        let sb = StepBatch { task: &b.task, labels, align: align.then_some((&b.source, &b.target)), dropout: None };
        gpu.forward_backward(&sb).unwrap_err().chain()
    };
    let e = step(&b.labels[..2], true, &mut gpu);
    assert!(e.contains("2 labels for 3 sequences"), "{e}");
    let e = step(&[0, 1, 2], true, &mut gpu);
    assert!(e.contains("label 2 of sequence 2; the head has 2 classes"), "{e}");
    let e = step(&b.labels, false, &mut gpu);
    assert!(e.contains("alignment pairs"), "{e}");
    let cfg = GpuStepConfig { align: Some(AlignSpec { layer: Some(13), ..c.align }), ..Default::default() };
    let e = GpuStep::new(&dev, &cpu.model, &cpu.store, &cpu.adaptation, &cpu.head, cfg).err().unwrap().chain();
    assert!(e.contains("alignment layer 13"), "{e}");
}
