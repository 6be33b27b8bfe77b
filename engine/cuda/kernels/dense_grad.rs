//! Launcher for kernels/dense_grad.cu: the weight and bias gradients of a trainable dense layer
//! `y = x W^T + b` (a task head), summed deterministically over the rows. Both accumulate.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::reduce::{chunk_rows, colsum_accumulate};
use super::{expect, expect_float, int};
use crate::engine::error::Result;

/// `dw += dy^T x` (f32 `[dout, din]`) and `db += sum_rows dy` (f32 `[dout]`) for `x` `[n, din]`
/// and `dy` `[n, dout]` of one float type; either output may be skipped.
#[allow(clippy::too_many_arguments)]
pub fn dense_grad(dev: &Device, x: &Buffer, dy: &Buffer, n: usize, din: usize, dout: usize, dw: Option<&mut Buffer>, db: Option<&mut Buffer>) -> Result<()> {
    let op = "dense_grad";
    let elem = x.elem();
    expect_float(op, "x", x, elem, n * din)?;
    expect(op, "dy", dy, elem, n * dout)?;
    if let Some(dw) = &dw {
        expect(op, "dW", dw, Elem::F32, dout * din)?;
    }
    if let Some(db) = &db {
        expect(op, "db", db, Elem::F32, dout)?;
    }
    if n == 0 {
        return Ok(()); // nothing to add
    }
    let chunk = chunk_rows(n);
    let chunks = n.div_ceil(chunk);
    let (ni, dini, douti, chunki) = (int(op, "rows", n)?, int(op, "din", din)?, int(op, "dout", dout)?, int(op, "chunk", chunk)?);
    let sfx = elem.suffix();
    if let Some(dw) = dw {
        let total = din * dout;
        if total > 0 {
            let mut partial = dev.alloc(Elem::F32, chunks * total)?;
            let dims = Launch { grid: [total.div_ceil(128) as u32, chunks as u32, 1], block: [128, 1, 1] };
            let args = [KArg::In(x), KArg::In(dy), KArg::I32(ni), KArg::I32(dini), KArg::I32(douti), KArg::I32(chunki), KArg::Out(&mut partial)];
            dev.launch("dense_grad", &format!("dense_grad_w_{sfx}"), dims, &args)?;
            colsum_accumulate(dev, &partial, chunks, total, dw)?;
        }
    }
    if let Some(db) = db {
        if dout > 0 {
            let mut partial = dev.alloc(Elem::F32, chunks * dout)?;
            let dims = Launch { grid: [dout.div_ceil(128) as u32, chunks as u32, 1], block: [128, 1, 1] };
            let args = [KArg::In(dy), KArg::I32(ni), KArg::I32(douti), KArg::I32(chunki), KArg::Out(&mut partial)];
            dev.launch("dense_grad", &format!("dense_grad_b_{sfx}"), dims, &args)?;
            colsum_accumulate(dev, &partial, chunks, dout, db)?;
        }
    }
    Ok(())
}
