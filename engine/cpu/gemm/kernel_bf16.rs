//! AVX-512 BF16 micro-kernel: one `MR x NR` = 14 x 32 tile of C from bf16 pair panels.
//!
//! Computes `C[0..m, 0..n] = alpha * Ap * Bp (+ C if beta_one)` with f32 accumulation, where the
//! panels hold bf16 bits in k pairs (see `pack.rs`):
//! - `Ap`: `kp` pair steps of `MR` pairs, `a[(k2 * MR + r) * 2 + t]` = A(row r, 2 * k2 + t),
//! - `Bp`: `kp` pair steps of `NR` pairs, `b[(k2 * NR + j) * 2 + t]` = B(2 * k2 + t, column j),
//!   an odd depth padded with a zero k.
//!
//! VDPBF16PS multiplies, in each of the 16 f32 lanes, the two bf16 of that lane of one operand
//! with those of the other and adds both products to the lane: with A's pair broadcast to all
//! lanes (one 32-bit broadcast) and B's 16 column pairs in one zmm, one instruction does a 1 x 16
//! x 2 product, twice the work of an f32 FMA per cycle. The tile shape and register budget are
//! those of the f32 kernel (28 accumulators, 2 B vectors, one broadcast). The products of bf16
//! values are exact in f32; VDPBF16PS treats bf16 subnormals as zero.
//!
//! Each element of C is summed over k pairs in order by one lane, whatever thread runs the tile.

use std::arch::x86_64::*;

use super::driver::CTile;

pub(crate) const MR: usize = 14;
pub(crate) const NR: usize = 32;

#[inline(always)]
fn lane_mask(n: usize, v: usize) -> __mmask16 {
    let valid = n.saturating_sub(16 * v).min(16);
    ((1u32 << valid) - 1) as __mmask16
}

#[inline(always)]
fn as_bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte vectors and every bit pattern is a valid __m512bh.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// One tile with `R` rows and `V` vectors of 16 columns (`n` = tile.cols).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `a` holds `kp * MR * 2` and `b` holds `kp * NR * 2`
/// readable u16; C rows `0..R`, columns `0..n` (`n <= 16 * V`) at `tile.ptr + r * tile.ldc + j`
/// are writable.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_rv<const R: usize, const V: usize>(
    kp: usize,
    a: *const u16,
    b: *const u16,
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
    // C is read only at the end: into L2 now, into L1 a few steps before the end (see the f32
    // kernel).
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
    let (mut ap, mut bp) = (a as *const i32, b as *const __m512i);
    let tail = kp.min(8);
    for step in 0..kp {
        if step == kp - tail {
            prefetch_c(true);
        }
        let mut bv = [as_bh(_mm512_setzero_si512()); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: bp points at one of the kp steps of NR pairs (2 zmm) of the B panel.
            *x = as_bh(unsafe { _mm512_loadu_si512(bp.add(v)) });
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: ap points at one of the kp steps of MR pairs (i32 each), r < R <= MR;
            // read unaligned because the u16 buffer only guarantees 2-byte alignment.
            let pair = unsafe { ap.add(r).read_unaligned() };
            let av = as_bh(_mm512_set1_epi32(pair));
            for (x, bx) in row.iter_mut().zip(bv) {
                *x = _mm512_dpbf16_ps(*x, av, bx);
            }
        }
        // SAFETY: stays within (or one past) the panels: kp steps in all.
        unsafe {
            ap = ap.add(MR);
            bp = bp.add(NR / 16);
        }
    }
    let va = _mm512_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let mask = lane_mask(n, v);
            // SAFETY: row r < R, columns 16v.. with 16v < n; masked lanes are not accessed.
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
/// tile.cols) over `kp` k pairs.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `a` holds `kp * MR * 2` and `b` holds `kp * NR * 2`
/// readable u16; C rows `0..m`, columns `0..n` at `tile.ptr + r * tile.ldc + j` are writable and
/// no other
/// thread touches them; `1 <= m <= MR`, `1 <= n <= NR`.
pub(crate) unsafe fn tile(kp: usize, a: *const u16, b: *const u16, tile: CTile) {
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
    unsafe { f(kp, a, b, tile) }
}
