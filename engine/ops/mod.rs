//! Differentiable operations: each computes its forward value with the CPU kernels and, when
//! an input requires a gradient, records its backward half on the tape.

pub mod activation;
pub mod attention;
pub mod cross_entropy;
pub mod distance;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod pooling;
pub mod rope;
pub mod rows;
pub mod segment_ce;
pub mod softmax;

pub use activation::{gelu, relu, silu, swiglu, tanh};
pub use cross_entropy::{cross_entropy, IGNORE_INDEX};
pub use distance::{cosine_distance, sq_l2_distance, COSINE_EPS};
pub use dropout::{dropout, DropoutRng};
pub use elementwise::{add, bias_add, mean_all, mul, scale, sub, sum_all};
pub use embedding::embedding;
pub use linear::linear;
pub use matmul::matmul;
pub use norm::{layer_norm, rms_norm};
pub use pooling::mean_pool;
pub use rope::rope;
pub use rows::{gather_rows, reshape, scatter_rows};
pub use segment_ce::segment_cross_entropy;
pub use softmax::softmax;
pub use attention::{attention, AttentionSpec, AttnDropout, SeqLayout};
pub use crate::engine::cpu::activation::GeluKind;
