//! f32 `exp`, `erf` and the standard normal CDF as branch-free polynomials, and [`simd`], which
//! compiles a loop for the widest vector unit the CPU has.
//!
//! Why: softmax (attention), GELU and its backward spend most of their time in `exp` and `erf`.
//! The C library's versions are scalar calls, so a loop over them cannot be vectorised; these are
//! plain arithmetic and bit moves (no calls, no branches: selects), which LLVM vectorises, and
//! [`simd`] lets it use AVX-512 or AVX2 where present without building for one CPU.
//!
//! Results do not depend on the vector width: each lane computes the same IEEE operations in the
//! same order, and Rust never contracts `a * b + c` into an FMA, so the scalar, AVX2 and AVX-512
//! builds give the same bits.
//!
//! Accuracy (tests below, against f64): `exp` within 2 ulp for normal results (results below
//! 2^-126 flush to 0); `erf` within 4 ulp for `|x| < 0.92` and 2^-23 past it; `normal_cdf`
//! within 2^-23, and in its left tail, where `0.5 (1 + erf(x / sqrt 2))` would lose every digit
//! to cancellation, within a relative 2e-4 down to x = -5.6. (PyTorch's vectorised CPU `erf`,
//! Abramowitz-Stegun 7.1.26, is within 1.5e-7.)
//! Coefficients: Cephes `expf` (Cody-Waite reduction, degree-6 polynomial); for `erf`, the
//! minimax polynomials of Arm's optimized-routines `erff`, their f32 values written in decimal:
//! `x + x P(x^2)` for `|x| < 0.921875`, `1 - exp(-(|x| + |x| Q(|x|)))` up to 4.

/// Above this `exp` overflows to infinity.
const EXP_HI: f32 = 88.722_84;
/// Below this `exp` is under the smallest normal float; the result is 0.
const EXP_LO: f32 = -87.336_54;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n * LN2_HI` is exact (Cody-Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds a float of magnitude under 2^22 to an integer (to nearest even).
const ROUNDER: f32 = 12_582_912.0;

/// `2^n` for an integer-valued `n` in [-126, 127], built in the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `e^x`. NaN gives NaN, -inf gives 0, +inf gives +inf.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI); // NaN stays NaN
    let t = xc * LOG2E + ROUNDER;
    let n = (t.to_bits() as i32) - (ROUNDER.to_bits() as i32);
    let nf = t - ROUNDER;
    let r = xc - nf * LN2_HI - nf * LN2_LO;
    let mut p = 0.00019875691f32;
    p = p * r + 0.0013982;
    p = p * r + 0.008333452;
    p = p * r + 0.041665796;
    p = p * r + 0.16666666;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n is in [-126, 128]: scale in two halves so that neither power leaves the normal range.
    let half = n >> 1;
    let y = y * pow2i(half) * pow2i(n - half);
    if x < EXP_LO {
        0.0
    } else if x > EXP_HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Where the two `erf` polynomials meet.
const ERF_SPLIT: f32 = 0.921_875;
/// From here on `erf(|x|)` rounds to 1 in f32.
const ERF_ONE: f32 = 4.0;

/// `(erf(a), 1 - erf(a))` for `a = |x|` (not NaN), each accurate where it is the larger term.
#[inline(always)]
fn erf_parts(a: f32) -> (f32, f32) {
    // |x| < 0.921875: erf = a + a P(a^2).
    let s = a * a;
    let mut p = -0.00059910497f32;
    p = p * s + 0.004993396;
    p = p * s - 0.026766734;
    p = p * s + 0.112818025;
    p = p * s - 0.37612486;
    p = p * s + 0.12837915;
    let small = a + a * p;
    // 0.921875 <= |x| < 4: erfc = exp(-(a + a Q(a))).
    let b = if a < ERF_ONE { a } else { ERF_ONE };
    let mut q = 1.7294893e-05f32;
    q = q * b - 0.00038320868;
    q = q * b + 0.0038839343;
    q = q * b - 0.02425456;
    q = q * b + 0.10677785;
    q = q * b + 0.6348467;
    q = q * b + 0.12871751;
    let tail = exp(-(b + b * q));
    if a < ERF_SPLIT {
        (small, 1.0 - small)
    } else if a < ERF_ONE {
        (1.0 - tail, tail)
    } else {
        (1.0, 0.0)
    }
}

/// The error function.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let (e, _) = erf_parts(x.abs());
    let y = if x < 0.0 { -e } else { e };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// `Phi(x) = 0.5 (1 + erf(x / sqrt 2))`, the CDF of the standard normal distribution, with its
/// left tail computed as `0.5 erfc(|x| / sqrt 2)` so that it keeps its relative accuracy.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    let (_, c) = erf_parts(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
    let upper = 0.5 * c;
    let y = if x < 0.0 { upper } else { 1.0 - upper };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// Runs `f` compiled for AVX-512 or AVX2 + FMA when the CPU has them, so that the loops inside it
/// (which must be inlined into `f`: plain loops over slices and `#[inline]` helpers) vectorise to
/// that width. Results are the same bits on every path (see the module comment).
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        let level = *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq") {
                2
            } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                1
            } else {
                0
            }
        });
        // SAFETY: each branch runs only when the CPU reported the features it enables.
        match level {
            2 => return unsafe { run_avx512(f) },
            1 => return unsafe { run_avx2(f) },
            _ => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `row[i] = exp(row[i] - m)` in place; returns the sum of the results (summed in 16 lanes, then
/// across them, a fixed order).
#[inline(always)]
pub fn exp_shifted_sum(row: &mut [f32], m: f32) -> f32 {
    simd(#[inline(always)] || {
        let mut lanes = [0.0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for (v, l) in c.iter_mut().zip(lanes.iter_mut()) {
                *v = exp(*v - m);
                *l += *v;
            }
        }
        let rest = chunks.into_remainder();
        for (v, l) in rest.iter_mut().zip(lanes.iter_mut()) {
            *v = exp(*v - m);
            *l += *v;
        }
        lanes.iter().sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distance in units in the last place of `want` (rounded to f32).
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        if got == w {
            return 0.0;
        }
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    /// Every 97th float between `lo` and `hi` (by bit pattern, both signs as given).
    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let (a, b) = (lo.to_bits(), hi.to_bits());
        (a.min(b)..=a.max(b)).step_by(97).map(f32::from_bits)
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_normal_range() {
        let mut worst: f64 = 0.0;
        for x in sweep(0.0, EXP_HI).chain(sweep(-0.0, EXP_LO)) {
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_and_the_normal_cdf_match_f64() {
        // erf: within 4 ulp near 0, where its values are small; within 2^-23 (an ulp of 1) past it.
        for x in sweep(0.0, 0.92).chain(sweep(-0.0, -0.92)) {
            assert!(ulps(erf(x), libm::erf(x as f64)) <= 4.0, "erf({x})");
        }
        for x in sweep(0.92, 6.0).chain(sweep(-0.92, -6.0)) {
            assert!((erf(x) as f64 - libm::erf(x as f64)).abs() <= 1.2e-7, "erf({x})");
        }
        // Phi: within 2^-23 everywhere; in the left tail relative error 2e-4 or better down to
        // x = -5.6 (Phi ~ 1e-8), where 0.5 (1 + erf) has no correct digit left.
        for x in sweep(0.0, 8.0).chain(sweep(-0.0, -5.6)) {
            let want = 0.5 * libm::erfc(-(x as f64) / std::f64::consts::SQRT_2);
            let got = normal_cdf(x) as f64;
            assert!((got - want).abs() <= 1.2e-7, "normal_cdf({x}) = {got}, want {want}");
            if x < 0.0 {
                assert!((got / want - 1.0).abs() <= 2e-4, "normal_cdf({x}) = {got}, want {want}");
            }
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert!(erf(f32::NAN).is_nan() && normal_cdf(f32::NAN).is_nan());
        assert_eq!(normal_cdf(f32::INFINITY), 1.0);
        assert_eq!(normal_cdf(f32::NEG_INFINITY), 0.0);
    }

    proptest! {
        #[test]
        fn exp_shifted_sum_matches_the_scalar_loop(row in proptest::collection::vec(-30.0f32..30.0, 0..100), m in -5.0f32..5.0) {
            let mut fast = row.clone();
            let z = exp_shifted_sum(&mut fast, m);
            let want: Vec<f32> = row.iter().map(|&v| exp(v - m)).collect();
            prop_assert_eq!(&fast, &want);
            let z64: f64 = want.iter().map(|&v| v as f64).sum();
            prop_assert!(((z as f64) - z64).abs() <= 1e-5 * z64.max(1e-30));
        }

        #[test]
        fn exp_is_close_to_f64_anywhere(x in -87.0f32..88.0) {
            prop_assert!(ulps(exp(x), (x as f64).exp()) <= 2.0);
        }
    }
}
