//! The CUDA backend: hand-written kernels (`kernels/*.cu`) launched through cudarc, and the
//! host shim that runs the same kernels on the CPU.
//!
//! - [`Device`]: a CUDA GPU (driver loaded at run time; a machine without one gets a one-line
//!   explanation, never a panic) or, with the `cuda-shim` feature, the host shim.
//! - [`Buffer`]: a typed allocation on a device, with upload, download and poisoning.
//! - [`modules`]: the kernels embedded at build time (fat binaries from nvcc, and the sources
//!   for NVRTC) and the compile report.
//! - [`bench`]: the kernel benchmarks behind `engine-train bench` and benches/cuda_kernels.rs.
//! - [`kernels`]: one launcher per kernel file. Launchers choose the grid and block, check the
//!   sizes, and run the same kernel on either device; the launch contract of each kernel is
//!   written once there and in the head comment of its `.cu` file.
//!
//! Device tensors are plain buffers plus the sizes each launcher takes: the operations of
//! `engine/ops` (and the autograd tape) are CPU-only; a training step on the device is written
//! out explicitly, forward and backward, over these launchers (models/bert_cuda).

pub mod bench;
pub mod blas;
pub mod buffer;
pub mod device;
mod gpu;
pub mod kernels;
pub mod lora_blas;
pub mod modules;
#[cfg(feature = "cuda-shim")]
mod shim;

pub use buffer::{Buffer, Elem};
pub use device::{gpu_or_cpu, Device, KArg, Launch};
