//! Rotary position embedding as a tape operation; see [`crate::engine::cpu::rope`].
//!
//! `x` is `[rows, heads * head_dim]` (queries or keys, rows in any order) with one position per
//! row. The rotation is linear and its backward is the inverse rotation, so nothing but the
//! positions is kept.

use crate::engine::autograd::{Backward, Tape, Var};
use crate::engine::cpu::rope::{self as k, RopeFreqs};
use crate::engine::error::{Error, Result};
use crate::engine::ops::linear::rows_cols;
use crate::engine::tensor::Tensor;

pub fn rope(tape: &mut Tape, x: &Var, positions: &[u32], heads: usize, freqs: &RopeFreqs) -> Result<Var> {
    let (rows, width) = rows_cols(x.value());
    let half = freqs.half();
    if heads * 2 * half != width || half == 0 {
        return Err(Error::shape("rope", format!("input {:?} is not {heads} heads of {} values", x.shape(), 2 * half)));
    }
    if positions.len() != rows {
        return Err(Error::shape("rope", format!("{} positions for {rows} rows", positions.len())));
    }
    let (cos, sin) = freqs.tables::<f32>(positions);
    let mut y = vec![0.0f32; rows * width];
    k::rope(&x.value().to_f32_cow(), &cos, &sin, heads, half, false, &mut y);
    let value = Tensor::new(y, x.shape());
    Ok(tape.record(value, &[x], |_| Box::new(RopeBackward { positions: positions.to_vec(), heads, freqs: freqs.clone() })))
}

struct RopeBackward {
    positions: Vec<u32>,
    heads: usize,
    freqs: RopeFreqs,
}

impl Backward for RopeBackward {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (cos, sin) = self.freqs.tables::<f32>(&self.positions);
        let mut dx = vec![0.0f32; g.numel()];
        k::rope(&g.to_f32_cow(), &cos, &sin, self.heads, self.freqs.half(), true, &mut dx);
        Ok(vec![Some(Tensor::new(dx, g.shape()))])
    }
}
