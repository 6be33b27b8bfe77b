//! LayerNorm and RMSNorm over the last dimension of `x: [..., d]`, with weight (and, for
//! LayerNorm, optional bias) `[d]`. See [`crate::engine::cpu::norm`] for the formulas.
//!
//! What backward keeps, by what is trained:
//! - `x` needs a gradient: x, the per-row statistics (mean/rstd, 2 x rows f32) and `w`;
//! - only `w` is trained: x and the statistics (to rebuild `x_hat`), not `w`;
//! - only the bias is trained: nothing (`db` is the column sum of `dy`).

use std::borrow::Cow;

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::norm::{self as k, NormNeeds, NormSaved};
use crate::engine::error::{Error, Result};
use crate::engine::ops::linear::rows_cols;
use crate::engine::tensor::Tensor;

/// PyTorch's `layer_norm(x, [d], w, b, eps)`.
pub fn layer_norm(tape: &mut Tape, x: &Var, w: &Var, b: Option<&Var>, eps: f32) -> Result<Var> {
    let (rows, d) = check("layer_norm", x, w, b)?;
    let mut y = vec![0.0f32; rows * d];
    let bias = b.map(|b| b.value().to_f32_cow());
    let (mean, rstd) = k::layer_norm(&x.value().to_f32_cow(), &w.value().to_f32_cow(), bias.as_deref(), eps, d, &mut y);
    let value = Tensor::new(y, x.shape());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(tape.record(value, &inputs, |needs| {
        let keep_x = needs[0] || needs[1];
        Box::new(NormBackward {
            name: "layer_norm",
            layer: true,
            x: keep_x.then(|| x.save()),
            mean: keep_x.then(|| Saved::activation(Tensor::new(mean, &[rows]))),
            rstd: keep_x.then(|| Saved::activation(Tensor::new(rstd, &[rows]))),
            w: needs[0].then(|| w.save()),
            d,
        })
    }))
}

/// LLaMA's RMSNorm: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(tape: &mut Tape, x: &Var, w: &Var, eps: f32) -> Result<Var> {
    let (rows, d) = check("rms_norm", x, w, None)?;
    let mut y = vec![0.0f32; rows * d];
    let rstd = k::rms_norm(&x.value().to_f32_cow(), &w.value().to_f32_cow(), eps, d, &mut y);
    let value = Tensor::new(y, x.shape());
    Ok(tape.record(value, &[x, w], |needs| {
        let keep_x = needs[0] || needs[1];
        Box::new(NormBackward {
            name: "rms_norm",
            layer: false,
            x: keep_x.then(|| x.save()),
            mean: None,
            rstd: keep_x.then(|| Saved::activation(Tensor::new(rstd, &[rows]))),
            w: needs[0].then(|| w.save()),
            d,
        })
    }))
}

fn check(op: &'static str, x: &Var, w: &Var, b: Option<&Var>) -> Result<(usize, usize)> {
    let (rows, d) = rows_cols(x.value());
    if x.value().rank() == 0 || d == 0 {
        return Err(Error::shape(op, format!("input {:?} has no dimension to normalise", x.shape())));
    }
    if w.shape() != [d] {
        return Err(Error::shape(op, format!("weight {:?} does not fit input {:?}", w.shape(), x.shape())));
    }
    if let Some(b) = b.filter(|b| b.shape() != [d]) {
        return Err(Error::shape(op, format!("bias {:?} does not fit input {:?}", b.shape(), x.shape())));
    }
    Ok((rows, d))
}

struct NormBackward {
    name: &'static str,
    /// LayerNorm (centred, with bias) rather than RMSNorm.
    layer: bool,
    x: Option<Saved>,
    mean: Option<Saved>,
    rstd: Option<Saved>,
    w: Option<Saved>,
    d: usize,
}

impl Backward for NormBackward {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        fn cow(s: &Option<Saved>) -> Option<Cow<'_, [f32]>> {
            s.as_ref().map(|s| s.tensor.to_f32_cow())
        }
        let (x, mean, rstd, w) = (cow(&self.x), cow(&self.mean), cow(&self.rstd), cow(&self.w));
        let saved = NormSaved {
            x: x.as_deref(),
            mean: mean.as_deref().unwrap_or(&[]),
            rstd: rstd.as_deref().unwrap_or(&[]),
            w: w.as_deref(),
        };
        let want = NormNeeds { dx: needs[0], dw: needs[1], db: needs.get(2).copied().unwrap_or(false) };
        let gv = g.to_f32_cow();
        let grads = if self.layer {
            k::layer_norm_backward(&gv, &saved, self.d, want)
        } else {
            k::rms_norm_backward(&gv, &saved, self.d, want)
        };
        let mut out = vec![grads.dx.map(|v| Tensor::new(v, g.shape())), grads.dw.map(|v| Tensor::new(v, &[self.d]))];
        if needs.len() > 2 {
            out.push(grads.db.map(|v| Tensor::new(v, &[self.d])));
        }
        Ok(out)
    }

    fn saved(&self) -> Vec<&Saved> {
        [&self.x, &self.mean, &self.rstd, &self.w].into_iter().flatten().collect()
    }
}
