//! Data: text input and tokenisation; extractive-QA data (SQuAD format), sentence pairs (TSV),
//! JSON Lines forms of both and of generation examples, Super-NaturalInstructions tasks and
//! instruction prompts ([`instruct`]), and
//! [`formats`], which picks the reader for a path; QA windows and answer post-processing;
//! few-shot sampling; evaluation metrics and the part of WordNet that METEOR reads.

pub mod formats;
pub mod instruct;
pub mod jsonl;
pub mod metrics;
pub mod niv2;
pub mod pairs;
pub mod pseudo;
pub mod qa_postprocess;
pub mod qa_windows;
pub mod sampling;
pub mod squad;
pub mod text;
pub mod tokenize;
pub mod wordnet;

pub use tokenize::{EncodedBatch, TextTokenizer};
