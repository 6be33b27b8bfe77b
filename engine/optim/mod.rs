//! Optimisation: AdamW, learning-rate schedules, gradient clipping; what torch.optim.AdamW,
//! transformers' schedules and torch.nn.utils.clip_grad_norm_ compute, to the bit (up to
//! torch's square roots, which are not correctly rounded; see [`update`] and [`clip`]).
//!
//! - [`adamw`]: the optimiser over a [`crate::engine::autograd::ParamStore`], state by
//!   parameter name; [`update`]: its element-wise kernel with torch's f32 roundings;
//!   [`state`]: the state as named tensors for checkpoints.
//! - [`schedule`]: linear warm-up, then constant, linear or cosine decay.
//! - [`clip`]: the global gradient norm and clipping by it.
//!
//! A training step, with `n` micro-batches accumulated (each loss divided by `n` before its
//! backward pass, so the buffers hold the mean gradient):
//!
//! ```text
//! for each micro-batch: tape.backward(&(loss / n), &mut store)?;
//! let norm = clip_grad_norm(&mut store, max_norm);
//! if norm.is_finite() { opt.step(&mut store, schedule.lr_at(cfg.lr, opt.updates()))?; }
//! store.zero_grad();
//! ```
//!
//! Every result is independent of the thread count: updates are element-wise, and the norm is
//! summed over fixed chunks in a fixed order.

pub mod adamw;
pub mod clip;
pub mod schedule;
pub mod state;
pub mod update;

pub use adamw::{is_bias_or_norm, AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::{Decay, Schedule};
