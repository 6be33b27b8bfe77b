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
//! Each packer checks once that the whole block lies inside the source slice, then reads it
//! through pointers with loads masked to the block, so nothing outside the block is read (the
//! per-element slice checks would cost more than the packing itself).

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
///
/// # Safety (all methods)
/// The CPU has AVX-512F and BW; the elements the method reads (`p[0..n]`, `p[0..e]`) are
/// readable.
pub(crate) trait SimdSrc: Copy {
    /// `p[0..n]` (`n <= 16`) as 16 f32 bit patterns, zero past `n`; rounded to bf16 (low bits
    /// cleared) when `round`.
    unsafe fn f32x16(p: *const Self, n: usize, round: bool) -> __m512i;

    /// `p[0..n]` (`n <= 16`) as bf16 bits in the low half of 16 lanes, zero past `n`.
    unsafe fn bf16x16(p: *const Self, n: usize) -> __m512i;

    /// `p[0..e]` (`e <= 32`) as 16 bf16 pairs, zero past `e`.
    unsafe fn pairsx16(p: *const Self, e: usize) -> __m512i;
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

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn keep_high(x: __m512i) -> __m512i {
    _mm512_and_si512(x, _mm512_set1_epi32(0xFFFF_0000u32 as i32))
}

impl SimdSrc for f32 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(p: *const f32, n: usize, round: bool) -> __m512i {
        // SAFETY: only the n readable lanes are loaded (masked load, no fault past them).
        let x = _mm512_castps_si512(unsafe { _mm512_maskz_loadu_ps(mask16(n), p) });
        if round {
            keep_high(round_bf16_hi(x))
        } else {
            x
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(p: *const f32, n: usize) -> __m512i {
        // SAFETY: forwarded contract.
        _mm512_srli_epi32::<16>(round_bf16_hi(unsafe { Self::f32x16(p, n, false) }))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(p: *const f32, e: usize) -> __m512i {
        // SAFETY: forwarded contract: p[0..e] readable, the second load starts at most at e.
        let (lo, hi) = unsafe {
            (
                Self::f32x16(p, e.min(16), false),
                Self::f32x16(p.add(e.min(16)), e.saturating_sub(16), false),
            )
        };
        high_halves(round_bf16_hi(lo), round_bf16_hi(hi))
    }
}

impl SimdSrc for bf16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(p: *const bf16, n: usize, _round: bool) -> __m512i {
        // Already bf16: widening is exact, rounding is the identity.
        // SAFETY: forwarded contract.
        _mm512_slli_epi32::<16>(unsafe { Self::bf16x16(p, n) })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(p: *const bf16, n: usize) -> __m512i {
        // SAFETY: only the n (<= 16) readable 16-bit lanes are loaded.
        let x = unsafe { _mm512_maskz_loadu_epi16(mask32(n.min(16)), p as *const i16) };
        _mm512_cvtepu16_epi32(_mm512_castsi512_si256(x))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(p: *const bf16, e: usize) -> __m512i {
        // SAFETY: only the e readable 16-bit lanes are loaded.
        unsafe { _mm512_maskz_loadu_epi16(mask32(e), p as *const i16) }
    }
}

impl SimdSrc for f16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn f32x16(p: *const f16, n: usize, round: bool) -> __m512i {
        // SAFETY: only the n (<= 16) readable 16-bit lanes are loaded.
        let h = unsafe { _mm512_maskz_loadu_epi16(mask32(n.min(16)), p as *const i16) };
        let x = _mm512_castps_si512(_mm512_cvtph_ps(_mm512_castsi512_si256(h)));
        if round {
            keep_high(round_bf16_hi(x))
        } else {
            x
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bf16x16(p: *const f16, n: usize) -> __m512i {
        // SAFETY: forwarded contract.
        _mm512_srli_epi32::<16>(round_bf16_hi(unsafe { Self::f32x16(p, n, false) }))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pairsx16(p: *const f16, e: usize) -> __m512i {
        // SAFETY: forwarded contract: p[0..e] readable, the second load starts at most at e.
        let (lo, hi) = unsafe {
            (
                Self::f32x16(p, e.min(16), false),
                Self::f32x16(p.add(e.min(16)), e.saturating_sub(16), false),
            )
        };
        high_halves(round_bf16_hi(lo), round_bf16_hi(hi))
    }
}

/// Transposes a 16 x 16 block of 32-bit units: `r[i]` lane `j` becomes lane `i` of `r[j]`.
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

impl Unit {
    fn units(self, depth: usize) -> usize {
        if self == Unit::Pair {
            depth.div_ceil(2)
        } else {
            depth
        }
    }
}

/// A block of a source slice: `lanes x depth` elements, element (l, d) at
/// `s[first + l * lane_stride + d * depth_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    pub first: usize,
    pub lane_stride: usize,
    pub depth_stride: usize,
    pub lanes: usize,
    pub depth: usize,
}

impl Block {
    /// Whether every element of the block is inside a slice of `len` elements.
    fn fits(&self, len: usize) -> bool {
        self.lanes == 0
            || self.depth == 0
            || (self.lanes - 1)
                .checked_mul(self.lane_stride)
                .zip((self.depth - 1).checked_mul(self.depth_stride))
                .and_then(|(l, d)| l.checked_add(d)?.checked_add(self.first))
                .is_some_and(|last| last < len)
    }
}

/// Repeats `$body` for `$i` = 0..16 as constants: the 16 registers of a transposed block then
/// stay in registers (a loop over them, if the compiler keeps it, indexes memory instead).
macro_rules! unroll16 {
    ($i:ident => $body:block) => {
        unroll16!(@ $i $body 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $i:ident $body:block $($n:literal)*) => {
        $({
            const $i: usize = $n;
            $body
        })*
    };
}

/// Packs a depth-contiguous block (`depth_stride` = 1, `lanes <= width`) into a panel of
/// `width` lanes: units x width 32-bit units (units = depth, or depth / 2 rounded up for
/// pairs), zero past the last lane and the last k.
///
/// `ahead`: the element offset of the next panel's runs (the lanes are runs far apart, which
/// the hardware prefetcher does not follow); each chunk asks for the same chunk there, so the
/// requests are spread over the packing instead of exceeding the miss buffers in a burst.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn pack_depth_runs<T: SimdSrc>(
    s: &[T],
    b: Block,
    width: usize,
    unit: Unit,
    ahead: usize,
    dst: &mut [u32],
) {
    // One instance per unit kind, so the kind is no branch in the loop.
    match unit {
        Unit::F32 { round: false } => depth_runs::<T, false, false>(s, b, width, ahead, dst),
        Unit::F32 { round: true } => depth_runs::<T, false, true>(s, b, width, ahead, dst),
        Unit::Pair => depth_runs::<T, true, false>(s, b, width, ahead, dst),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn depth_runs<T: SimdSrc, const PAIR: bool, const ROUND: bool>(
    s: &[T],
    b: Block,
    width: usize,
    ahead: usize,
    dst: &mut [u32],
) {
    let per = if PAIR { 2 } else { 1 };
    let units = b.depth.div_ceil(per);
    assert!(
        b.depth_stride == 1 && b.lanes <= width && b.fits(s.len()) && dst.len() >= units * width
    );
    let (src, out) = (s.as_ptr(), dst.as_mut_ptr());
    for g0 in (0..width).step_by(16) {
        let present = b.lanes.saturating_sub(g0).min(16);
        let store_mask = mask16(width - g0);
        let first = b.first + g0 * b.lane_stride;
        for u0 in (0..units).step_by(16) {
            let count = 16.min(units - u0);
            let elements = (per * count).min(b.depth - per * u0);
            let mut r = [_mm512_setzero_si512(); 16];
            unroll16!(L => {
                if L < present {
                    let run = src.wrapping_add(first + L * b.lane_stride + per * u0);
                    // A prefetch is a hint and never faults, whatever the address.
                    _mm_prefetch::<_MM_HINT_T0>(run.wrapping_add(ahead) as *const i8);
                    // SAFETY: lane g0 + L < lanes; its `elements` elements from unit u0 on are
                    // inside the block, which fits in s (checked above).
                    r[L] = unsafe {
                        if PAIR { T::pairsx16(run, elements) } else { T::f32x16(run, elements, ROUND) }
                    };
                }
            });
            transpose16(&mut r);
            unroll16!(K => {
                if K < count {
                    // SAFETY: row u0 + K < units and lanes g0.. masked to width: inside dst.
                    unsafe {
                        _mm512_mask_storeu_epi32(out.add((u0 + K) * width + g0) as *mut i32, store_mask, r[K])
                    };
                }
            });
        }
    }
}

/// Packs a lane-contiguous block (`lane_stride` = 1) into `lanes.div_ceil(width)` panels of
/// `width` lanes, one after the other in `dst`, laid out as [`pack_depth_runs`] does. The
/// block is read depth step by depth step across all its panels, so reads are sequential.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn pack_lane_rows<T: SimdSrc>(
    s: &[T],
    b: Block,
    width: usize,
    unit: Unit,
    dst: &mut [u32],
) {
    let (units, panels) = (unit.units(b.depth), b.lanes.div_ceil(width));
    let len = units * width;
    assert!(b.lane_stride == 1 && b.fits(s.len()) && dst.len() >= panels * len);
    let (src, out) = (s.as_ptr(), dst.as_mut_ptr());
    let row = |d: usize| src.wrapping_add(b.first + d * b.depth_stride);
    for u in 0..units {
        let d = if unit == Unit::Pair { 2 * u } else { u };
        let has_odd = unit == Unit::Pair && d + 1 < b.depth;
        for p in 0..panels {
            for g0 in (0..width).step_by(16) {
                let lane = p * width + g0;
                let n = (width - g0).min(16).min(b.lanes.saturating_sub(lane));
                let at = lane.min(b.lanes);
                // SAFETY: depth steps d (and d + 1 when has_odd) < depth, lanes at..at + n <=
                // lanes: inside the block, which fits in s (checked above). With n = 0 nothing
                // is read.
                let x = unsafe {
                    match unit {
                        Unit::F32 { round } => T::f32x16(row(d).add(at), n, round),
                        Unit::Pair => {
                            let e = T::bf16x16(row(d).add(at), n);
                            let o = if has_odd {
                                T::bf16x16(row(d + 1).add(at), n)
                            } else {
                                _mm512_setzero_si512()
                            };
                            _mm512_or_si512(e, _mm512_slli_epi32::<16>(o))
                        }
                    }
                };
                // SAFETY: panel p < panels, row u < units, lanes g0.. masked to width: inside
                // dst (checked above).
                unsafe {
                    _mm512_mask_storeu_epi32(
                        out.add(p * len + u * width + g0) as *mut i32,
                        mask16(width - g0),
                        x,
                    )
                };
            }
        }
    }
}
