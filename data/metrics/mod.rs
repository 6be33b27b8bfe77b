//! Evaluation metrics, one benchmark's definition per module.

pub mod mlqa;
pub mod squad;
