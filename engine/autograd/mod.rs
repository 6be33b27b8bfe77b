//! Parameters and the tape (see [`tape`] for the rules of what is recorded and kept).

pub mod param;
pub mod tape;

pub use param::{Param, ParamId, ParamStore};
pub use tape::{Backward, Saved, Tape, TapeStats, Var};
