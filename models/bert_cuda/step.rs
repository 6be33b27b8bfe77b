//! One training step on the device: the task pass with its classification head, the two
//! alignment passes, their backward passes, the global-norm clip and AdamW, as the CPU trainer
//! (cli/train/trainer.rs) does it for a sentence-pair task with an alignment loss.

use std::path::Path;

use crate::data::tokenize::EncodedBatch;
use crate::engine::autograd::ParamStore;
use crate::engine::cuda::kernels::adamw::{adamw_step, AdamSlot, AdamW};
use crate::engine::cuda::kernels::align::{align_pairs, Side};
use crate::engine::cuda::kernels::cross_entropy::cross_entropy_fused;
use crate::engine::cuda::kernels::dense_grad::dense_grad;
use crate::engine::cuda::kernels::lora::{lora_backward, lora_forward, LoraDims, LoraGrads, LoraLayer};
use crate::engine::cuda::kernels::pool::{pool_backward, pool_forward, Pooling as PoolKind};
use crate::engine::cuda::kernels::reduce::sum_squares;
use crate::engine::cuda::kernels::KernelPath;
use crate::engine::cuda::blas::Blas;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};
use crate::engine::ops::COSINE_EPS;
use crate::engine::optim::clip::clip_coefficient;
use crate::models::bert::{BertModel, LoadOptions};
use crate::models::heads::{ClassifierHead, Pooling};
use crate::models::losses::Distance;
use crate::models::peft::{Adaptation, Arch, MethodsConfig};

use super::backward::Backward;
use super::forward::{fresh, Forward, Pass};
use super::params::{Part, Trainables};
use super::weights::FrozenBert;

/// The alignment loss of a step: `weight * mean_pairs d(pool(h_s), pool(h_t))` on the hidden
/// states of `layer` (the last when `None`), as models/losses.rs `alignment_loss`.
#[derive(Clone, Copy, Debug)]
pub struct AlignSpec {
    pub weight: f32,
    pub layer: Option<usize>,
    pub pooling: Pooling,
    pub distance: Distance,
}

/// What a step computes and how.
#[derive(Clone, Copy, Debug)]
pub struct GpuStepConfig {
    /// The activations' and frozen weights' type: F32, BF16 or F16 (trainable parameters,
    /// their gradients and moments are f32 in every case).
    pub elem: Elem,
    /// The kernels: `Auto` takes the tensor cores for bf16/f16 on a GPU of sm_80+.
    pub path: KernelPath,
    /// The task loss's weight (lambda_j).
    pub task_weight: f32,
    pub align: Option<AlignSpec>,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip_norm: f32,
    /// AdamW's hyperparameters; `lr` is given to each update.
    pub optim: AdamW,
    /// Testing: every activation buffer is filled with NaN before the kernel that writes it,
    /// so that an element no kernel wrote shows up in the losses and gradients.
    pub poison: bool,
    /// The projections on cuBLAS where the device is a GPU and libcublas loads (else, and when
    /// false, the fused LoRA kernel, at rank 0 where a projection has no LoRA): cuBLAS runs
    /// them an order of magnitude faster (BENCHMARKS.md, "CUDA kernels ... against PyTorch").
    pub cublas: bool,
}

impl Default for GpuStepConfig {
    fn default() -> Self {
        GpuStepConfig { elem: Elem::F32, path: KernelPath::Auto, task_weight: 1.0, align: None, clip_norm: 1.0, optim: AdamW::default(), poison: false, cublas: true }
    }
}

/// The inputs of one step.
pub struct StepBatch<'a> {
    /// The sentence pairs of the task, and their labels.
    pub task: &'a EncodedBatch,
    pub labels: &'a [usize],
    /// Parallel source and target sequences for the alignment loss.
    pub align: Option<(&'a EncodedBatch, &'a EncodedBatch)>,
    /// Dropout seeds of the task pass and of the alignment passes (the trainer's
    /// `dropout_seed`s); `None`: no dropout.
    pub dropout: Option<(u64, u64)>,
}

/// The losses of a forward pass (unweighted) and their weighted sum.
#[derive(Clone, Copy, Debug)]
pub struct Losses {
    pub task: f32,
    pub align: Option<f32>,
    pub total: f64,
}

/// What [`GpuStep::step`] reports.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    pub losses: Losses,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

pub struct GpuStep {
    dev: Device,
    model: FrozenBert,
    params: Trainables,
    /// A zero-length f32 buffer: the LoRA operands of a projection without LoRA.
    empty: Buffer,
    /// cuBLAS for the frozen projections (`cublas` in the config, on a GPU).
    blas: Option<Blas>,
    cfg: GpuStepConfig,
    updates: u64,
}

impl GpuStep {
    /// Copies the frozen `model` and the trainable parameters of `adaptation` and `head` from
    /// `store` to `dev`. Refuses (with what) methods and settings that have no GPU path: soft
    /// prompts, bottleneck adapters, prefix tuning through its MLP, a trainable backbone, the
    /// ReLU activation, LoRA ranks above 64.
    pub fn new(dev: &Device, model: &BertModel, store: &ParamStore, adaptation: &Adaptation, head: &ClassifierHead, cfg: GpuStepConfig) -> Result<GpuStep> {
        if !cfg.elem.is_float() {
            return Err(Error::Usage(format!("GPU training step: activations of type {:?}", cfg.elem)));
        }
        let c = &model.config;
        if let Some(l) = cfg.align.and_then(|a| a.layer).filter(|&l| l > c.num_hidden_layers) {
            return Err(Error::Usage(format!("GPU training step: alignment layer {l}; the model has layers 0..={}", c.num_hidden_layers)));
        }
        // The trainable side first: it refuses unsupported methods before the backbone's copy.
        let params = Trainables::upload(dev, &Arch::from(c), store, adaptation, head)?;
        let frozen = FrozenBert::upload(dev, c, store, cfg.elem)?;
        let blas = match cfg.cublas && dev.is_gpu() {
            true => match Blas::new(dev) {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("GPU training step: the fused kernels do the frozen projections ({})", e.chain());
                    None
                }
            },
            false => None,
        };
        Ok(GpuStep { dev: dev.clone(), model: frozen, params, empty: dev.alloc(Elem::F32, 0)?, blas, cfg, updates: 0 })
    }

    /// Loads `model_dir`, builds the methods of `methods` and a classifier head of `classes` as
    /// the CPU trainer does (same seed, same initial values), and copies them to `dev`.
    pub fn load(dev: &Device, model_dir: &Path, methods: &MethodsConfig, classes: usize, pooling: Pooling, seed: u64, cfg: GpuStepConfig) -> Result<GpuStep> {
        let mut store = ParamStore::new();
        let model = BertModel::load(model_dir, &mut store, LoadOptions::default())?;
        let adaptation = Adaptation::build(&mut store, &model.config, methods, seed, None)?;
        let head = ClassifierHead::new(&mut store, model.config.hidden_size, classes, pooling, seed)?;
        GpuStep::new(dev, &model, &store, &adaptation, &head, cfg)
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Whether the projections run on cuBLAS (asked for, on a GPU where libcublas loaded).
    pub fn uses_cublas(&self) -> bool {
        self.blas.is_some()
    }

    /// Updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The lowest layer the backward passes reach (the number of layers when nothing below the
    /// head is trainable).
    fn keep_from(&self) -> usize {
        self.params.lowest_layer().unwrap_or(self.model.config.num_hidden_layers)
    }

    fn forward(&self) -> Forward<'_> {
        Forward { dev: &self.dev, model: &self.model, params: &self.params, empty: &self.empty, blas: self.blas.as_ref(), path: self.cfg.path, poison: self.cfg.poison }
    }

    fn backward(&mut self, pass: &Pass, top: usize, dout: Buffer) -> Result<()> {
        let Some(stop) = self.params.lowest_layer() else { return Ok(()) };
        if top <= stop {
            return Ok(()); // no trainable parameter below the loss
        }
        let mut b = Backward {
            dev: &self.dev,
            model: &self.model,
            params: &mut self.params,
            empty: &self.empty,
            blas: self.blas.as_ref(),
            path: self.cfg.path,
            poison: self.cfg.poison,
        };
        b.run(pass, top, dout, stop)
    }

    /// Zeroes the gradients, runs the forward passes, the losses and the backward passes: the
    /// gradients of every trainable parameter are then in place (see [`GpuStep::read`]).
    pub fn forward_backward(&mut self, batch: &StepBatch<'_>) -> Result<Losses> {
        let layers = self.model.config.num_hidden_layers;
        if batch.align.is_some() != self.cfg.align.is_some() {
            return Err(Error::Usage("GPU training step: alignment pairs are given exactly when the config has an alignment loss".into()));
        }
        let (b, c) = (batch.task.batch, self.params.head.classes);
        if batch.labels.len() != b {
            return Err(Error::Usage(format!("GPU training step: {} labels for {b} sequences", batch.labels.len())));
        }
        if let Some((i, &l)) = batch.labels.iter().enumerate().find(|&(_, &l)| l >= c) {
            return Err(Error::Usage(format!("GPU training step: label {l} of sequence {i}; the head has {c} classes")));
        }
        self.params.zero_grads(&self.dev)?;
        if let Some(p) = &mut self.params.prefix {
            p.refresh(&self.dev, self.model.elem)?;
        }
        let (task_seed, align_seed) = batch.dropout.map_or((None, None), |(t, a)| (Some(t), Some(a)));
        let pass = self.forward().run(batch.task, layers, task_seed, self.keep_from())?;
        let (task, dtop) = self.head(&pass, batch.labels)?;
        self.backward(&pass, layers, dtop)?;
        drop(pass);
        let mut total = self.cfg.task_weight as f64 * task as f64;
        let mut align = None;
        if let (Some(spec), Some((src, tgt))) = (self.cfg.align, batch.align) {
            let top = spec.layer.unwrap_or(layers);
            let ps = self.forward().run(src, top, align_seed, self.keep_from())?;
            let pt = self.forward().run(tgt, top, align_seed, self.keep_from())?;
            let (loss, dhs, dht) = self.alignment(&spec, &ps, &pt, top)?;
            self.backward(&ps, top, dhs)?;
            drop(ps);
            self.backward(&pt, top, dht)?;
            total += spec.weight as f64 * loss as f64;
            align = Some(loss);
        }
        Ok(Losses { task, align, total })
    }

    /// The head on the last hidden state: pooled sequences, logits, cross-entropy; the head's
    /// gradients, and the gradient of the hidden state (returned with the mean loss).
    fn head(&mut self, pass: &Pass, labels: &[usize]) -> Result<(f32, Buffer)> {
        let (dev, h) = (&self.dev, self.model.config.hidden_size);
        let b = pass.offsets.len() - 1;
        let head = &mut self.params.head;
        let c = head.classes;
        let how = match head.pooling {
            Pooling::First => PoolKind::First,
            Pooling::Mean => PoolKind::Mean,
        };
        let top = pass.hidden.last().expect("the embeddings at least");
        let mut pooled = fresh(dev, Elem::F32, b * h, self.cfg.poison)?;
        pool_forward(dev, top, &pass.offsets, h, how, &mut pooled)?;
        // The head is f32 whatever the backbone's type: the scalar kernels (Auto picks them).
        let lin = LoraLayer { w: &head.w.value, bias: Some(&head.b.value), a: &self.empty, b: &self.empty, scale: 0.0, dropout: None };
        let dims = LoraDims { tokens: b, din: h, dout: c, r: 0 };
        let mut logits = fresh(dev, Elem::F32, b * c, self.cfg.poison)?;
        lora_forward(dev, &lin, &dims, &pooled, &mut logits, None, KernelPath::Auto)?;
        let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let mut dlogits = fresh(dev, Elem::F32, b * c, self.cfg.poison)?;
        let loss = cross_entropy_fused(dev, &logits, &targets, c, self.cfg.task_weight, Some(&mut dlogits))?;
        let mut dpooled = fresh(dev, Elem::F32, b * h, self.cfg.poison)?;
        let grads = LoraGrads { dx: Some(&mut dpooled), ..Default::default() };
        lora_backward(dev, &lin, &dims, &pooled, None, &dlogits, grads, KernelPath::Auto)?;
        dense_grad(dev, &pooled, &dlogits, b, h, c, Some(&mut head.w.grad), Some(&mut head.b.grad))?;
        let mut dtop = fresh(dev, self.model.elem, top.len(), self.cfg.poison)?;
        pool_backward(dev, &dpooled, &pass.offsets, h, how, &mut dtop)?;
        Ok((loss, dtop))
    }

    /// The alignment loss of the pooled hidden states `hidden[top]` of the two passes (pair i is
    /// sequence i of each), and its gradients with respect to them.
    fn alignment(&self, spec: &AlignSpec, ps: &Pass, pt: &Pass, top: usize) -> Result<(f32, Buffer, Buffer)> {
        let (dev, h) = (&self.dev, self.model.config.hidden_size);
        let b = ps.offsets.len() - 1;
        if pt.offsets.len() - 1 != b {
            return Err(Error::shape("alignment_loss", format!("{b} source and {} target sequences", pt.offsets.len() - 1)));
        }
        // First-token pooling is the masked mean over a mask that keeps each first row.
        let first_rows = |p: &Pass| -> Result<Option<Vec<f32>>> {
            if spec.pooling == Pooling::Mean {
                return Ok(None);
            }
            let mut mask = vec![0.0f32; p.rows];
            for (s, w) in p.offsets.windows(2).enumerate() {
                if w[0] == w[1] {
                    return Err(Error::shape("pool", format!("sequence {s} is empty: it has no first token")));
                }
                mask[w[0]] = 1.0;
            }
            Ok(Some(mask))
        };
        let (ms, mt) = (first_rows(ps)?, first_rows(pt)?);
        let off = |p: &Pass| p.offsets.iter().map(|&o| o as i32).collect::<Vec<i32>>();
        let (os, ot) = (off(ps), off(pt));
        let w = spec.weight / b.max(1) as f32;
        let (w_l2, w_cos) = match spec.distance {
            Distance::SqL2 => (w, 0.0),
            Distance::Cosine => (0.0, w),
        };
        let (hs, ht) = (&ps.hidden[top], &pt.hidden[top]);
        let mut dhs = fresh(dev, self.model.elem, hs.len(), self.cfg.poison)?;
        let mut dht = fresh(dev, self.model.elem, ht.len(), self.cfg.poison)?;
        let s = Side { hidden: hs, offsets: &os, mask: ms.as_deref() };
        let t = Side { hidden: ht, offsets: &ot, mask: mt.as_deref() };
        let d = align_pairs(dev, &s, &t, h, w_l2, w_cos, COSINE_EPS, Some(&mut dhs), Some(&mut dht))?;
        let per_pair = match spec.distance {
            Distance::SqL2 => &d.l2,
            Distance::Cosine => &d.cos,
        };
        let mean = per_pair.iter().map(|&v| v as f64).sum::<f64>() / b.max(1) as f64;
        Ok((mean as f32, dhs, dht))
    }

    /// Clips the gradients' global norm (as engine/optim/clip.rs, through AdamW's gradient
    /// scale) and applies AdamW at learning rate `lr`. Returns the norm before clipping; a
    /// norm that is not finite stops before the update, as the CPU trainer does.
    pub fn update(&mut self, lr: f32) -> Result<f32> {
        let mut slots = self.params.slots_mut();
        let grads: Vec<&Buffer> = slots.iter().map(|s| &s.grad).collect();
        let norm = sum_squares(&self.dev, &grads)?.sqrt() as f32;
        if !norm.is_finite() {
            return Err(Error::Usage(format!("GPU training step {}: the gradient norm is {norm}; stopping before the update", self.updates + 1)));
        }
        let scale = if self.cfg.clip_norm > 0.0 { clip_coefficient(norm, self.cfg.clip_norm) } else { 1.0 };
        self.updates += 1;
        let mut adam: Vec<AdamSlot<'_>> = slots.iter_mut().map(|s| AdamSlot { param: &mut s.value, grad: &s.grad, m: &mut s.m, v: &mut s.v }).collect();
        adamw_step(&self.dev, &AdamW { lr, ..self.cfg.optim }, self.updates, scale, &mut adam)?;
        Ok(norm)
    }

    /// [`GpuStep::forward_backward`] then [`GpuStep::update`].
    pub fn step(&mut self, batch: &StepBatch<'_>, lr: f32) -> Result<StepOutput> {
        let losses = self.forward_backward(batch)?;
        let grad_norm = self.update(lr)?;
        Ok(StepOutput { losses, grad_norm })
    }

    /// `part` of every trainable tensor, under the CPU store's names (the prefix as its table).
    pub fn read(&self, part: Part) -> Result<Vec<(String, Vec<f32>)>> {
        self.params.download(&self.dev, part)
    }

    /// Waits for the queued work (a benchmark's clock stops after this).
    pub fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }
}
