//! Model configurations, weight loading and architectures.

pub mod bert;
#[cfg(feature = "cuda")]
pub mod bert_cuda;
pub mod config;
pub mod e5s;
pub mod fetch;
pub mod gguf;
pub mod heads;
pub mod hooks;
pub mod llama;
pub mod losses;
pub mod peft;
pub mod weights;
