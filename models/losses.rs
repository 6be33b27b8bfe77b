//! The losses of cross-lingual adaptation besides the task losses:
//!
//! - the knowledge alignment loss `mean_pairs d(f(x_s), f(x_t))` between pooled hidden states
//!   of parallel (source, target) sequences, `d` the squared L2 distance or the cosine distance;
//! - the regulariser `||theta - theta_0||^2` over the adaptation parameters.
//!
//! Their weights (lambda, beta) are applied by the caller when it sums the losses.

use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::error::{Error, Result};
use crate::engine::ops;
use crate::engine::tensor::Tensor;
use crate::models::heads::{pool, Pooling};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distance {
    /// `||a - b||^2`.
    SqL2,
    /// `1 - cos(a, b)`.
    Cosine,
}

impl Distance {
    pub fn parse(s: &str) -> Option<Distance> {
        match s {
            "l2" | "sq_l2" | "squared_l2" => Some(Distance::SqL2),
            "cosine" | "cos" => Some(Distance::Cosine),
            _ => None,
        }
    }
}

/// Mean over pairs of the distance between the pooled source and target sequences. `source`
/// and `target` are packed hidden states `[tokens, hidden]` of the same number of sequences,
/// pair `i` being sequence `i` of each.
pub fn alignment_loss(
    tape: &mut Tape,
    source: &Var,
    source_offsets: &[usize],
    target: &Var,
    target_offsets: &[usize],
    pooling: Pooling,
    distance: Distance,
) -> Result<Var> {
    if source_offsets.len() != target_offsets.len() {
        return Err(Error::shape(
            "alignment_loss",
            format!("{} source and {} target sequences", source_offsets.len() - 1, target_offsets.len() - 1),
        ));
    }
    let fs = pool(tape, source, source_offsets, pooling)?;
    let ft = pool(tape, target, target_offsets, pooling)?;
    let d = match distance {
        Distance::SqL2 => ops::sq_l2_distance(tape, &fs, &ft)?,
        Distance::Cosine => ops::cosine_distance(tape, &fs, &ft, ops::COSINE_EPS)?,
    };
    ops::mean_all(tape, &d)
}

/// `sum_p ||theta_p - theta_p(0)||^2` over a set of parameters, their starting values taken
/// when it is made.
pub struct L2ToInit {
    start: Vec<(ParamId, Tensor)>,
}

impl L2ToInit {
    pub fn new(store: &ParamStore, params: &[ParamId]) -> L2ToInit {
        L2ToInit { start: params.iter().map(|&id| (id, store.value(id).clone())).collect() }
    }

    /// Restores the starting values from a checkpoint (a resumed run regularises toward the
    /// same point as the run it continues).
    pub fn from_values(start: Vec<(ParamId, Tensor)>) -> L2ToInit {
        L2ToInit { start }
    }

    pub fn start_values(&self) -> &[(ParamId, Tensor)] {
        &self.start
    }

    pub fn loss(&self, tape: &mut Tape, store: &ParamStore) -> Result<Var> {
        let mut total: Option<Var> = None;
        for (id, t0) in &self.start {
            let n = t0.numel();
            let p = tape.param(store, *id);
            let p = ops::reshape(tape, &p, &[1, n])?;
            let t0 = Var::constant(t0.reshape(&[1, n])?);
            let d = ops::sq_l2_distance(tape, &p, &t0)?;
            let d = ops::sum_all(tape, &d)?;
            total = Some(match total {
                Some(acc) => ops::add(tape, &acc, &d)?,
                None => d,
            });
        }
        total.ok_or_else(|| Error::Usage("the regulariser has no parameters".into()))
    }
}
