//! The AdamW update of one parameter, element by element, with torch's f32 arithmetic.
//!
//! torch.optim.AdamW (single-tensor path, amsgrad off) runs one CPU kernel per line below, each
//! computing in f32 with its scalar operand rounded from the Python float to f32:
//!
//! ```text
//! p = p * f32(1 - lr * wd)                      param.mul_(1 - lr * weight_decay)
//! m = lerp(m, g, f32(1 - beta1))                exp_avg.lerp_(grad, 1 - beta1)
//! v = v * f32(beta2)                            exp_avg_sq.mul_(beta2)
//! v = fma(f32(1 - beta2) * g, g, v)             exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
//! d = sqrt(v) / f32(sqrt(bc2)) + f32(eps)       (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
//! p = p + (f32(-step_size) * m) / d             param.addcdiv_(exp_avg, denom, value=-step_size)
//! ```
//!
//! where `lerp(a, b, w) = fma(w, b - a, a)` for `|w| < 0.5` and `fma(w - 1, b - a, b)` otherwise.
//! The fused multiply-adds are what torch's AVX2/AVX-512 builds execute: its lerp calls `fmadd`
//! explicitly, and GCC contracts `self + value * t1 * t2` in addcmul (the fixture made by
//! tests/reference/make_optim_fixtures.py matches only with both fused). Rust's `mul_add` is
//! always a correctly rounded fma (one instruction where the CPU has FMA, libm otherwise), so the
//! result is the same on every machine.
//!
//! One deliberate difference: the square root here is IEEE's (correctly rounded, one
//! instruction). torch's CPU sqrt is not (on the machine that wrote the fixture ~16% of f32
//! results are 1 ulp off), and cannot be reproduced portably; the tests match torch bit for bit
//! when its sqrt is replaced by the IEEE one, and stock torch within 1 ulp after ten steps.
//!
//! Each element is independent: parameters are split into fixed chunks updated in parallel, and
//! the result cannot depend on the thread count.

use rayon::prelude::*;

/// Elements per parallel work unit.
pub const UPDATE_CHUNK: usize = 1 << 14;

/// The per-step scalars, already rounded to f32 as torch rounds them.
#[derive(Clone, Copy, Debug)]
pub struct Coeffs {
    /// `1 - lr * weight_decay` (1 when the parameter has no weight decay).
    pub decay: f32,
    /// `1 - beta1`: the lerp weight of the first moment.
    pub lerp_weight: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `sqrt(1 - beta2^step)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `-lr / (1 - beta1^step)`.
    pub neg_step_size: f32,
}

impl Coeffs {
    /// The scalars of update number `step` (1 for the first), computed in f64 as Python does
    /// (`beta ** step` and `x ** 0.5` are libm's `pow`, as CPython's float power is).
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, step: u64) -> Coeffs {
        let step = step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = lr / bias_correction1;
        Coeffs {
            decay: if weight_decay != 0.0 { (1.0 - lr * weight_decay) as f32 } else { 1.0 },
            lerp_weight: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            eps: eps as f32,
            neg_step_size: (-step_size) as f32,
        }
    }
}

/// Updates `p`, `m` and `v` in place from the gradient `g` (all of the same length).
pub fn adamw_update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    assert!(m.len() == p.len() && v.len() == p.len() && g.len() == p.len(), "adamw_update: length mismatch");
    if p.len() <= UPDATE_CHUNK {
        update_chunk(p, m, v, g, k);
        return;
    }
    p.par_chunks_mut(UPDATE_CHUNK)
        .zip(m.par_chunks_mut(UPDATE_CHUNK))
        .zip(v.par_chunks_mut(UPDATE_CHUNK))
        .zip(g.par_chunks(UPDATE_CHUNK))
        .for_each(|(((p, m), v), g)| update_chunk(p, m, v, g, k));
}

fn update_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { update_chunk_fma(p, m, v, g, k) };
        return;
    }
    update_elements(p, m, v, g, k);
}

/// The same loop compiled with FMA and AVX2, so that `mul_add` is one instruction and the loop
/// vectorises (element-wise, so vectorising changes no result).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_chunk_fma(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    update_elements(p, m, v, g, k);
}

#[inline(always)]
fn update_elements(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    if k.lerp_weight.abs() < 0.5 {
        update_loop::<true>(p, m, v, g, k)
    } else {
        update_loop::<false>(p, m, v, g, k)
    }
}

#[inline(always)]
fn update_loop<const SMALL_WEIGHT: bool>(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    let n = p.len();
    let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
    for i in 0..n {
        let gi = g[i];
        let pi = p[i] * k.decay;
        let diff = gi - m[i];
        let mi = if SMALL_WEIGHT {
            k.lerp_weight.mul_add(diff, m[i])
        } else {
            (k.lerp_weight - 1.0).mul_add(diff, gi)
        };
        let vi = (k.one_minus_beta2 * gi).mul_add(gi, v[i] * k.beta2);
        let denom = vi.sqrt() / k.bias_correction2_sqrt + k.eps;
        p[i] = pi + (k.neg_step_size * mi) / denom;
        m[i] = mi;
        v[i] = vi;
    }
}
