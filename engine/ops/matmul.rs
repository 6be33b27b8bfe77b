//! Batched matrix product with transposes: `C[b] = op(A[b]) op(B[b])`, `op` = identity or
//! transpose, read in place through strides.
//!
//! `A` is `[batch..., rows, cols]`; `B` has the same batch dimensions, or is a plain matrix
//! shared by every batch element (its gradient is then summed over the batch, in batch order).

use rayon::prelude::*;

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::error::{Error, Result};
use crate::engine::tensor::{Tensor, View};

#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    /// Stored shapes of one batch element.
    a_rows: usize,
    a_cols: usize,
    b_rows: usize,
    b_cols: usize,
    b_shared: bool,
    trans_a: bool,
    trans_b: bool,
}

impl Dims {
    fn m(&self) -> usize {
        if self.trans_a { self.a_cols } else { self.a_rows }
    }
    fn n(&self) -> usize {
        if self.trans_b { self.b_rows } else { self.b_cols }
    }
    /// op(A) of batch element `i`.
    fn a<'a>(&self, v: View<'a>, i: usize) -> MatRef<'a> {
        let m = MatRef { offset: i * self.a_rows * self.a_cols, ..MatRef::new(v, self.a_rows, self.a_cols) };
        if self.trans_a { m.t() } else { m }
    }
    /// op(B) of batch element `i`.
    fn b<'a>(&self, v: View<'a>, i: usize) -> MatRef<'a> {
        let off = if self.b_shared { 0 } else { i * self.b_rows * self.b_cols };
        let m = MatRef { offset: off, ..MatRef::new(v, self.b_rows, self.b_cols) };
        if self.trans_b { m.t() } else { m }
    }
}

pub fn matmul(tape: &mut Tape, a: &Var, b: &Var, trans_a: bool, trans_b: bool, precision: Precision) -> Result<Var> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() < 2 || sb.len() < 2 {
        return Err(Error::shape("matmul", format!("operands must have rank >= 2, found {sa:?} and {sb:?}")));
    }
    let batch_dims = &sa[..sa.len() - 2];
    let b_shared = sb.len() == 2 && sa.len() > 2;
    if !b_shared && sb[..sb.len() - 2] != *batch_dims {
        return Err(Error::shape("matmul", format!("batch dimensions differ: {sa:?} and {sb:?}")));
    }
    let d = Dims {
        batch: batch_dims.iter().product(),
        a_rows: sa[sa.len() - 2],
        a_cols: sa[sa.len() - 1],
        b_rows: sb[sb.len() - 2],
        b_cols: sb[sb.len() - 1],
        b_shared,
        trans_a,
        trans_b,
    };
    let k = if trans_a { d.a_rows } else { d.a_cols };
    let kb = if trans_b { d.b_cols } else { d.b_rows };
    if k != kb {
        return Err(Error::shape(
            "matmul",
            format!("inner dimensions differ: {sa:?}{} x {sb:?}{}", t_mark(trans_a), t_mark(trans_b)),
        ));
    }
    let (m, n) = (d.m(), d.n());
    let mut c = vec![0.0f32; d.batch * m * n];
    let (av, bv) = (a.value().view(), b.value().view());
    for_each_batch(&mut c, m * n, d.batch, |i, ci| {
        gemm(1.0, d.a(av, i), d.b(bv, i), false, MatMut::new(ci, m, n), precision, false)
    });
    let mut shape = batch_dims.to_vec();
    shape.extend([m, n]);
    let value = Tensor::new(c, &shape);
    Ok(tape.record(value, &[a, b], |needs| {
        Box::new(MatmulBackward {
            batch_shape: batch_dims.to_vec(),
            a: needs[1].then(|| a.save()),
            b: needs[0].then(|| b.save()),
            d,
            precision,
        })
    }))
}

fn t_mark(t: bool) -> &'static str {
    if t { "^T" } else { "" }
}

/// Runs `f(i, chunk_i)` for each of `batch` output chunks of `len` elements: in parallel over
/// the batch when it is large enough, otherwise one after the other with a parallel product.
fn for_each_batch(c: &mut [f32], len: usize, batch: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    if batch >= 2 * rayon::current_num_threads() {
        c.par_chunks_mut(len).enumerate().for_each(|(i, ci)| f(i, ci));
    } else {
        c.chunks_mut(len).enumerate().for_each(|(i, ci)| f(i, ci));
    }
}

struct MatmulBackward {
    batch_shape: Vec<usize>,
    a: Option<Saved>,
    b: Option<Saved>,
    d: Dims,
    precision: Precision,
}

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let d = self.d;
        let (m, n) = (d.m(), d.n());
        let gv = g.view();
        let dc = |i: usize| MatRef { offset: i * m * n, ..MatRef::new(gv, m, n) };
        let p = self.precision;
        let mut out = vec![None, None];
        if needs[0] {
            let bv = self.b.as_ref().expect("kept when A needs a gradient").tensor.view();
            let (r, c) = (d.a_rows, d.a_cols);
            let mut da = vec![0.0f32; d.batch * r * c];
            for_each_batch(&mut da, r * c, d.batch, |i, dai| {
                let mm = MatMut::new(dai, r, c);
                if d.trans_a {
                    // A stored [k, m]: dA = op(B) dC^T
                    gemm(1.0, d.b(bv, i), dc(i).t(), false, mm, p, false)
                } else {
                    // dA = dC op(B)^T
                    gemm(1.0, dc(i), d.b(bv, i).t(), false, mm, p, false)
                }
            });
            out[0] = Some(Tensor::new(da, &self.batched(r, c)));
        }
        if needs[1] {
            let av = self.a.as_ref().expect("kept when B needs a gradient").tensor.view();
            let (r, c) = (d.b_rows, d.b_cols);
            let one = |i: usize, acc: bool, dbi: &mut [f32], par: bool| {
                let mm = MatMut::new(dbi, r, c);
                if d.trans_b {
                    // B stored [n, k]: dB = dC^T op(A)
                    gemm(1.0, dc(i).t(), d.a(av, i), acc, mm, p, par)
                } else {
                    // dB = op(A)^T dC
                    gemm(1.0, d.a(av, i).t(), dc(i), acc, mm, p, par)
                }
            };
            let db = if d.b_shared {
                let mut db = vec![0.0f32; r * c];
                for i in 0..d.batch {
                    one(i, i > 0, &mut db, true);
                }
                db
            } else {
                let mut db = vec![0.0f32; d.batch * r * c];
                for_each_batch(&mut db, r * c, d.batch, |i, dbi| one(i, false, dbi, false));
                db
            };
            let shape = if d.b_shared { vec![r, c] } else { self.batched(r, c) };
            out[1] = Some(Tensor::new(db, &shape));
        }
        Ok(out)
    }

    fn saved(&self) -> Vec<&Saved> {
        self.a.iter().chain(self.b.iter()).collect()
    }
}

impl MatmulBackward {
    fn batched(&self, rows: usize, cols: usize) -> Vec<usize> {
        let mut s = self.batch_shape.clone();
        s.extend([rows, cols]);
        s
    }
}
