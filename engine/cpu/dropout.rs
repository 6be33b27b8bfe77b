//! Inverted dropout: `y = x * keep / (1 - p)`, with `keep` drawn from the counter RNG.
//!
//! Layout: flat; element `i` is kept when `rng::uniform(seed, stream, i) >= p`, so the mask is a
//! pure function of (seed, stream, element index): independent of the thread count, and
//! regenerated in backward instead of stored (backward keeps nothing). Dropout is linear in `x`
//! with that mask, so the backward is the same function applied to `dy`.

use crate::engine::cpu::rows::for_each_chunk;
use crate::engine::cpu::vmath::simd;
use crate::engine::real::Real;
use crate::engine::rng;

/// Whether element `index` survives dropout with probability `p`.
#[inline]
pub fn kept(seed: u64, stream: u64, index: u64, p: f32) -> bool {
    rng::uniform(seed, stream, index) >= p
}

/// `y = x * mask / (1 - p)`; with `p = 1` every element is dropped (zeros, never inf * 0).
/// Also the backward: `dx = dropout(dy)` with the same seed and stream.
pub fn dropout<T: Real>(x: &[T], p: f32, seed: u64, stream: u64, y: &mut [T]) {
    let scale = T::from_f64(1.0 / (1.0 - p as f64));
    let rng = rng::Stream::new(seed, stream);
    for_each_chunk(y, |start, yc| {
        simd(#[inline(always)] || {
            for (k, (o, &xv)) in yc.iter_mut().zip(&x[start..]).enumerate() {
                *o = if rng.uniform((start + k) as u64) >= p { xv * scale } else { T::ZERO };
            }
        })
    });
}
