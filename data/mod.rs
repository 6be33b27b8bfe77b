//! Data: text input and tokenisation.

pub mod pairs;
pub mod text;
pub mod tokenize;

pub use tokenize::{EncodedBatch, TextTokenizer};
