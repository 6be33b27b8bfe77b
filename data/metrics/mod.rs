//! Evaluation metrics, one benchmark's definition per module.

pub mod bleu;
pub mod mlqa;
pub mod rouge;
pub mod squad;
