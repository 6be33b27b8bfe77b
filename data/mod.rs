//! Tokenisation and text input.
