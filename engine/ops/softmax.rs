//! Softmax over the last dimension of `x: [..., d]`; see [`crate::engine::cpu::softmax`].
//!
//! What backward keeps: the output `y` (shared with the forward value, so counted once even
//! when the next operation keeps it too).

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::softmax as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

pub fn softmax(tape: &mut Tape, x: &Var) -> Result<Var> {
    if x.value().rank() == 0 {
        return Err(Error::shape("softmax", "input is a scalar; softmax needs a last dimension"));
    }
    let d = x.value().last_dim();
    let xv = x.value().to_f32_cow();
    let mut y = vec![0.0f32; xv.len()];
    k::softmax(&xv, d, &mut y);
    let value = Tensor::new(y, x.shape());
    let kept = value.clone();
    Ok(tape.record(value, &[x], |_| Box::new(SoftmaxBackward { y: Saved::activation(kept), d })))
}

struct SoftmaxBackward {
    y: Saved,
    d: usize,
}

impl Backward for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (y, gv) = (self.y.tensor.to_f32_cow(), g.to_f32_cow());
        let mut dx = vec![0.0f32; y.len()];
        k::softmax_backward(&y, &gv, self.d, &mut dx);
        Ok(vec![Some(Tensor::new(dx, g.shape()))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.y]
    }
}
