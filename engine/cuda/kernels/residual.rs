//! Launcher for kernels/residual.cu: `y = drop(a) + b`, the residual add of a post-LayerNorm
//! sublayer with its dropout; with `b = None` the dropout alone (also its backward), with no
//! dropout the sum of two gradients. Flat buffers of one float type; `y` overwritten, and it
//! may be `a` or `b` itself ([`add_dropout_in_place`]).

use super::super::{Buffer, Device, KArg, Launch};
use super::expect_float;
use crate::engine::error::{Error, Result};

/// Inverted dropout with the CPU's mask (engine/cpu/dropout.rs): element `i` is kept when
/// `rng::uniform(seed, stream, i) >= p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    pub stream: u64,
}

fn dims(n: usize) -> Launch {
    // Grid-stride kernel: a few thousand blocks saturate any GPU.
    Launch::linear(n.div_ceil(256).clamp(1, 4096), 256)
}

/// (p, scale, seed, stream) as the kernel takes them; no dropout is p = 0.
fn drop_args(op: &'static str, drop: Option<Dropout>) -> Result<(f32, f32, u64, u64)> {
    match drop {
        Some(d) if d.p > 0.0 => {
            if !(0.0..1.0).contains(&d.p) {
                return Err(Error::shape(op, format!("dropout probability {} is not in [0, 1)", d.p)));
            }
            // engine/cpu/dropout.rs rounds the factor from f64.
            Ok((d.p, (1.0 / (1.0 - d.p as f64)) as f32, d.seed, d.stream))
        }
        _ => Ok((0.0, 1.0, 0, 0)),
    }
}

/// `y = drop(a) + b` (`b = None`: `y = drop(a)`).
pub fn add_dropout(dev: &Device, a: &Buffer, b: Option<&Buffer>, drop: Option<Dropout>, y: &mut Buffer) -> Result<()> {
    let op = "add_dropout";
    let (n, elem) = (a.len(), a.elem());
    expect_float(op, "a", a, elem, n)?;
    if let Some(b) = b {
        expect_float(op, "b", b, elem, n)?;
    }
    expect_float(op, "y", y, elem, n)?;
    let (p, scale, seed, stream) = drop_args(op, drop)?;
    if n == 0 {
        return Ok(());
    }
    let k = format!("add_dropout_{}", elem.suffix());
    let args = [KArg::In(a), KArg::Opt(b), KArg::Out(y), KArg::I64(n as i64), KArg::U64(seed), KArg::U64(stream), KArg::F32(p), KArg::F32(scale)];
    dev.launch("residual", &k, dims(n), &args)
}

/// `y = drop(y) + b` in place (`b = None`: dropout of `y` in place; no dropout: `y += b`).
pub fn add_dropout_in_place(dev: &Device, y: &mut Buffer, b: Option<&Buffer>, drop: Option<Dropout>) -> Result<()> {
    let op = "add_dropout";
    let (n, elem) = (y.len(), y.elem());
    expect_float(op, "y", y, elem, n)?;
    if let Some(b) = b {
        expect_float(op, "b", b, elem, n)?;
        dev.check_resident(&[b])?;
    }
    let (p, scale, seed, stream) = drop_args(op, drop)?;
    if n == 0 {
        return Ok(());
    }
    // The kernel reads and writes the same buffer (its contract allows the alias).
    dev.check_resident(&[y])?;
    let addr = y.addr();
    let k = format!("add_dropout_{}", elem.suffix());
    let args = [KArg::U64(addr), KArg::Opt(b), KArg::Out(y), KArg::I64(n as i64), KArg::U64(seed), KArg::U64(stream), KArg::F32(p), KArg::F32(scale)];
    dev.launch("residual", &k, dims(n), &args)
}
