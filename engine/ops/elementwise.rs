//! Element-wise operations used to compose layers and losses: bias add, residual add and
//! difference, scale by a constant, element-wise product, and whole-tensor sum and mean (scalar
//! outputs of shape `[]`).
//!
//! What backward keeps: nothing, except the product, which keeps the other operand of each
//! input that needs a gradient.

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::elementwise as k;
use crate::engine::error::{Error, Result};
use crate::engine::ops::linear::rows_cols;
use crate::engine::tensor::Tensor;

/// `x + b` with `x`: `[..., d]`, `b`: `[d]` broadcast over the rows.
pub fn bias_add(tape: &mut Tape, x: &Var, b: &Var) -> Result<Var> {
    let (rows, d) = rows_cols(x.value());
    if x.value().rank() == 0 || b.shape() != [d] {
        return Err(Error::shape("bias_add", format!("bias {:?} does not fit input {:?}", b.shape(), x.shape())));
    }
    let mut y = vec![0.0f32; rows * d];
    k::bias_add(&x.value().to_f32_cow(), &b.value().to_f32_cow(), &mut y);
    let value = Tensor::new(y, x.shape());
    Ok(tape.record(value, &[x, b], |_| Box::new(BiasAddBackward { rows, d })))
}

struct BiasAddBackward {
    rows: usize,
    d: usize,
}

impl Backward for BiasAddBackward {
    fn name(&self) -> &'static str {
        "bias_add"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let db = needs[1].then(|| Tensor::new(k::bias_add_backward(&g.to_f32_cow(), self.rows, self.d), &[self.d]));
        Ok(vec![needs[0].then(|| g.clone()), db])
    }
}

/// `a + b`, same shapes (a residual connection).
pub fn add(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    add_scaled(tape, a, b, 1.0, "add")
}

/// `a - b`, same shapes (e.g. `theta - theta_0` of a regulariser).
pub fn sub(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    add_scaled(tape, a, b, -1.0, "sub")
}

fn add_scaled(tape: &mut Tape, a: &Var, b: &Var, s: f32, op: &'static str) -> Result<Var> {
    same_shape(op, a, b)?;
    let mut y = vec![0.0f32; a.value().numel()];
    k::add_scaled(&a.value().to_f32_cow(), &b.value().to_f32_cow(), s, &mut y);
    let value = Tensor::new(y, a.shape());
    Ok(tape.record(value, &[a, b], |_| Box::new(AddBackward { s, op })))
}

fn same_shape(op: &'static str, a: &Var, b: &Var) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(op, format!("operands differ in shape: {:?} and {:?}", a.shape(), b.shape())));
    }
    Ok(())
}

struct AddBackward {
    s: f32,
    op: &'static str,
}

impl Backward for AddBackward {
    fn name(&self) -> &'static str {
        self.op
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // The upstream gradient is passed on without a copy; the tape copies before it adds
        // into a shared buffer.
        let db = needs[1].then(|| if self.s == 1.0 { g.clone() } else { scaled(g, self.s) });
        Ok(vec![needs[0].then(|| g.clone()), db])
    }
}

fn scaled(t: &Tensor, c: f32) -> Tensor {
    let mut y = vec![0.0f32; t.numel()];
    k::scale(&t.to_f32_cow(), c, &mut y);
    Tensor::new(y, t.shape())
}

/// `c * x` for a constant `c`.
pub fn scale(tape: &mut Tape, x: &Var, c: f32) -> Result<Var> {
    let value = scaled(x.value(), c);
    Ok(tape.record(value, &[x], |_| Box::new(ScaleBackward { c })))
}

struct ScaleBackward {
    c: f32,
}

impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(scaled(g, self.c))])
    }
}

/// `a * b` element-wise, same shapes.
pub fn mul(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    same_shape("mul", a, b)?;
    let mut y = vec![0.0f32; a.value().numel()];
    k::mul(&a.value().to_f32_cow(), &b.value().to_f32_cow(), &mut y);
    let value = Tensor::new(y, a.shape());
    Ok(tape.record(value, &[a, b], |needs| {
        // da needs b and db needs a: keep only the operand the other gradient uses.
        Box::new(MulBackward { a: needs[1].then(|| a.save()), b: needs[0].then(|| b.save()) })
    }))
}

struct MulBackward {
    a: Option<Saved>,
    b: Option<Saved>,
}

impl Backward for MulBackward {
    fn name(&self) -> &'static str {
        "mul"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gv = g.to_f32_cow();
        let times = |other: &Option<Saved>| {
            let o = &other.as_ref().expect("kept when the other input needs a gradient").tensor;
            let mut d = vec![0.0f32; gv.len()];
            k::mul(&gv, &o.to_f32_cow(), &mut d);
            Tensor::new(d, g.shape())
        };
        Ok(vec![needs[0].then(|| times(&self.b)), needs[1].then(|| times(&self.a))])
    }

    fn saved(&self) -> Vec<&Saved> {
        self.a.iter().chain(self.b.iter()).collect()
    }
}

/// Sum of all elements, a scalar of shape `[]` (accumulated in f64).
pub fn sum_all(tape: &mut Tape, x: &Var) -> Result<Var> {
    reduce_all(tape, x, false)
}

/// Mean of all elements, a scalar of shape `[]`; the mean of an empty tensor is 0 (with a zero
/// gradient), so that an empty micro-batch adds nothing to a loss.
pub fn mean_all(tape: &mut Tape, x: &Var) -> Result<Var> {
    reduce_all(tape, x, true)
}

fn reduce_all(tape: &mut Tape, x: &Var, mean: bool) -> Result<Var> {
    let n = x.value().numel();
    let sum: f64 = k::sum_all(&x.value().to_f32_cow());
    let c = if mean && n > 0 { 1.0 / n as f64 } else { 1.0 };
    let value = Tensor::scalar((sum * c) as f32);
    let shape = x.shape().to_vec();
    let name = if mean { "mean_all" } else { "sum_all" };
    Ok(tape.record(value, &[x], |_| Box::new(ReduceAllBackward { shape, c: c as f32, name })))
}

struct ReduceAllBackward {
    shape: Vec<usize>,
    c: f32,
    name: &'static str,
}

impl Backward for ReduceAllBackward {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.to_f32_cow().first().copied().unwrap_or(0.0);
        Ok(vec![Some(Tensor::full(&self.shape, gs * self.c))])
    }
}
