//! Dropout with a mask regenerated from (seed, stream) in backward; see
//! [`crate::engine::cpu::dropout`]. Backward keeps nothing.
//!
//! `stream` must differ between the dropout sites of one step (e.g. derived from the layer and
//! the site), and `seed` between steps, or masks repeat.

use crate::engine::autograd::{Backward, Tape, Var};
use crate::engine::cpu::dropout as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

/// Where a dropout mask comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutRng {
    pub seed: u64,
    pub stream: u64,
}

/// Drops each element of `x` with probability `p` and scales the rest by `1 / (1 - p)`. With
/// `training == false` or `p == 0` it is the identity: `x` is returned and nothing recorded.
pub fn dropout(tape: &mut Tape, x: &Var, p: f32, training: bool, rng: DropoutRng) -> Result<Var> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::Usage(format!("dropout: probability must be in [0, 1], found {p}")));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let xv = x.value().to_f32_cow();
    let mut y = vec![0.0f32; xv.len()];
    k::dropout(&xv, p, rng.seed, rng.stream, &mut y);
    let value = Tensor::new(y, x.shape());
    Ok(tape.record(value, &[x], |_| Box::new(DropoutBackward { p, rng })))
}

struct DropoutBackward {
    p: f32,
    rng: DropoutRng,
}

impl Backward for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gv = g.to_f32_cow();
        let mut dx = vec![0.0f32; gv.len()];
        k::dropout(&gv, self.p, self.rng.seed, self.rng.stream, &mut dx);
        Ok(vec![Some(Tensor::new(dx, g.shape()))])
    }
}
