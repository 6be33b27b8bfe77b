//! Element-wise activations: GELU (erf and tanh forms), SiLU, SwiGLU (`silu(gate) * up`), and
//! tanh (prefix tuning's reparameterisation MLP).
//!
//! Layout: any shape, flat slices. Backward keeps the activation's input (GELU, SiLU: `x`;
//! SwiGLU: `gate`, plus `up` when the gate needs a gradient) and recomputes the derivative
//! from it, which is cheaper in memory than keeping the derivative.

use crate::engine::cpu::rows::for_each_chunk;
use crate::engine::cpu::vmath::simd;
use crate::engine::real::Real;

/// The two GELU formulas of the Hugging Face checkpoints: `"gelu"` (erf) and
/// `"gelu_new"`/`"gelu_pytorch_tanh"` (tanh approximation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Erf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Tanh,
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
const TANH_CUBIC: f64 = 0.044715;

/// GELU and its derivative at `x`. Inlined into loops that match on `kind` outside them.
#[inline(always)]
fn gelu_and_grad<T: Real>(kind: GeluKind, x: T) -> (T, T) {
    let half = T::from_f64(0.5);
    match kind {
        GeluKind::Erf => {
            let cdf = x.normal_cdf();
            let pdf = T::from_f64(INV_SQRT_2PI) * (-half * x * x).exp();
            (x * cdf, cdf + x * pdf)
        }
        GeluKind::Tanh => {
            let c = T::from_f64(TANH_CUBIC);
            let t = (T::from_f64(SQRT_2_OVER_PI) * (x + c * x * x * x)).tanh();
            let sech2 = T::ONE - t * t;
            // Where tanh has saturated, x^2 may have overflowed: 0 * inf would give NaN.
            let inner = if sech2 == T::ZERO {
                T::ZERO
            } else {
                half * x * sech2 * T::from_f64(SQRT_2_OVER_PI) * (T::ONE + T::from_f64(3.0) * c * x * x)
            };
            (half * x * (T::ONE + t), half * (T::ONE + t) + inner)
        }
    }
}

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    // exp(-x) overflows to inf for very negative x, giving exactly 0: never NaN.
    T::ONE / (T::ONE + (-x).exp())
}

/// `silu(x)` and its derivative `s (1 + x (1 - s))`, `s = sigmoid(x)`.
#[inline(always)]
fn silu_and_grad<T: Real>(x: T) -> (T, T) {
    let s = sigmoid(x);
    (x * s, s * (T::ONE + x * (T::ONE - s)))
}

// The loops run inside `simd` so that they vectorise, `exp` and `erf` included (`vmath`).
fn map1<T: Real>(x: &[T], y: &mut [T], f: impl Fn(T) -> T + Sync + Send + Copy) {
    for_each_chunk(y, |start, yc| {
        simd(#[inline(always)] || {
            for (o, &xv) in yc.iter_mut().zip(&x[start..]) {
                *o = f(xv);
            }
        })
    });
}

fn map2<T: Real>(a: &[T], b: &[T], y: &mut [T], f: impl Fn(T, T) -> T + Sync + Send + Copy) {
    for_each_chunk(y, |start, yc| {
        simd(#[inline(always)] || {
            for ((o, &av), &bv) in yc.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                *o = f(av, bv);
            }
        })
    });
}

pub fn gelu<T: Real>(kind: GeluKind, x: &[T], y: &mut [T]) {
    match kind {
        GeluKind::Erf => map1(x, y, #[inline(always)] |v| gelu_and_grad(GeluKind::Erf, v).0),
        GeluKind::Tanh => map1(x, y, #[inline(always)] |v| gelu_and_grad(GeluKind::Tanh, v).0),
    }
}

/// `dx = dy * gelu'(x)`.
pub fn gelu_backward<T: Real>(kind: GeluKind, x: &[T], dy: &[T], dx: &mut [T]) {
    match kind {
        GeluKind::Erf => map2(x, dy, dx, #[inline(always)] |v, g| g * gelu_and_grad(GeluKind::Erf, v).1),
        GeluKind::Tanh => map2(x, dy, dx, #[inline(always)] |v, g| g * gelu_and_grad(GeluKind::Tanh, v).1),
    }
}

pub fn relu<T: Real>(x: &[T], y: &mut [T]) {
    map1(x, y, #[inline(always)] |v| v.max(T::ZERO));
}

/// `dx = dy` where `x > 0`, else 0 (the derivative at 0 taken as 0, as PyTorch does).
pub fn relu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) {
    map2(x, dy, dx, #[inline(always)] |v, g| if v > T::ZERO { g } else { T::ZERO });
}

pub fn silu<T: Real>(x: &[T], y: &mut [T]) {
    map1(x, y, #[inline(always)] |v| silu_and_grad(v).0);
}

/// `dx = dy * silu'(x)`.
pub fn silu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) {
    map2(x, dy, dx, #[inline(always)] |v, g| g * silu_and_grad(v).1);
}

pub fn tanh<T: Real>(x: &[T], y: &mut [T]) {
    map1(x, y, #[inline(always)] |v| v.tanh());
}

/// `dx = dy * (1 - tanh(x)^2)`. Saturated inputs give an exact zero, never NaN.
pub fn tanh_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) {
    map2(x, dy, dx, #[inline(always)] |v, g| {
        let t = v.tanh();
        g * (T::ONE - t * t)
    });
}

/// `y = silu(gate) * up`.
pub fn swiglu<T: Real>(gate: &[T], up: &[T], y: &mut [T]) {
    map2(gate, up, y, #[inline(always)] |g, u| silu_and_grad(g).0 * u);
}

/// Gradient of the gate: `dgate = dy * up * silu'(gate)`.
pub fn swiglu_backward_gate<T: Real>(gate: &[T], up: &[T], dy: &[T], dgate: &mut [T]) {
    for_each_chunk(dgate, |start, dc| {
        simd(#[inline(always)] || {
            for (k, o) in dc.iter_mut().enumerate() {
                let i = start + k;
                *o = dy[i] * up[i] * silu_and_grad(gate[i]).1;
            }
        })
    });
}

/// Gradient of the up projection: `dup = dy * silu(gate)`.
pub fn swiglu_backward_up<T: Real>(gate: &[T], dy: &[T], dup: &mut [T]) {
    map2(gate, dy, dup, #[inline(always)] |g, d| d * silu_and_grad(g).0);
}
