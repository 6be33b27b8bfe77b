//! AVX2 + FMA f32 micro-kernel: one `MR x NR` = 6 x 16 tile of C from packed panels, for CPUs
//! without AVX-512 (most CI machines, older Intel, Zen 1-3).
//!
//! Same contract and panel layout as the AVX-512 kernel (`kernel_avx512.rs`) with `MR` = 6,
//! `NR` = 16: `a[k * MR + r]` = A(row r, k), `b[k * NR + j]` = B(k, column j), zero-padded.
//! A ymm holds 8 f32: 6 rows x 2 vectors = 12 accumulators, 2 B vectors and a broadcast use 15
//! of the 16 ymm registers (the classic Haswell shape). Each element of C is summed over k in
//! order by one lane. Edge tiles use instances with fewer rows / one vector and masked C
//! accesses (VMASKMOVPS does not fault on masked-out lanes).

use std::arch::x86_64::*;

use super::driver::CTile;

pub(crate) const MR: usize = 6;
pub(crate) const NR: usize = 16;

/// Lane mask (all ones = active) of vector `v` (8 columns) of a row with `n` valid columns.
#[inline]
#[target_feature(enable = "avx2")]
fn lane_mask(n: usize, v: usize) -> __m256i {
    let valid = n.saturating_sub(8 * v).min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(valid),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// # Safety
/// The CPU has AVX2 and FMA; `a` holds `kc * MR` and `b` holds `kc * NR` readable f32; C rows
/// `0..R`, columns `0..n` (`n <= 8 * V`) at `tile.ptr + r * tile.ldc + j` are writable.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_rv<const R: usize, const V: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tile: CTile,
) {
    let CTile {
        ptr: c,
        ldc,
        cols: n,
        alpha,
        beta_one,
        ..
    } = tile;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        let mut bv = [_mm256_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: bp points at one of the kc steps of NR f32 of the B panel.
            *x = unsafe { _mm256_loadu_ps(bp.add(8 * v)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: ap points at one of the kc steps of MR f32 of the A panel, r < R <= MR.
            let av = _mm256_set1_ps(unsafe { *ap.add(r) });
            for (x, bx) in row.iter_mut().zip(bv) {
                *x = _mm256_fmadd_ps(av, bx, *x);
            }
        }
        // SAFETY: stays within (or one past) the panels: kc steps in all.
        unsafe {
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    let va = _mm256_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let mask = lane_mask(n, v);
            // SAFETY: row r < R, columns 8v.. with 8v < n; masked lanes are not accessed.
            unsafe {
                let p = c.add(r * ldc + 8 * v);
                let out = if beta_one {
                    _mm256_fmadd_ps(va, *x, _mm256_maskload_ps(p, mask))
                } else {
                    _mm256_mul_ps(va, *x)
                };
                _mm256_maskstore_ps(p, mask, out);
            }
        }
    }
}

/// `C[0..m, 0..n] = alpha * Ap * Bp (+ C if beta_one)` for one tile (m, n = tile.rows,
/// tile.cols), `1 <= m <= MR`,
/// `1 <= n <= NR`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` holds `kc * MR` and `b` holds `kc * NR` readable f32; C rows
/// `0..m`, columns `0..n` at `tile.ptr + r * tile.ldc + j` are writable and no other thread
/// touches them.
pub(crate) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, tile: CTile) {
    let (m, n) = (tile.rows, tile.cols);
    macro_rules! rows {
        ($v:literal) => {
            match m {
                1 => tile_rv::<1, $v>,
                2 => tile_rv::<2, $v>,
                3 => tile_rv::<3, $v>,
                4 => tile_rv::<4, $v>,
                5 => tile_rv::<5, $v>,
                _ => tile_rv::<6, $v>,
            }
        };
    }
    debug_assert!((1..=MR).contains(&m) && (1..=NR).contains(&n));
    let f = if n > 8 { rows!(2) } else { rows!(1) };
    // SAFETY: forwarded caller contract; the instance has m rows and enough vectors for n.
    unsafe { f(kc, a, b, tile) }
}
