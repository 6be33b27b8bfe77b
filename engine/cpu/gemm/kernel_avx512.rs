//! AVX-512 f32 micro-kernel: one `MR x NR` = 14 x 32 tile of C from packed panels.
//!
//! Computes `C[0..m, 0..n] = alpha * Ap * Bp (+ C if beta_one)` where
//! - `Ap` is an A panel, `kc` steps of `MR` f32 (`a[k * MR + r]` = A(row r, k)),
//! - `Bp` is a B panel, `kc` steps of `NR` f32 (`b[k * NR + j]` = B(k, column j)),
//!   both zero-padded past the valid rows/columns by the packer.
//!
//! Why 14 x 32: a zmm holds 16 f32, so a row of the tile is 2 vectors and the tile takes
//! 28 accumulators; with the 2 B vectors and one broadcast A value that is 31 of the 32 zmm
//! registers. Per k step the kernel issues 28 FMAs against 2 vector loads of B and 14 broadcast
//! loads of A, which keeps Zen 4's single 512-bit FMA pipe busy while the loads fit its ports.
//! The A panel (14 * kc * 4 bytes) stays in L1 across all B panels of a block; B panels stream
//! from L2.
//!
//! Each element of C is summed over k in order 0..kc by one accumulator lane, so the result
//! does not depend on which thread runs the tile. Edge tiles (m < 14 or n < 32) run a kernel
//! instance with fewer rows / one vector, and read and write C with lane masks: nothing outside
//! the m x n tile is touched.

use std::arch::x86_64::*;

use super::driver::CTile;

pub(crate) const MR: usize = 14;
pub(crate) const NR: usize = 32;

/// The lane mask of vector `v` (16 columns) of a tile row with `n` valid columns.
#[inline(always)]
fn lane_mask(n: usize, v: usize) -> __mmask16 {
    let valid = n.saturating_sub(16 * v).min(16);
    ((1u32 << valid) - 1) as __mmask16
}

/// One tile with `R` rows and `V` vectors of 16 columns (`n` = tile.cols).
///
/// # Safety
/// The CPU has AVX-512F; `a` holds `kc * MR` and `b` holds `kc * NR` readable f32; the rows
/// `0..R` of C, columns `0..n` (with `n <= 16 * V`), at `tile.ptr + r * tile.ldc + j` are writable.
#[target_feature(enable = "avx512f")]
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
    // The C tile is read only at the end: ask for it in L2 now (from memory that takes
    // hundreds of cycles), and in L1 a few k steps before the end (earlier, the B panel
    // streaming through L1 would evict it again).
    let prefetch_c = |hint_l1: bool| {
        for r in 0..R {
            // SAFETY: row r < R of the tile is in bounds (caller contract); prefetch never faults.
            let row = unsafe { c.add(r * ldc) } as *const i8;
            if hint_l1 {
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * V));
            } else {
                _mm_prefetch::<_MM_HINT_T1>(row);
                _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(64 * V));
            }
        }
    };
    prefetch_c(false);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (mut ap, mut bp) = (a, b);
    let tail = kc.min(16);
    for step in 0..kc {
        if step == kc - tail {
            prefetch_c(true);
        }
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: bp points at one of the kc steps of NR f32 of the B panel.
            *x = unsafe { _mm512_loadu_ps(bp.add(16 * v)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: ap points at one of the kc steps of MR f32 of the A panel, r < R <= MR.
            let av = _mm512_set1_ps(unsafe { *ap.add(r) });
            for (x, bx) in row.iter_mut().zip(bv) {
                *x = _mm512_fmadd_ps(av, bx, *x);
            }
        }
        // SAFETY: stays within (or one past) the panels: kc steps in all.
        unsafe {
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    let va = _mm512_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let mask = lane_mask(n, v);
            // SAFETY: row r < R and columns 16v.. of the tile; 16v < n because V is the number
            // of vectors n needs, and masked lanes (columns >= n) are neither read nor written.
            unsafe {
                let p = c.add(r * ldc + 16 * v);
                let out = if beta_one {
                    _mm512_fmadd_ps(va, *x, _mm512_maskz_loadu_ps(mask, p))
                } else {
                    _mm512_mul_ps(va, *x)
                };
                _mm512_mask_storeu_ps(p, mask, out);
            }
        }
    }
}

/// `C[0..m, 0..n] = alpha * Ap * Bp (+ C if beta_one)` for one tile (m, n = tile.rows,
/// tile.cols), `1 <= m <= MR`,
/// `1 <= n <= NR`.
///
/// # Safety
/// The CPU has AVX-512F; `a` holds `kc * MR` and `b` holds `kc * NR` readable f32; C rows
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
                6 => tile_rv::<6, $v>,
                7 => tile_rv::<7, $v>,
                8 => tile_rv::<8, $v>,
                9 => tile_rv::<9, $v>,
                10 => tile_rv::<10, $v>,
                11 => tile_rv::<11, $v>,
                12 => tile_rv::<12, $v>,
                13 => tile_rv::<13, $v>,
                _ => tile_rv::<14, $v>,
            }
        };
    }
    debug_assert!((1..=MR).contains(&m) && (1..=NR).contains(&n));
    let f = if n > 16 { rows!(2) } else { rows!(1) };
    // SAFETY: forwarded caller contract; the instance has m rows and enough vectors for n.
    unsafe { f(kc, a, b, tile) }
}
