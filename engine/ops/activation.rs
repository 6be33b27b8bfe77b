//! Activations: GELU (erf or tanh form), ReLU, SiLU, tanh and SwiGLU; see [`crate::engine::cpu::activation`].
//!
//! What backward keeps: GELU, ReLU, SiLU and tanh keep their input `x`; SwiGLU keeps `gate` (always) and
//! `up` only when the gate needs a gradient.

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::activation::{self as k, GeluKind};
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy)]
enum Unary {
    Gelu(GeluKind),
    Relu,
    Silu,
    Tanh,
}

pub fn gelu(tape: &mut Tape, x: &Var, kind: GeluKind) -> Result<Var> {
    unary(tape, x, Unary::Gelu(kind))
}

pub fn relu(tape: &mut Tape, x: &Var) -> Result<Var> {
    unary(tape, x, Unary::Relu)
}

pub fn silu(tape: &mut Tape, x: &Var) -> Result<Var> {
    unary(tape, x, Unary::Silu)
}

pub fn tanh(tape: &mut Tape, x: &Var) -> Result<Var> {
    unary(tape, x, Unary::Tanh)
}

fn unary(tape: &mut Tape, x: &Var, op: Unary) -> Result<Var> {
    let xv = x.value().to_f32_cow();
    let mut y = vec![0.0f32; xv.len()];
    match op {
        Unary::Gelu(kind) => k::gelu(kind, &xv, &mut y),
        Unary::Relu => k::relu(&xv, &mut y),
        Unary::Silu => k::silu(&xv, &mut y),
        Unary::Tanh => k::tanh(&xv, &mut y),
    }
    let value = Tensor::new(y, x.shape());
    Ok(tape.record(value, &[x], |_| Box::new(UnaryBackward { x: x.save(), op })))
}

struct UnaryBackward {
    x: Saved,
    op: Unary,
}

impl Backward for UnaryBackward {
    fn name(&self) -> &'static str {
        match self.op {
            Unary::Gelu(_) => "gelu",
            Unary::Relu => "relu",
            Unary::Silu => "silu",
            Unary::Tanh => "tanh",
        }
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (x, gv) = (self.x.tensor.to_f32_cow(), g.to_f32_cow());
        let mut dx = vec![0.0f32; x.len()];
        match self.op {
            Unary::Gelu(kind) => k::gelu_backward(kind, &x, &gv, &mut dx),
            Unary::Relu => k::relu_backward(&x, &gv, &mut dx),
            Unary::Silu => k::silu_backward(&x, &gv, &mut dx),
            Unary::Tanh => k::tanh_backward(&x, &gv, &mut dx),
        }
        Ok(vec![Some(Tensor::new(dx, g.shape()))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.x]
    }
}

/// `silu(gate) * up`, same shapes (LLaMA's feed-forward gate).
pub fn swiglu(tape: &mut Tape, gate: &Var, up: &Var) -> Result<Var> {
    if gate.shape() != up.shape() {
        return Err(Error::shape("swiglu", format!("gate {:?} and up {:?} differ in shape", gate.shape(), up.shape())));
    }
    let mut y = vec![0.0f32; gate.value().numel()];
    k::swiglu(&gate.value().to_f32_cow(), &up.value().to_f32_cow(), &mut y);
    let value = Tensor::new(y, gate.shape());
    Ok(tape.record(value, &[gate, up], |needs| {
        Box::new(SwigluBackward { gate: gate.save(), up: needs[0].then(|| up.save()) })
    }))
}

struct SwigluBackward {
    gate: Saved,
    up: Option<Saved>,
}

impl Backward for SwigluBackward {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (gate, gv) = (self.gate.tensor.to_f32_cow(), g.to_f32_cow());
        let dgate = needs[0].then(|| {
            let up = self.up.as_ref().expect("kept when the gate needs a gradient").tensor.to_f32_cow();
            let mut d = vec![0.0f32; gv.len()];
            k::swiglu_backward_gate(&gate, &up, &gv, &mut d);
            Tensor::new(d, g.shape())
        });
        let dup = needs[1].then(|| {
            let mut d = vec![0.0f32; gv.len()];
            k::swiglu_backward_up(&gate, &gv, &mut d);
            Tensor::new(d, g.shape())
        });
        Ok(vec![dgate, dup])
    }

    fn saved(&self) -> Vec<&Saved> {
        std::iter::once(&self.gate).chain(self.up.iter()).collect()
    }
}
