//! Evaluation metrics, one benchmark's definition per module.

pub mod bleu;
pub mod generation;
pub mod meteor;
pub mod mlqa;
pub mod porter;
pub mod rouge;
pub mod squad;
