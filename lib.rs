//! Polyadapt: adapt pretrained transformers to low-resource languages and tasks by training a
//! few parameters (soft prompts, prefix keys/values, LoRA, adapters) with a cross-lingual
//! alignment loss.
//!
//! The crate is one library with three parts, each a top-level folder (see ARCHITECTURE.md):
//! - [`engine`]: tensors, the CPU backend (kernels and matrix products), the autograd tape
//!   restricted to trainable parameters;
//! - [`models`]: configurations, weight loading (safetensors, the E5S1 importer), model
//!   fetching, and the architectures themselves;
//! - [`data`]: tokenisation and text input.

pub mod data;
pub mod engine;
pub mod models;

pub use engine::error::{Error, Result, ResultExt};
