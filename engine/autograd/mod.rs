//! Parameters and the tape.
