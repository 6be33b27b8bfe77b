//! Moving whole rows: gather, scatter, and reshape.
//!
//! `gather_rows` picks rows of a `[rows, d]` matrix (the first token of each sequence, packed
//! tokens out of a padded batch); `scatter_rows` puts rows into a larger zero matrix (packed
//! tokens back into a padded batch). Each is the other's backward. Index lists are plain
//! vectors kept by the backward (not tensors). Gradients summed into a repeated row are added
//! in index order, so results do not depend on the thread count.

use crate::engine::autograd::{Backward, Tape, Var};
use crate::engine::error::{Error, Result};
use crate::engine::ops::linear::rows_cols;
use crate::engine::tensor::Tensor;

/// `out[i] = x[idx[i]]`: `[idx.len(), d]`.
pub fn gather_rows(tape: &mut Tape, x: &Var, idx: &[usize]) -> Result<Var> {
    let (rows, d) = rows_cols(x.value());
    check(idx, rows, "gather_rows")?;
    let value = Tensor::new(gather(x.value().to_f32_cow().as_ref(), d, idx), &[idx.len(), d]);
    Ok(tape.record(value, &[x], |_| Box::new(GatherBackward { idx: idx.to_vec(), rows, shape: x.shape().to_vec() })))
}

/// `out[idx[i]] = x[i]` in a `[rows, d]` zero matrix; indices must be distinct.
pub fn scatter_rows(tape: &mut Tape, x: &Var, idx: &[usize], rows: usize) -> Result<Var> {
    let (n, d) = rows_cols(x.value());
    if n != idx.len() {
        return Err(Error::shape("scatter_rows", format!("{n} rows but {} indices", idx.len())));
    }
    check(idx, rows, "scatter_rows")?;
    let mut seen = vec![false; rows];
    for &i in idx {
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::shape("scatter_rows", format!("row {i} is written twice")));
        }
    }
    let value = Tensor::new(scatter(x.value().to_f32_cow().as_ref(), d, idx, rows), &[rows, d]);
    Ok(tape.record(value, &[x], |_| Box::new(ScatterBackward { idx: idx.to_vec(), shape: x.shape().to_vec() })))
}

/// The same elements under another shape of equal size.
pub fn reshape(tape: &mut Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let value = x.value().reshape(shape)?;
    Ok(tape.record(value, &[x], |_| Box::new(ReshapeBackward { shape: x.shape().to_vec() })))
}

fn check(idx: &[usize], rows: usize, op: &'static str) -> Result<()> {
    match idx.iter().find(|&&i| i >= rows) {
        Some(i) => Err(Error::shape(op, format!("row index {i} out of range for {rows} rows"))),
        None => Ok(()),
    }
}

fn gather(x: &[f32], d: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        out.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    out
}

fn scatter(x: &[f32], d: usize, idx: &[usize], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * d];
    for (k, &i) in idx.iter().enumerate() {
        out[i * d..(i + 1) * d].copy_from_slice(&x[k * d..(k + 1) * d]);
    }
    out
}

struct GatherBackward {
    idx: Vec<usize>,
    rows: usize,
    shape: Vec<usize>,
}

impl Backward for GatherBackward {
    fn name(&self) -> &'static str {
        "gather_rows"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let d = g.last_dim();
        let gv = g.f32s();
        let mut dx = vec![0.0f32; self.rows * d];
        for (k, &i) in self.idx.iter().enumerate() {
            for (o, v) in dx[i * d..(i + 1) * d].iter_mut().zip(&gv[k * d..(k + 1) * d]) {
                *o += v;
            }
        }
        Ok(vec![Some(Tensor::new(dx, &self.shape))])
    }
}

struct ScatterBackward {
    idx: Vec<usize>,
    shape: Vec<usize>,
}

impl Backward for ScatterBackward {
    fn name(&self) -> &'static str {
        "scatter_rows"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let d = g.last_dim();
        Ok(vec![Some(Tensor::new(gather(g.f32s(), d, &self.idx), &self.shape))])
    }
}

struct ReshapeBackward {
    shape: Vec<usize>,
}

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&self.shape)?)])
    }
}
