//! Rotary position embedding (RoPE), LLaMA's "rotate half" form as transformers computes it.
//!
//! For a row of `heads` heads of `d` values at position `p`, each head's pair `(x_i, x_{i+d/2})`
//! (i < d/2) is rotated by the angle `p * inv_freq_i`, `inv_freq_i = theta^(-2i/d)`:
//!
//! ```text
//! y_i       = x_i * cos - x_{i+d/2} * sin
//! y_{i+d/2} = x_{i+d/2} * cos + x_i * sin
//! ```
//!
//! Backward is the inverse rotation (the transpose): `dx_i = dy_i cos + dy_{i+d/2} sin`,
//! `dx_{i+d/2} = dy_{i+d/2} cos - dy_i sin`. Angles follow transformers' f32 arithmetic: the
//! inverse frequencies are rounded to f32, the angle is their f32 product with the position,
//! and its cosine and sine are rounded to f32 from f64 (torch's `cos`/`sin` are within an ulp).

use crate::engine::cpu::rows::map_rows;
use crate::engine::real::Real;

/// The rotary angles of one model: `d/2` inverse frequencies.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeFreqs {
    pub inv_freq: Vec<f32>,
}

impl RopeFreqs {
    /// `theta^(-2i/d)` for `i < d/2` (`d` even), as transformers'
    /// `1 / theta ** (arange(0, d, 2) / d)` rounded to f32.
    pub fn new(theta: f64, head_dim: usize) -> RopeFreqs {
        let inv_freq = (0..head_dim / 2).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        RopeFreqs { inv_freq }
    }

    pub fn half(&self) -> usize {
        self.inv_freq.len()
    }

    /// cos and sin of the angles at `positions`: two `[positions, d/2]` tables.
    pub fn tables<T: Real>(&self, positions: &[u32]) -> (Vec<T>, Vec<T>) {
        let h = self.half();
        let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * h), Vec::with_capacity(positions.len() * h));
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = (p as f32 * f) as f64;
                cos.push(T::from_f64(angle.cos() as f32 as f64));
                sin.push(T::from_f64(angle.sin() as f32 as f64));
            }
        }
        (cos, sin)
    }
}

/// Rotates `x` (`rows` rows of `heads * 2 * half` values, row `r` at table row `r`) into `y`;
/// with `inverse`, rotates by the negative angle (the backward).
pub fn rope<T: Real>(x: &[T], cos: &[T], sin: &[T], heads: usize, half: usize, inverse: bool, y: &mut [T]) {
    let width = heads * 2 * half;
    let rows = x.len().checked_div(width).unwrap_or(0);
    map_rows(y, rows, width, |r, yr| {
        let xr = &x[r * width..(r + 1) * width];
        let (c, s) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
        for h in 0..heads {
            let base = h * 2 * half;
            for i in 0..half {
                let (a, b) = (xr[base + i], xr[base + half + i]);
                let sn = if inverse { -s[i] } else { s[i] };
                yr[base + i] = a * c[i] - b * sn;
                yr[base + half + i] = b * c[i] + a * sn;
            }
        }
    });
}
