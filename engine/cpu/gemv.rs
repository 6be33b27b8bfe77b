//! Products of a few rows by a weight matrix: `Y (+)= X W^T`, X `[m, k]` f32 with m small
//! (decoding steps: one row per sequence), W `[n, k]` row-major as checkpoints store linear
//! weights, in f32, bf16 or f16; Y `[m, n]` f32.
//!
//! Why not [`gemm`](super::gemm::gemm): the blocked product packs W into panels before it
//! multiplies, which for m = 1..16 rows means copying the whole weight matrix to multiply it
//! once; a decoding step is then dominated by packing. Here each weight row is read once, in
//! place, and multiplied with every row of X while it is in L1: the step becomes a single pass
//! over the weights, the floor for memory-bound decoding.
//!
//! Kernel: a block of 4 weight rows against up to 4 rows of X, 16 accumulators of 16 lanes
//! (zmm), k in steps of 16 (masked loads for the tail); each accumulator is summed across lanes
//! at the end. Every output element is summed over k in the same order whatever the thread
//! count, so results are deterministic; the order differs from gemm's, so values agree with it
//! to rounding, not bit for bit. With [`Precision::Bf16`] the rows of X are rounded to bf16
//! first and W must be stored bf16 (the products of bf16 values are exact in f32), as gemm
//! computes that precision; other combinations are left to gemm ([`gemv_supported`]).

use half::{bf16, f16};
use rayon::prelude::*;

use super::gemm::Precision;
use crate::engine::tensor::View;

/// The most rows of X this path takes; above, gemm's packing pays for itself.
pub const GEMV_MAX_ROWS: usize = 16;

/// Weight rows per parallel task (a task should stream a few hundred KiB of weights).
const ROWS_PER_TASK: usize = 64;

/// Whether [`gemv`] computes this product (else call gemm).
pub fn gemv_supported(m: usize, w: &View<'_>, precision: Precision) -> bool {
    m <= GEMV_MAX_ROWS && (precision == Precision::F32 || matches!(w, View::BF16(_)))
}

/// `y[i * n + j] (+)= sum_k x[i * k + kk] * w[j * k + kk]` for `i < m`, `j < n`.
///
/// Panics if the slices are shorter than the shapes say or the product is not
/// [`gemv_supported`].
pub fn gemv(x: &[f32], m: usize, k: usize, w: View<'_>, n: usize, y: &mut [f32], accumulate: bool, precision: Precision, parallel: bool) {
    assert!(gemv_supported(m, &w, precision), "gemv: {m} rows in {precision:?} with {:?} weights", w.dtype());
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n, "gemv: operands shorter than [{m}, {k}] x [{n}, {k}]^T");
    let rounded: Vec<f32>;
    let x = if precision == Precision::Bf16 {
        rounded = x[..m * k].iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
        &rounded[..]
    } else {
        &x[..m * k]
    };
    // Each task computes a block of weight rows for every row of X, into `[rows, m]`.
    let task = |j0: usize| -> Vec<f32> {
        let rows = ROWS_PER_TASK.min(n - j0);
        let mut out = vec![0.0f32; rows * m];
        block(x, m, k, &w, j0, rows, &mut out);
        out
    };
    let starts: Vec<usize> = (0..n).step_by(ROWS_PER_TASK).collect();
    let blocks: Vec<Vec<f32>> = if parallel && n * k >= 1 << 16 && starts.len() > 1 {
        starts.par_iter().map(|&j0| task(j0)).collect()
    } else {
        starts.iter().map(|&j0| task(j0)).collect()
    };
    for (&j0, out) in starts.iter().zip(&blocks) {
        let rows = out.len() / m.max(1);
        for i in 0..m {
            let dst = &mut y[i * n + j0..i * n + j0 + rows];
            for (r, d) in dst.iter_mut().enumerate() {
                let v = out[r * m + i];
                *d = if accumulate { *d + v } else { v };
            }
        }
    }
}

/// Weight rows `j0..j0+rows` against all of X, into `out[r * m + i]`.
fn block(x: &[f32], m: usize, k: usize, w: &View<'_>, j0: usize, rows: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has the features `block` enables; the slice bounds were checked by `gemv`.
        unsafe {
            match w {
                View::F32(s) => avx512::block(x, m, k, &s[j0 * k..(j0 + rows) * k], rows, out),
                View::BF16(s) => avx512::block(x, m, k, &s[j0 * k..(j0 + rows) * k], rows, out),
                View::F16(s) => avx512::block(x, m, k, &s[j0 * k..(j0 + rows) * k], rows, out),
            }
        }
        return;
    }
    let mut wrow = vec![0.0f32; k];
    for r in 0..rows {
        w.copy_to_f32((j0 + r) * k, &mut wrow);
        for i in 0..m {
            out[r * m + i] = dot(&x[i * k..(i + 1) * k], &wrow);
        }
    }
}

/// A dot product in 16 partial sums (the compiler vectorises it), for CPUs without AVX-512.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    for (l, (x, y)) in ta.iter().zip(tb).enumerate() {
        acc[l] = x.mul_add(*y, acc[l]);
    }
    acc.iter().sum()
}

/// A weight element type the AVX-512 kernel widens to f32.
trait Weight: Copy {
    /// # Safety
    /// AVX-512F; `p` points at 16 readable elements where the lanes of `mask` are set.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, mask: u16) -> std::arch::x86_64::__m512;
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{bf16, f16, Weight};

    pub fn available() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("f16c")
        })
    }

    impl Weight for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32, mask: u16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }
    impl Weight for bf16 {
        /// bf16 is the top half of an f32: widen to 32 bits and shift.
        #[inline(always)]
        unsafe fn load16(p: *const bf16, mask: u16) -> __m512 {
            let h = _mm256_maskz_loadu_epi16(mask, p as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    impl Weight for f16 {
        #[inline(always)]
        unsafe fn load16(p: *const f16, mask: u16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    /// `R` weight rows (`w`, row stride k) against `M` rows of X (row stride k): `out[r * ldo +
    /// i]` for r < R, i < M.
    #[inline(always)]
    unsafe fn tile<T: Weight, const M: usize, const R: usize>(x: *const f32, k: usize, w: *const T, out: *mut f32, ldo: usize) {
        let mut acc = [[_mm512_setzero_ps(); R]; M];
        let mut kk = 0;
        while kk < k {
            let mask: u16 = if k - kk >= 16 { 0xffff } else { ((1u32 << (k - kk)) - 1) as u16 };
            let mut wv = [_mm512_setzero_ps(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = T::load16(w.add(r * k + kk), mask);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add(i * k + kk));
                for (a, v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, *v, *a);
                }
            }
            kk += 16;
        }
        for (i, row) in acc.iter().enumerate() {
            for (r, a) in row.iter().enumerate() {
                *out.add(r * ldo + i) = _mm512_reduce_add_ps(*a);
            }
        }
    }

    /// Rows of X in groups of up to 4 against weight rows in groups of 4 (then 1).
    #[inline(always)]
    unsafe fn rows_of_x<T: Weight, const R: usize>(x: &[f32], m: usize, k: usize, w: *const T, out: *mut f32) {
        let mut i = 0;
        while i < m {
            let xp = x.as_ptr().add(i * k);
            let o = out.add(i);
            match m - i {
                1 => tile::<T, 1, R>(xp, k, w, o, m),
                2 => tile::<T, 2, R>(xp, k, w, o, m),
                3 => tile::<T, 3, R>(xp, k, w, o, m),
                _ => tile::<T, 4, R>(xp, k, w, o, m),
            }
            i += 4;
        }
    }

    /// # Safety
    /// AVX-512F; `x` holds `m * k`, `w` holds `rows * k`, `out` holds `rows * m` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn block<T: Weight>(x: &[f32], m: usize, k: usize, w: &[T], rows: usize, out: &mut [f32]) {
        let mut r = 0;
        while r + 4 <= rows {
            rows_of_x::<T, 4>(x, m, k, w.as_ptr().add(r * k), out.as_mut_ptr().add(r * m));
            r += 4;
        }
        while r < rows {
            rows_of_x::<T, 1>(x, m, k, w.as_ptr().add(r * k), out.as_mut_ptr().add(r * m));
            r += 1;
        }
    }
}
