//! AVX-512 packing of the two common source layouts (layouts and rounding as in `pack.rs`).
//!
//! The panels are arrays of 32-bit units: an f32, or a pair of bf16 (two consecutive k of one
//! lane). Packing is a conversion plus, for depth-contiguous sources (row-major A, and B = W^T
//! for weights stored `[out, in]`), a transpose: 16 lanes x 16 units are loaded (converted),
//! transposed in registers with 64 shuffles, and stored as 16 panel rows, instead of one
//! scattered store per element. Lane-contiguous sources (row-major B, column-major A) are
//! converted 16 lanes at a time; pair panels interleave the bf16 of an even and an odd k.
//!
//! Rounding to bf16 is done with integer operations, bit-exact with `bf16::from_f32` (round to
//! nearest even, NaN kept quiet, subnormals kept), not with VCVTNEPS2BF16, which flushes
//! subnormals.
//!
//! All loads are masked to the valid elements of a slice, so nothing outside the source is read.

use std::arch::x86_64::*;

use half::{bf16, f16};

/// Lane mask of the first `n` (<= 16) 32-bit lanes.
#[inline]
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Lane mask of the first `n` (<= 32) 16-bit lanes.
#[inline]
fn mask32(n: usize) -> __mmask32 {
    ((1u64 << n.min(32)) - 1) as __mmask32
}

/// f32 bits rounded to bf16, the result in the high 16 bits of each lane (exactly
/// `bf16::from_f32`: `(x + 0x7FFF + lsb) >> 16`, NaN -> quiet NaN with the same sign and top
/// payload bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn round_bf16_hi(x: __m512i) -> __m512i {
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7FFF)), lsb);
    let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7FFF_FFFF));
    let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
    _mm512_mask_blend_epi32(
        nan,
        rounded,
        _mm512_or_si512(x, _mm512_set1_epi32(0x0040_0000)),
    )
}

/// A stored element type read by vectors of 16.
pub(crate) trait SimdSrc: Copy {
    /// Elements `i..i + n` (`n <= 16`, `i + n <= run.len()`) as 16 f32 bit patterns, zero past
    /// `n`; rounded to bf16 (low bits cleared) when `round`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW.
    unsafe fn f32x16(run: &[Self], i: usize, n: usize, round: bool) -> __m512i;

    /// Elements `i..i + n` (`n <= 16`, `i + n <= run.len()`) as bf16 bits in the low half of
    /// 16 lanes, zero past `n`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW.
    unsafe fn bf16x16(run: &[Self], i: usize, n: usize) -> __m512i;

    /// Elements `2u..2u + e` (`e <= 32`, `2u + e <= run.len()`) as 16 bf16 pairs, zero past `e`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW.
    unsafe fn pairsx16(run: &[Self], u: usize, e: usize) -> __m512i;
}

/// The high halves of the 32 lanes of `lo` then `hi`, in order: bf16 in the high halves of
/// 32 f32 -> 16 pairs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn high_halves(lo: __m512i, hi: __m512i) -> __m512i {
    let odd = _mm512_set_epi16(
        63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19,
        17, 15, 13, 11, 9, 7, 5, 3, 1,
    );
    _mm512_permutex2var_epi16(lo, odd, hi)
}

impl SimdSrc for f32 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(run: &[f32], i: usize, n: usize, round: bool) -> __m512i {
        // SAFETY: only the n lanes at i.. (inside run) are read.
        let x =
            _mm512_castps_si512(unsafe { _mm512_maskz_loadu_ps(mask16(n), run.as_ptr().add(i)) });
        if round {
            _mm512_and_si512(round_bf16_hi(x), _mm512_set1_epi32(0xFFFF_0000u32 as i32))
        } else {
            x
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(run: &[f32], i: usize, n: usize) -> __m512i {
        // SAFETY: forwarded contract.
        _mm512_srli_epi32::<16>(round_bf16_hi(unsafe { Self::f32x16(run, i, n, false) }))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(run: &[f32], u: usize, e: usize) -> __m512i {
        // SAFETY: forwarded contract: elements 2u..2u+e are inside run.
        let (lo, hi) = unsafe {
            (
                Self::f32x16(run, 2 * u, e.min(16), false),
                Self::f32x16(run, 2 * u + 16.min(e), e.saturating_sub(16), false),
            )
        };
        high_halves(round_bf16_hi(lo), round_bf16_hi(hi))
    }
}

impl SimdSrc for bf16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(run: &[bf16], i: usize, n: usize, _round: bool) -> __m512i {
        // Already bf16: widening is exact, rounding is the identity.
        // SAFETY: forwarded contract.
        _mm512_slli_epi32::<16>(unsafe { Self::bf16x16(run, i, n) })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(run: &[bf16], i: usize, n: usize) -> __m512i {
        // SAFETY: only the n (<= 16) 16-bit lanes at i.. (inside run) are read.
        let x = unsafe {
            _mm512_maskz_loadu_epi16(mask32(n.min(16)), run.as_ptr().add(i) as *const i16)
        };
        _mm512_cvtepu16_epi32(_mm512_castsi512_si256(x))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(run: &[bf16], u: usize, e: usize) -> __m512i {
        // SAFETY: only the e 16-bit lanes at 2u.. (inside run) are read.
        unsafe { _mm512_maskz_loadu_epi16(mask32(e), run.as_ptr().add(2 * u) as *const i16) }
    }
}

impl SimdSrc for f16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(run: &[f16], i: usize, n: usize, round: bool) -> __m512i {
        // SAFETY: only the n (<= 16) 16-bit lanes at i.. (inside run) are read.
        let h = unsafe {
            _mm512_maskz_loadu_epi16(mask32(n.min(16)), run.as_ptr().add(i) as *const i16)
        };
        let x = _mm512_castps_si512(_mm512_cvtph_ps(_mm512_castsi512_si256(h)));
        if round {
            _mm512_and_si512(round_bf16_hi(x), _mm512_set1_epi32(0xFFFF_0000u32 as i32))
        } else {
            x
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(run: &[f16], i: usize, n: usize) -> __m512i {
        // SAFETY: forwarded contract.
        _mm512_srli_epi32::<16>(round_bf16_hi(unsafe { Self::f32x16(run, i, n, false) }))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(run: &[f16], u: usize, e: usize) -> __m512i {
        // SAFETY: forwarded contract: elements 2u..2u+e are inside run.
        let (lo, hi) = unsafe {
            (
                Self::f32x16(run, 2 * u, e.min(16), false),
                Self::f32x16(run, 2 * u + 16.min(e), e.saturating_sub(16), false),
            )
        };
        high_halves(round_bf16_hi(lo), round_bf16_hi(hi))
    }
}

/// Transposes a 16 x 16 block of 32-bit units in place: `r[i]` lane `j` becomes `r[j]` lane `i`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // r[4i + c], 128-bit lane L: rows 4i..4i+4 at column c + 4L.
    for i in 0..4 {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for c in 0..4 {
        let u0 = _mm512_shuffle_i32x4::<0x44>(r[c], r[4 + c]);
        let u1 = _mm512_shuffle_i32x4::<0xEE>(r[c], r[4 + c]);
        let v0 = _mm512_shuffle_i32x4::<0x44>(r[8 + c], r[12 + c]);
        let v1 = _mm512_shuffle_i32x4::<0xEE>(r[8 + c], r[12 + c]);
        t[c] = _mm512_shuffle_i32x4::<0x88>(u0, v0);
        t[c + 4] = _mm512_shuffle_i32x4::<0xDD>(u0, v0);
        t[c + 8] = _mm512_shuffle_i32x4::<0x88>(u1, v1);
        t[c + 12] = _mm512_shuffle_i32x4::<0xDD>(u1, v1);
    }
    *r = t;
}

/// What a panel unit is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// One f32, rounded to bf16 when `round`.
    F32 { round: bool },
    /// Two bf16 (consecutive k).
    Pair,
}

/// Depth-contiguous source: `runs[l]` is lane l's run of `depth` elements (`runs.len()` =
/// lanes <= width). Writes `units x width` units to `dst` (units = depth, or depth / 2 rounded
/// up for pairs), zero past the last lane and the last k.
///
/// # Safety
/// The CPU has AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pack_depth_runs<T: SimdSrc>(
    runs: &[&[T]],
    depth: usize,
    width: usize,
    unit: Unit,
    dst: &mut [u32],
) {
    let units = if unit == Unit::Pair {
        depth.div_ceil(2)
    } else {
        depth
    };
    assert!(
        runs.len() <= width && runs.iter().all(|r| r.len() == depth) && dst.len() >= units * width
    );
    for g0 in (0..width).step_by(16) {
        let store_mask = mask16(width - g0);
        for u0 in (0..units).step_by(16) {
            let count = 16.min(units - u0);
            let mut r = [_mm512_setzero_si512(); 16];
            for (x, run) in r.iter_mut().zip(runs.iter().skip(g0)) {
                // SAFETY: units u0..u0+count map to elements inside the run (checked above).
                *x = unsafe {
                    match unit {
                        Unit::F32 { round } => T::f32x16(run, u0, count, round),
                        Unit::Pair => T::pairsx16(run, u0, (2 * count).min(depth - 2 * u0)),
                    }
                };
            }
            transpose16(&mut r);
            for (k, x) in r.iter().take(count).enumerate() {
                // SAFETY: row u0 + k < units, lanes g0.. masked to width: inside dst (checked).
                unsafe {
                    _mm512_mask_storeu_epi32(
                        dst.as_mut_ptr().add((u0 + k) * width + g0) as *mut i32,
                        store_mask,
                        *x,
                    )
                };
            }
        }
    }
}

/// Lane-contiguous source: `rows[d]` holds the `lanes` (<= width) values of depth step d, for
/// `depth` steps. Writes the panel as [`pack_depth_runs`] does.
///
/// # Safety
/// The CPU has AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pack_lane_rows<'a, T: SimdSrc + 'a>(
    rows: impl Iterator<Item = &'a [T]>,
    depth: usize,
    lanes: usize,
    width: usize,
    unit: Unit,
    dst: &mut [u32],
) {
    let units = if unit == Unit::Pair {
        depth.div_ceil(2)
    } else {
        depth
    };
    assert!(lanes <= width && dst.len() >= units * width);
    let mut rows = rows.take(depth);
    for u in 0..units {
        let (even, odd) = match unit {
            Unit::F32 { .. } => (rows.next(), None),
            Unit::Pair => (rows.next(), rows.next()),
        };
        let even = even.expect("pack: fewer rows than depth");
        assert!(even.len() >= lanes && odd.is_none_or(|o| o.len() >= lanes));
        for g0 in (0..width).step_by(16) {
            let n = lanes.saturating_sub(g0).min(16);
            // SAFETY: lanes g0..g0+n of each row are inside it (checked above).
            let x = unsafe {
                match unit {
                    Unit::F32 { round } => T::f32x16(even, g0.min(even.len()), n, round),
                    Unit::Pair => {
                        let e = T::bf16x16(even, g0.min(even.len()), n);
                        let o = odd.map_or(_mm512_setzero_si512(), |o| {
                            T::bf16x16(o, g0.min(o.len()), n)
                        });
                        _mm512_or_si512(e, _mm512_slli_epi32::<16>(o))
                    }
                }
            };
            // SAFETY: row u < units, lanes g0.. masked to width: inside dst (checked above).
            unsafe {
                _mm512_mask_storeu_epi32(
                    dst.as_mut_ptr().add(u * width + g0) as *mut i32,
                    mask16(width - g0),
                    x,
                )
            };
        }
    }
}
