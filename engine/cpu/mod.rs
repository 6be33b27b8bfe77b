//! The CPU backend: plain kernels on slices, forward and backward side by side.
//!
//! Row-wise kernels are generic over [`Real`](crate::engine::real::Real) and run in f64 in the
//! gradient tests. Work is split over rows with rayon; reductions across rows (parameter
//! gradients) are summed over fixed-size row chunks in a fixed order, so results do not depend
//! on the number of threads.

pub mod activation;
pub mod attention;
pub mod cross_entropy;
pub mod distance;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod gemv;
pub mod norm;
pub mod pooling;
pub mod reduce;
pub mod rope;
pub mod rows;
pub mod segment_ce;
pub mod softmax;
pub mod vmath;
