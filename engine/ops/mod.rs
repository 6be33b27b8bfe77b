//! Differentiable operations: each computes its forward value with the CPU kernels and, when
//! an input requires a gradient, records its backward half on the tape.

pub mod linear;
pub mod matmul;

pub use linear::linear;
pub use matmul::matmul;
pub mod attention;
pub use attention::{attention, AttentionSpec};
