//! Launchers for kernels/activation.cu: GELU (erf, tanh) and SwiGLU, forward and backward.
//! Flat buffers of one float type; outputs overwritten.

use super::super::{Buffer, Device, KArg, Launch};
use super::expect_float;
use crate::engine::cpu::activation::GeluKind;
use crate::engine::error::Result;

fn dims(n: usize) -> Launch {
    Launch::linear(n.div_ceil(256).clamp(1, 4096), 256)
}

fn gelu_name(kind: GeluKind) -> &'static str {
    match kind {
        GeluKind::Erf => "gelu_erf",
        GeluKind::Tanh => "gelu_tanh",
    }
}

pub fn gelu_forward(dev: &Device, kind: GeluKind, x: &Buffer, y: &mut Buffer) -> Result<()> {
    let n = x.len();
    expect_float("gelu", "x", x, x.elem(), n)?;
    expect_float("gelu", "y", y, x.elem(), n)?;
    let k = format!("{}_fwd_{}", gelu_name(kind), x.elem().suffix());
    dev.launch("activation", &k, dims(n), &[KArg::In(x), KArg::Out(y), KArg::I64(n as i64)])
}

/// `dx = dy * gelu'(x)`.
pub fn gelu_backward(dev: &Device, kind: GeluKind, x: &Buffer, dy: &Buffer, dx: &mut Buffer) -> Result<()> {
    let n = x.len();
    for (what, b) in [("x", x), ("dy", dy), ("dx", &*dx)] {
        expect_float("gelu_backward", what, b, x.elem(), n)?;
    }
    let k = format!("{}_bwd_{}", gelu_name(kind), x.elem().suffix());
    dev.launch("activation", &k, dims(n), &[KArg::In(x), KArg::In(dy), KArg::Out(dx), KArg::I64(n as i64)])
}

/// `y = silu(gate) * up`.
pub fn swiglu_forward(dev: &Device, gate: &Buffer, up: &Buffer, y: &mut Buffer) -> Result<()> {
    let n = gate.len();
    for (what, b) in [("gate", gate), ("up", up), ("y", &*y)] {
        expect_float("swiglu", what, b, gate.elem(), n)?;
    }
    let k = format!("swiglu_fwd_{}", gate.elem().suffix());
    dev.launch("activation", &k, dims(n), &[KArg::In(gate), KArg::In(up), KArg::Out(y), KArg::I64(n as i64)])
}

/// `dgate = dy * up * silu'(gate)`, `dup = dy * silu(gate)`; either may be skipped.
pub fn swiglu_backward(
    dev: &Device,
    gate: &Buffer,
    up: &Buffer,
    dy: &Buffer,
    dgate: Option<&mut Buffer>,
    dup: Option<&mut Buffer>,
) -> Result<()> {
    let n = gate.len();
    for (what, b) in [("gate", gate), ("up", up), ("dy", dy)] {
        expect_float("swiglu_backward", what, b, gate.elem(), n)?;
    }
    for (what, b) in [("dgate", &dgate), ("dup", &dup)] {
        if let Some(b) = b {
            expect_float("swiglu_backward", what, b, gate.elem(), n)?;
        }
    }
    let k = format!("swiglu_bwd_{}", gate.elem().suffix());
    let args = [KArg::In(gate), KArg::In(up), KArg::In(dy), KArg::OptOut(dgate), KArg::OptOut(dup), KArg::I64(n as i64)];
    dev.launch("activation", &k, dims(n), &args)
}
