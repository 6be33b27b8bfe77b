//! Differentiable operations.
