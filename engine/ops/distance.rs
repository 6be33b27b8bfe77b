//! Distances between paired feature rows `a, b: [..., d]` (the same shape), one value per row:
//! `[...]` (e.g. `[B, D] -> [B]`). See [`crate::engine::cpu::distance`] for the formulas and
//! the eps convention of the cosine distance.
//!
//! What backward keeps: squared L2 keeps `a - b` (one buffer, not two); cosine keeps `a` and
//! `b` (shared with their forward values).

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::distance as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

/// PyTorch's default eps of `cosine_similarity`.
pub const COSINE_EPS: f32 = 1e-8;

fn pair_shape(op: &'static str, a: &Var, b: &Var) -> Result<(usize, usize, Vec<usize>)> {
    if a.shape() != b.shape() || a.value().rank() == 0 {
        return Err(Error::shape(op, format!("expected two [..., dim] operands of one shape, found {:?} and {:?}", a.shape(), b.shape())));
    }
    let d = a.value().last_dim();
    let out = a.shape()[..a.shape().len() - 1].to_vec();
    Ok((out.iter().product(), d, out))
}

/// `||a - b||^2` per row.
pub fn sq_l2_distance(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    let (n, d, out) = pair_shape("sq_l2_distance", a, b)?;
    let mut diff = vec![0.0f32; n * d];
    let y = k::sq_l2(&a.value().to_f32_cow(), &b.value().to_f32_cow(), n, d, &mut diff);
    let value = Tensor::new(y, &out);
    let diff = Tensor::new(diff, a.shape());
    Ok(tape.record(value, &[a, b], |_| Box::new(SqL2Backward { diff: Saved::activation(diff), d })))
}

struct SqL2Backward {
    diff: Saved,
    d: usize,
}

impl Backward for SqL2Backward {
    fn name(&self) -> &'static str {
        "sq_l2_distance"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let diff = self.diff.tensor.to_f32_cow();
        let mut da = vec![0.0f32; diff.len()];
        k::sq_l2_backward(&diff, &g.to_f32_cow(), self.d, &mut da);
        let shape = self.diff.tensor.shape();
        let db = needs[1].then(|| Tensor::new(da.iter().map(|v| -v).collect(), shape));
        Ok(vec![needs[0].then(|| Tensor::new(da, shape)), db])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.diff]
    }
}

/// `1 - a.b / (max(|a|, eps) max(|b|, eps))` per row; `eps` is [`COSINE_EPS`] in PyTorch.
pub fn cosine_distance(tape: &mut Tape, a: &Var, b: &Var, eps: f32) -> Result<Var> {
    let (n, d, out) = pair_shape("cosine_distance", a, b)?;
    let y = k::cosine_distance(&a.value().to_f32_cow(), &b.value().to_f32_cow(), n, d, eps);
    let value = Tensor::new(y, &out);
    Ok(tape.record(value, &[a, b], |_| Box::new(CosineBackward { a: a.save(), b: b.save(), d, eps })))
}

struct CosineBackward {
    a: Saved,
    b: Saved,
    d: usize,
    eps: f32,
}

impl Backward for CosineBackward {
    fn name(&self) -> &'static str {
        "cosine_distance"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (a, b, gv) = (self.a.tensor.to_f32_cow(), self.b.tensor.to_f32_cow(), g.to_f32_cow());
        let grad = |x: &[f32], y: &[f32]| {
            let mut dx = vec![0.0f32; x.len()];
            k::cosine_distance_backward(x, y, &gv, self.d, self.eps, &mut dx);
            Tensor::new(dx, self.a.tensor.shape())
        };
        Ok(vec![needs[0].then(|| grad(&a, &b)), needs[1].then(|| grad(&b, &a))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.a, &self.b]
    }
}
