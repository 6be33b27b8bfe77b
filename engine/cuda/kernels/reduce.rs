//! Launcher for kernels/reduce.cu: the fixed-order column sums behind every deterministic
//! parameter gradient.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, int};
use crate::engine::error::Result;

/// `out[j] += sum_c partial[c, j]` for `partial` f32 `[chunks, n]`, summed in chunk order.
pub fn colsum_accumulate(dev: &Device, partial: &Buffer, chunks: usize, n: usize, out: &mut Buffer) -> Result<()> {
    expect("colsum_accumulate", "partial", partial, Elem::F32, chunks * n)?;
    expect("colsum_accumulate", "out", out, Elem::F32, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [KArg::In(partial), KArg::I32(int("colsum_accumulate", "chunks", chunks)?), KArg::I64(n as i64), KArg::Out(out)];
    dev.launch("reduce", "colsum_accumulate_f32", Launch::cover(n, 256), &args)
}

/// Rows per chunk of a deterministic parameter-gradient reduction: enough chunks to fill a
/// GPU's blocks, few enough that the partial buffer stays small.
pub(crate) fn chunk_rows(rows: usize) -> usize {
    rows.div_ceil(64).clamp(16, 256)
}
