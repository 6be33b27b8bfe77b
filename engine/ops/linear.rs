//! Linear layer: `y = x W^T + b`, with W stored `[out, in]` as in Hugging Face checkpoints.
//!
//! Forward: a few rows (decoding steps) go through [`gemv`], which reads the weights in place;
//! more go through the blocked [`gemm`].
//!
//! Backward computes only what is needed: with a frozen W, only `dx = dy W` (W is kept, x is
//! not); with a frozen input (the first trainable layer), only `dW = dy^T x` and `db`.

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::cpu::gemv::{gemv, gemv_supported};
use crate::engine::cpu::reduce::sum_rows;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

/// `x`: `[..., in]`, `w`: `[out, in]`, `b`: `[out]`; returns `[..., out]`.
pub fn linear(tape: &mut Tape, x: &Var, w: &Var, b: Option<&Var>, precision: Precision) -> Result<Var> {
    let (n, din) = rows_cols(x.value());
    let [dout, win] = w.shape() else {
        return Err(Error::shape("linear", format!("weight must be [out, in], found {:?}", w.shape())));
    };
    let (dout, win) = (*dout, *win);
    if win != din {
        return Err(Error::shape("linear", format!("input {:?} does not fit weight {:?}", x.shape(), w.shape())));
    }
    if let Some(b) = b {
        b.value().expect_shape("linear bias", &[dout])?;
    }
    let mut y = vec![0.0f32; n * dout];
    if let Some(b) = b {
        let bv = b.value().to_f32_cow();
        for row in y.chunks_mut(dout.max(1)) {
            row.copy_from_slice(&bv);
        }
    }
    if gemv_supported(n, &w.value().view(), precision) {
        // A few rows (decoding): one pass over the weights, no packing.
        gemv(&x.value().to_f32_cow(), n, din, w.value().view(), dout, &mut y, b.is_some(), precision, true);
    } else {
        gemm(
            1.0,
            MatRef::new(x.value().view(), n, din),
            MatRef::new(w.value().view(), dout, din).t(),
            b.is_some(),
            MatMut::new(&mut y, n, dout),
            precision,
            true,
        );
    }
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().expect("rank checked by rows_cols") = dout;
    let value = Tensor::new(y, &out_shape);
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(tape.record(value, &inputs, |needs| {
        Box::new(LinearBackward {
            // dW needs x; dx needs W.
            x: needs[1].then(|| x.save()),
            w: needs[0].then(|| w.save()),
            n,
            din,
            dout,
            precision,
        })
    }))
}

/// Rows and columns of a tensor seen as `[rows, last dim]`.
pub(crate) fn rows_cols(t: &Tensor) -> (usize, usize) {
    let c = t.last_dim();
    (if c == 0 { 0 } else { t.numel() / c }, c)
}

struct LinearBackward {
    x: Option<Saved>,
    w: Option<Saved>,
    n: usize,
    din: usize,
    dout: usize,
    precision: Precision,
}

impl Backward for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (n, din, dout) = (self.n, self.din, self.dout);
        let gy = MatRef::new(g.view(), n, dout);
        let mut out = vec![None; needs.len()];
        if needs[0] {
            let w = &self.w.as_ref().expect("kept when x needs a gradient").tensor;
            let mut dx = vec![0.0f32; n * din];
            gemm(1.0, gy, MatRef::new(w.view(), dout, din), false, MatMut::new(&mut dx, n, din), self.precision, true);
            let mut shape = g.shape().to_vec();
            *shape.last_mut().expect("rank >= 1") = din;
            out[0] = Some(Tensor::new(dx, &shape));
        }
        if needs[1] {
            let x = &self.x.as_ref().expect("kept when W needs a gradient").tensor;
            let mut dw = vec![0.0f32; dout * din];
            gemm(1.0, gy.t(), MatRef::new(x.view(), n, din), false, MatMut::new(&mut dw, dout, din), self.precision, true);
            out[1] = Some(Tensor::new(dw, &[dout, din]));
        }
        if needs.len() > 2 && needs[2] {
            out[2] = Some(Tensor::new(sum_rows(g.f32s(), n, dout), &[dout]));
        }
        Ok(out)
    }

    fn saved(&self) -> Vec<&Saved> {
        self.x.iter().chain(self.w.iter()).collect()
    }
}
