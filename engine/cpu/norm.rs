//! Row normalisations over the last dimension: LayerNorm and RMSNorm.
//!
//! Layout: `x[rows, d]` row-major, weight and bias `[d]`.
//! - LayerNorm (as PyTorch): `y = (x - mean) * rstd * w + b`, `rstd = 1 / sqrt(var + eps)`
//!   with the biased variance (divided by `d`), computed in two passes for stability.
//! - RMSNorm (LLaMA): `y = x * rstd * w`, `rstd = 1 / sqrt(mean(x^2) + eps)`.
//!
//! Forward returns the per-row statistics (LayerNorm: mean and rstd; RMSNorm: rstd). Backward
//! rebuilds `x_hat` from `x` and those statistics: `dx` needs x, the statistics and `w`; `dw`
//! needs x and the statistics; `db` needs only `dy`. Weight and bias gradients are column sums
//! in the fixed order of [`crate::engine::cpu::reduce`].

use crate::engine::cpu::reduce::sum_rows_with;
use crate::engine::cpu::rows::map_rows;
use crate::engine::real::Real;

/// Which gradients a norm's backward computes.
#[derive(Clone, Copy, Debug)]
pub struct NormNeeds {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

/// Gradients of a norm; `None` where not asked for.
pub struct NormGrads<T> {
    pub dx: Option<Vec<T>>,
    pub dw: Option<Vec<T>>,
    pub db: Option<Vec<T>>,
}

/// The inputs kept for a norm's backward. `x` and the statistics are needed for `dx` or `dw`;
/// `w` for `dx`.
pub struct NormSaved<'a, T> {
    pub x: Option<&'a [T]>,
    /// Per-row mean (LayerNorm only; empty for RMSNorm).
    pub mean: &'a [T],
    pub rstd: &'a [T],
    pub w: Option<&'a [T]>,
}

fn mean_of<T: Real>(v: impl Iterator<Item = T>, d: usize) -> T {
    v.sum::<T>() / T::from_f64(d as f64)
}

/// LayerNorm forward into `y`; returns `(mean, rstd)` per row. `d` must be non-zero.
pub fn layer_norm<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, eps: T, d: usize, y: &mut [T]) -> (Vec<T>, Vec<T>) {
    let rows = x.len() / d;
    let stats = map_rows(y, rows, d, |i, yr| {
        let xr = &x[i * d..(i + 1) * d];
        let mean = mean_of(xr.iter().copied(), d);
        let var = mean_of(xr.iter().map(|&v| (v - mean) * (v - mean)), d);
        let rstd = T::ONE / (var + eps).sqrt();
        for (j, o) in yr.iter_mut().enumerate() {
            *o = (xr[j] - mean) * rstd * w[j] + b.map_or(T::ZERO, |b| b[j]);
        }
        (mean, rstd)
    });
    stats.into_iter().unzip()
}

/// RMSNorm forward into `y`; returns `rstd` per row. `d` must be non-zero.
pub fn rms_norm<T: Real>(x: &[T], w: &[T], eps: T, d: usize, y: &mut [T]) -> Vec<T> {
    let rows = x.len() / d;
    map_rows(y, rows, d, |i, yr| {
        let xr = &x[i * d..(i + 1) * d];
        let rstd = T::ONE / (mean_of(xr.iter().map(|&v| v * v), d) + eps).sqrt();
        for (j, o) in yr.iter_mut().enumerate() {
            *o = xr[j] * rstd * w[j];
        }
        rstd
    })
}

/// LayerNorm backward:
/// `dx = rstd * (dy*w - mean(dy*w) - x_hat * mean(dy*w * x_hat))`, `dw = sum dy * x_hat`,
/// `db = sum dy`.
pub fn layer_norm_backward<T: Real>(dy: &[T], s: &NormSaved<T>, d: usize, needs: NormNeeds) -> NormGrads<T> {
    norm_backward(dy, s, d, needs, true)
}

/// RMSNorm backward: `dx = rstd * (dy*w - x_hat * mean(dy*w * x_hat))`, `dw = sum dy * x_hat`.
pub fn rms_norm_backward<T: Real>(dy: &[T], s: &NormSaved<T>, d: usize, needs: NormNeeds) -> NormGrads<T> {
    norm_backward(dy, s, d, NormNeeds { db: false, ..needs }, false)
}

fn norm_backward<T: Real>(dy: &[T], s: &NormSaved<T>, d: usize, needs: NormNeeds, centred: bool) -> NormGrads<T> {
    let rows = dy.len() / d;
    let x_hat = |i: usize, j: usize| {
        let x = s.x.expect("x is kept when dx or dw is needed");
        let mean = if centred { s.mean[i] } else { T::ZERO };
        (x[i * d + j] - mean) * s.rstd[i]
    };
    let dx = needs.dx.then(|| {
        let w = s.w.expect("w is kept when dx is needed");
        let mut dx = vec![T::ZERO; rows * d];
        map_rows(&mut dx, rows, d, |i, dxr| {
            let dyr = &dy[i * d..(i + 1) * d];
            let (mut sum_g, mut sum_gx) = (T::ZERO, T::ZERO);
            for j in 0..d {
                let g = dyr[j] * w[j];
                sum_g += g;
                sum_gx += g * x_hat(i, j);
            }
            let n = T::from_f64(d as f64);
            let (mean_g, mean_gx) = (if centred { sum_g / n } else { T::ZERO }, sum_gx / n);
            for (j, o) in dxr.iter_mut().enumerate() {
                *o = s.rstd[i] * (dyr[j] * w[j] - mean_g - x_hat(i, j) * mean_gx);
            }
        });
        dx
    });
    let dw = needs.dw.then(|| {
        sum_rows_with(rows, d, |i, acc| {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += dy[i * d + j] * x_hat(i, j);
            }
        })
    });
    let db = needs.db.then(|| crate::engine::cpu::reduce::sum_rows(dy, rows, d));
    NormGrads { dx, dw, db }
}
