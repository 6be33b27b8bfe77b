//! Launcher for kernels/pool.cu: one f32 vector per packed sequence (its first row, or the mean
//! of its rows) for a classification head, and the backward that spreads the pooled gradient
//! back over the rows. Both outputs are overwritten.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, expect_float, int};
use crate::engine::error::{Error, Result};

/// How a sequence becomes one vector (models/heads.rs `Pooling`, which the engine does not
/// depend on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first row.
    First,
    /// The mean of the rows.
    Mean,
}

fn mode(p: Pooling) -> i32 {
    match p {
        Pooling::First => 0,
        Pooling::Mean => 1,
    }
}

/// Checks packed offsets (from 0 to `rows`, non-decreasing; FIRST needs every sequence
/// non-empty, as the CPU's `pool`) and uploads them.
fn offsets(op: &'static str, dev: &Device, offsets: &[usize], rows: usize, how: Pooling) -> Result<(Buffer, usize)> {
    if offsets.first() != Some(&0) || offsets.last() != Some(&rows) || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::shape(op, format!("offsets {offsets:?} do not rise from 0 to {rows} rows")));
    }
    if how == Pooling::First {
        if let Some(s) = offsets.windows(2).position(|w| w[0] == w[1]) {
            return Err(Error::shape(op, format!("sequence {s} is empty: it has no first token")));
        }
    }
    let v = offsets.iter().map(|&o| int(op, "offset", o)).collect::<Result<Vec<i32>>>()?;
    Ok((dev.upload(&v, Elem::I32)?, offsets.len() - 1))
}

/// `out` f32 `[B, d]` from `h` `[rows, d]` (any float type) of the sequences `offsets`.
pub fn pool_forward(dev: &Device, h: &Buffer, offsets_host: &[usize], d: usize, how: Pooling, out: &mut Buffer) -> Result<()> {
    let op = "pool";
    let rows = h.len() / d.max(1);
    expect_float(op, "h", h, h.elem(), rows * d)?;
    let (off, b) = offsets(op, dev, offsets_host, rows, how)?;
    expect(op, "out", out, Elem::F32, b * d)?;
    if b == 0 || d == 0 {
        return Ok(());
    }
    let k = format!("pool_fwd_{}", h.elem().suffix());
    let args = [KArg::In(h), KArg::In(&off), KArg::I32(int(op, "d", d)?), KArg::I32(mode(how)), KArg::Out(out)];
    dev.launch("pool", &k, Launch::linear(b, 128), &args)
}

/// `dh` `[rows, d]` (its own float type) from `dout` f32 `[B, d]`: every row written.
pub fn pool_backward(dev: &Device, dout: &Buffer, offsets_host: &[usize], d: usize, how: Pooling, dh: &mut Buffer) -> Result<()> {
    let op = "pool_backward";
    let rows = dh.len() / d.max(1);
    expect_float(op, "dh", dh, dh.elem(), rows * d)?;
    let (off, b) = offsets(op, dev, offsets_host, rows, how)?;
    expect(op, "dout", dout, Elem::F32, b * d)?;
    if b == 0 || d == 0 {
        return Ok(());
    }
    let k = format!("pool_bwd_{}", dh.elem().suffix());
    let args = [KArg::In(dout), KArg::In(&off), KArg::I32(int(op, "d", d)?), KArg::I32(mode(how)), KArg::Out(dh)];
    dev.launch("pool", &k, Launch::linear(b, 128), &args)
}
