//! Mean pooling of `x: [B, T, D]` over the real tokens given by `mask: [B, T]` (0/1), giving
//! `[B, D]`; see [`crate::engine::cpu::pooling`]. A sequence with no real token pools to zeros
//! and gets a zero gradient.
//!
//! What backward keeps: the mask only (`B x T` f32, counted as an activation).

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::pooling as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

pub fn mean_pool(tape: &mut Tape, x: &Var, mask: &Tensor) -> Result<Var> {
    let [b, t, d] = *x.shape() else {
        return Err(Error::shape("mean_pool", format!("input must be [batch, tokens, dim], found {:?}", x.shape())));
    };
    if mask.shape() != [b, t] {
        return Err(Error::shape("mean_pool", format!("mask {:?} does not fit input {:?}", mask.shape(), x.shape())));
    }
    let m = mask.to_f32_cow();
    if let Some((pos, v)) = m.iter().enumerate().find(|(_, &v)| v != 0.0 && v != 1.0) {
        return Err(Error::shape(
            "mean_pool",
            format!("mask must hold 0 or 1, found {v} at [{}, {}]", pos / t.max(1), pos % t.max(1)),
        ));
    }
    let mut y = vec![0.0f32; b * d];
    k::mean_pool(&x.value().to_f32_cow(), &m, b, t, d, &mut y);
    let value = Tensor::new(y, &[b, d]);
    Ok(tape.record(value, &[x], |_| Box::new(MeanPoolBackward { mask: Saved::activation(mask.clone()), b, t, d })))
}

struct MeanPoolBackward {
    mask: Saved,
    b: usize,
    t: usize,
    d: usize,
}

impl Backward for MeanPoolBackward {
    fn name(&self) -> &'static str {
        "mean_pool"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (b, t, d) = (self.b, self.t, self.d);
        let mut dx = vec![0.0f32; b * t * d];
        k::mean_pool_backward(&g.to_f32_cow(), &self.mask.tensor.to_f32_cow(), b, t, d, &mut dx);
        Ok(vec![Some(Tensor::new(dx, &[b, t, d]))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.mask]
    }
}
