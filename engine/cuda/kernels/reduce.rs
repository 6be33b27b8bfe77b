//! Launchers for kernels/reduce.cu: the fixed-order column sums behind every deterministic
//! parameter gradient, and the sum of squares of many tensors (the global gradient norm).

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

/// Elements per block of `sumsq_multi_f32` (256 threads x SUMSQ_ITEMS).
const SUMSQ_BLOCK: usize = 1024;

/// `sum_t sum_i t[i]^2` over f32 buffers (a training step's gradients, for the global-norm
/// clip): one launch writes a partial sum per block of 1024 elements; the partials are added
/// here in order, in f64.
pub fn sum_squares(dev: &Device, tensors: &[&Buffer]) -> Result<f64> {
    let op = "sum_squares";
    // Descriptor table: address, length, first block (3 x 8 bytes, repr C SumsqTensor).
    let mut table: Vec<u64> = Vec::with_capacity(tensors.len() * 3);
    let mut blocks = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        expect(op, &format!("tensor {i}"), t, Elem::F32, t.len())?;
        if t.is_empty() {
            continue;
        }
        table.extend([t.addr(), t.len() as u64, blocks as u64]);
        blocks += t.len().div_ceil(SUMSQ_BLOCK);
    }
    if blocks == 0 {
        return Ok(0.0);
    }
    // The kernel reaches the tensors through the table, not as arguments: check them here.
    dev.check_resident(tensors)?;
    let tb = dev.upload(&table, Elem::I64)?;
    let mut partial = dev.alloc(Elem::F32, blocks)?;
    let args = [KArg::In(&tb), KArg::I32(int(op, "tensors", table.len() / 3)?), KArg::Out(&mut partial)];
    dev.launch("reduce", "sumsq_multi_f32", Launch::linear(blocks, 256), &args)?;
    Ok(dev.download_f32(&partial)?.iter().map(|&v| v as f64).sum())
}
