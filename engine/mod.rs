//! The engine: tensors, the CPU backend, and the autograd tape.
//!
//! - [`tensor`]: contiguous row-major tensors with f32 compute and f32/bf16/f16 storage, owned or
//!   memory-mapped.
//! - [`cpu`]: the plain CPU kernels (forward and backward of every operation) and the matrix
//!   product; generic over [`real::Real`] so the same code runs in f64 for gradient checks.
//! - [`autograd`]: parameters (trainable or frozen) and the tape that records an operation only
//!   when a trainable parameter is upstream of it.
//! - [`ops`]: the differentiable operations the models are built from.
//! - `cuda` (feature `cuda`): the CUDA backend, hand-written kernels launched through cudarc,
//!   and (feature `cuda-shim`) the host shim that runs the same kernels on the CPU.
//! - [`optim`]: AdamW, learning-rate schedules and gradient clipping, matching torch and
//!   transformers bit for bit.

pub mod autograd;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod memory;
pub mod ops;
pub mod optim;
pub mod real;
pub mod rng;
pub mod tensor;
