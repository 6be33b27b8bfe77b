//! A training step of a BERT-family encoder on a CUDA device (or the host shim that runs the
//! same kernels on the CPU), llm.c style: explicit forward and backward passes over device
//! buffers, no autograd on the device.
//!
//! What it trains is what the CPU trainer trains for a sentence-pair task with an alignment
//! loss (cli/train/trainer.rs with `pair.rs` and `align.rs`): the frozen backbone with prefix
//! keys/values (models/peft/prefix.rs, the plain table) and LoRA on any projection
//! (models/peft/lora.rs), a classifier head on the pooled sequence (models/heads.rs), the
//! cross-entropy, the alignment loss between pooled hidden states of a layer
//! (models/losses.rs), the global-norm clip and AdamW. Started from the same values as the CPU
//! model (copied from its [`ParamStore`](crate::engine::autograd::ParamStore)), a step gives
//! the CPU's losses, gradients and updated parameters within f32 rounding (the test:
//! tests/cuda_train_step.rs).
//!
//! - `weights.rs`: the frozen backbone uploaded once (matrices in the activations' type).
//! - `params.rs`: the trainable tensors (f32 masters, gradients, moments) and reading them back
//!   under the CPU's names.
//! - `forward.rs`: one packed batch through the layers, keeping what the backward reads.
//! - `backward.rs`: the reverse, layer by layer, down to the lowest trainable layer.
//! - `step.rs`: the losses (head, alignment), the passes of a step, clipping and AdamW.
//!
//! ```text
//! let mut gpu = GpuStep::new(&dev, &model, &store, &adaptation, &head, GpuStepConfig::default())?;
//! let out = gpu.step(&StepBatch { task: &batch, labels: &labels, align: None, dropout: None }, 1e-3)?;
//! ```

mod backward;
mod forward;
mod params;
mod step;
mod weights;

pub use params::Part;
pub use step::{AlignSpec, GpuStep, GpuStepConfig, Losses, StepBatch, StepOutput};
