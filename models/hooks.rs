//! Where adaptation modules plug into a frozen backbone.
//!
//! An architecture calls these at fixed points of its forward pass; the PEFT modules (LoRA,
//! prefix keys/values, ...) implement them with their own trainable parameters. The backbone
//! knows nothing of the methods, and a method needs no change to the backbone.

use crate::engine::autograd::{ParamStore, Tape, Var};
use crate::engine::error::Result;

/// A linear projection inside a transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Query,
    Key,
    Value,
    /// Attention output.
    Output,
    /// Feed-forward, first (up) projection.
    FfnIn,
    /// Feed-forward, second (down) projection.
    FfnOut,
}

impl Proj {
    pub const ALL: [Proj; 6] = [Proj::Query, Proj::Key, Proj::Value, Proj::Output, Proj::FfnIn, Proj::FfnOut];

    /// The short name used in configs: q, k, v, o, ffn_in, ffn_out.
    pub fn short(self) -> &'static str {
        match self {
            Proj::Query => "q",
            Proj::Key => "k",
            Proj::Value => "v",
            Proj::Output => "o",
            Proj::FfnIn => "ffn_in",
            Proj::FfnOut => "ffn_out",
        }
    }
}

pub trait LayerHooks {
    /// Added to the output of projection `proj` of layer `layer`, whose input is `x`
    /// (LoRA: `s * x A^T B^T`). `None` adds nothing.
    fn linear_delta(&self, _tape: &mut Tape, _store: &ParamStore, _layer: usize, _proj: Proj, _x: &Var) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Prefix keys and values for the attention of layer `layer`, each `[P, kv_heads * head_dim]`.
    fn prefix(&self, _tape: &mut Tape, _store: &ParamStore, _layer: usize) -> Result<Option<(Var, Var)>> {
        Ok(None)
    }
}

/// The plain backbone.
pub struct NoHooks;

impl LayerHooks for NoHooks {}
