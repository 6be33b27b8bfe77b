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
    /// Gate projection of a gated feed-forward (LLaMA's `gate_proj`; BERT has none). Not in
    /// [`Proj::ALL`], the encoder's projections, until the adaptation configs name it.
    FfnGate,
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
            Proj::FfnGate => "ffn_gate",
        }
    }
}

/// Where a bottleneck adapter sits: after the attention block or after the feed-forward block,
/// on the sublayer's output before its residual connection and LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    Attention,
    Ffn,
}

/// What a forward pass tells its hooks before it starts (see [`LayerHooks::begin_forward`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassInfo {
    /// Dropout on (training) or off (evaluation).
    pub training: bool,
    /// Seed of this pass's dropout masks; a module draws from streams of its own.
    pub dropout_seed: u64,
}

pub trait LayerHooks {
    /// Called by the architecture once at the start of every forward pass, before any other
    /// hook, on that pass's tape. A module computes here what all layers share (prefix tuning's
    /// reparameterisation MLP runs once per pass, not once per layer) and learns whether
    /// dropout is on and under which seed (LoRA's dropout).
    fn begin_forward(&self, _tape: &mut Tape, _store: &ParamStore, _pass: &PassInfo) -> Result<()> {
        Ok(())
    }

    /// Added to the output of projection `proj` of layer `layer`, whose input is `x`
    /// (LoRA: `s * x A^T B^T`). `None` adds nothing.
    fn linear_delta(&self, _tape: &mut Tape, _store: &ParamStore, _layer: usize, _proj: Proj, _x: &Var) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Prefix keys and values for the attention of layer `layer`, each `[P, kv_heads * head_dim]`.
    fn prefix(&self, _tape: &mut Tape, _store: &ParamStore, _layer: usize) -> Result<Option<(Var, Var)>> {
        Ok(None)
    }

    /// Virtual-token embeddings `[k, hidden]` put before every sequence's token embeddings
    /// (prompt tuning). They take positions `0..k` and token type 0; the real tokens follow.
    fn prompt(&self, _tape: &mut Tape, _store: &ParamStore) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Added to the output `h` of a sublayer of layer `layer` before its residual connection
    /// (a bottleneck adapter returns `up(act(down(h)))`).
    fn adapter(&self, _tape: &mut Tape, _store: &ParamStore, _layer: usize, _site: Site, _h: &Var) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Added to the position ids of every token. peft's prefix tuning on BERT shifts them by
    /// the number of virtual tokens (transformers counts the prefix as past positions); a
    /// prefix module reproducing peft returns that number here.
    fn position_shift(&self) -> usize {
        0
    }
}

/// The plain backbone.
pub struct NoHooks;

impl LayerHooks for NoHooks {}

/// Several adaptation modules at once (e.g. LoRA + prefix): linear and adapter deltas are
/// summed, position shifts added; at most one module may give a prefix and one a prompt.
pub struct HookSet(pub Vec<Box<dyn LayerHooks>>);

impl LayerHooks for HookSet {
    fn begin_forward(&self, tape: &mut Tape, store: &ParamStore, pass: &PassInfo) -> Result<()> {
        self.0.iter().try_for_each(|h| h.begin_forward(tape, store, pass))
    }

    fn linear_delta(&self, tape: &mut Tape, store: &ParamStore, layer: usize, proj: Proj, x: &Var) -> Result<Option<Var>> {
        let mut acc: Option<Var> = None;
        for h in &self.0 {
            if let Some(d) = h.linear_delta(tape, store, layer, proj, x)? {
                acc = Some(match acc {
                    Some(a) => crate::engine::ops::add(tape, &a, &d)?,
                    None => d,
                });
            }
        }
        Ok(acc)
    }

    fn prefix(&self, tape: &mut Tape, store: &ParamStore, layer: usize) -> Result<Option<(Var, Var)>> {
        let mut found = None;
        for h in &self.0 {
            if let Some(p) = h.prefix(tape, store, layer)? {
                if found.is_some() {
                    return Err(crate::Error::Usage("two adaptation modules both give prefix keys".into()));
                }
                found = Some(p);
            }
        }
        Ok(found)
    }

    fn prompt(&self, tape: &mut Tape, store: &ParamStore) -> Result<Option<Var>> {
        let mut found = None;
        for h in &self.0 {
            if let Some(p) = h.prompt(tape, store)? {
                if found.is_some() {
                    return Err(crate::Error::Usage("two adaptation modules both give a soft prompt".into()));
                }
                found = Some(p);
            }
        }
        Ok(found)
    }

    fn adapter(&self, tape: &mut Tape, store: &ParamStore, layer: usize, site: Site, x: &Var) -> Result<Option<Var>> {
        let mut acc: Option<Var> = None;
        for h in &self.0 {
            if let Some(d) = h.adapter(tape, store, layer, site, x)? {
                acc = Some(match acc {
                    Some(a) => crate::engine::ops::add(tape, &a, &d)?,
                    None => d,
                });
            }
        }
        Ok(acc)
    }

    fn position_shift(&self) -> usize {
        self.0.iter().map(|h| h.position_shift()).sum()
    }
}
