//! Data: text input and tokenisation; extractive-QA data (SQuAD format), windows and answer
//! post-processing; few-shot sampling; evaluation metrics.


pub mod metrics;
pub mod pairs;
pub mod qa_postprocess;
pub mod qa_windows;
pub mod sampling;
pub mod squad;
pub mod text;
pub mod tokenize;

pub use tokenize::{EncodedBatch, TextTokenizer};
