//! Launcher for kernels/bias.cu: `y = acc + b` per row, the bias of a dense layer whose product
//! cuBLAS accumulated in f32 (`acc`), rounded once into the activations' type.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, expect_float, int};
use crate::engine::error::{Error, Result};

fn dims(n: usize) -> Launch {
    // Grid-stride kernel: a few thousand blocks saturate any GPU.
    Launch::linear(n.div_ceil(256).clamp(1, 4096), 256)
}

fn check(op: &'static str, b: &Buffer, y: &Buffer, rows: usize, d: usize) -> Result<()> {
    expect(op, "b", b, Elem::F32, d)?;
    expect_float(op, "y", y, y.elem(), rows * d)?;
    if d == 0 && rows > 0 {
        return Err(Error::shape(op, format!("{rows} rows of width 0")));
    }
    int(op, "width", d).map(|_| ())
}

/// `y[r, :] = acc[r, :] + b` for the `rows` rows of `acc` (f32 `[rows, d]`), `b` f32 `[d]`,
/// into `y` `[rows, d]` of any float type.
pub fn bias_add(dev: &Device, acc: &Buffer, b: &Buffer, y: &mut Buffer, rows: usize, d: usize) -> Result<()> {
    let op = "bias_add";
    expect(op, "acc", acc, Elem::F32, rows * d)?;
    check(op, b, y, rows, d)?;
    if rows * d == 0 {
        return Ok(());
    }
    let k = format!("bias_add_{}", y.elem().suffix());
    let args = [KArg::In(acc), KArg::In(b), KArg::Out(y), KArg::I64((rows * d) as i64), KArg::I32(d as i32)];
    dev.launch("bias", &k, dims(rows * d), &args)
}

/// `y[r, :] += b` in place, `y` f32 `[rows, d]`.
pub fn bias_add_in_place(dev: &Device, y: &mut Buffer, b: &Buffer, rows: usize, d: usize) -> Result<()> {
    let op = "bias_add";
    expect(op, "y", y, Elem::F32, rows * d)?;
    check(op, b, y, rows, d)?;
    if rows * d == 0 {
        return Ok(());
    }
    // The kernel reads and writes the same buffer (its contract allows the alias for f32).
    dev.check_resident(&[y])?;
    let addr = y.addr();
    let args = [KArg::U64(addr), KArg::In(b), KArg::Out(y), KArg::I64((rows * d) as i64), KArg::I32(d as i32)];
    dev.launch("bias", "bias_add_f32", dims(rows * d), &args)
}
