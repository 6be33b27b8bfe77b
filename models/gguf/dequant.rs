//! Dequantisation of ggml blocks to f32, value for value what the `gguf` Python package's
//! `gguf.quants.dequantize` computes (and so what transformers loads from a GGUF file).
//!
//! Each function reads whole blocks of one row and writes `block_elems` floats per block. The
//! arithmetic follows `gguf.quants` operation for operation: scales are f16 widened to f32,
//! products of two scales are rounded to f32 before they multiply a quant, and `d * q + m` is a
//! product then a sum (never a fused multiply-add), so the results are bit-identical to numpy's.
//!
//! Layouts (ggml-common.h), per block:
//! - Q4_0: f16 d, 16 bytes of nibbles; value i < 16 is the low nibble of byte i, value i + 16
//!   its high nibble; `d * (q - 8)`.
//! - Q4_1: f16 d, f16 m, nibbles as Q4_0; `d * q + m`.
//! - Q5_0 / Q5_1: as Q4_0 / Q4_1 with a u32 of fifth bits (bit i for value i) before the
//!   nibbles; `d * (q - 16)` / `d * q + m`.
//! - Q8_0: f16 d, 32 i8; `q * d`.
//! - Q4_K (256 values): f16 d, f16 dmin, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes
//!   of nibbles: byte chunk c (32 bytes) holds sub-block 2c in its low nibbles and 2c + 1 in its
//!   high nibbles; `(d * sc_j) * q - dmin * m_j`.
//! - Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles (bit j of byte l for value l
//!   of sub-block j).
//! - Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 i8 scales, f16 d; each half
//!   of 128 values is four groups of 32 (see [`q6_k`]); `(d * scale_s) * (q - 32)` with one
//!   scale per 16 values.

use half::{bf16, f16};
use rayon::prelude::*;

use super::types::{self, GgmlType};

#[inline(always)]
fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = half(b, 0);
    for j in 0..16 {
        out[j] = d * ((b[2 + j] & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for j in 0..16 {
        out[j] = d * (b[4 + j] & 0x0F) as f32 + m;
        out[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
    }
}

/// The 32 five-bit quants of a Q5_0 / Q5_1 block whose fifth bits are at `qh` and nibbles at
/// `qs`.
#[inline(always)]
fn five_bit(b: &[u8], qh: usize, qs: usize) -> [u8; 32] {
    let h = u32::from_le_bytes([b[qh], b[qh + 1], b[qh + 2], b[qh + 3]]);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (b[qs + j] & 0x0F) | ((((h >> j) & 1) as u8) << 4);
        q[j + 16] = (b[qs + j] >> 4) | ((((h >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = half(b, 0);
    for (o, q) in out.iter_mut().zip(five_bit(b, 2, 6)) {
        *o = d * (q as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for (o, q) in out.iter_mut().zip(five_bit(b, 4, 8)) {
        *o = d * q as f32 + m;
    }
}

fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = half(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// The eight 6-bit scales and mins of a Q4_K / Q5_K block (`gguf.quants.Q4_K.get_scale_min`).
#[inline(always)]
fn scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K when `qh` is `None`, Q5_K when it is the offset of the fifth bits; `qs` is the offset of
/// the nibbles.
#[inline(always)]
fn k_quant(b: &[u8], qh: Option<usize>, qs: usize, out: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (sc, mn) = scale_min(&b[4..16]);
    for j in 0..8 {
        let (dj, mj) = (d * sc[j] as f32, dmin * mn[j] as f32);
        let (chunk, shift) = (j / 2, 4 * (j % 2));
        for l in 0..32 {
            let mut q = (b[qs + chunk * 32 + l] >> shift) & 0x0F;
            if let Some(qh) = qh {
                q |= ((b[qh + l] >> j) & 1) << 4;
            }
            out[j * 32 + l] = dj * q as f32 - mj;
        }
    }
}

fn q4_k(b: &[u8], out: &mut [f32]) {
    k_quant(b, None, 16, out);
}

fn q5_k(b: &[u8], out: &mut [f32]) {
    k_quant(b, Some(16), 48, out);
}

/// Half `h` (values `128h..128h+128`) is four groups of 32: group `r`, value `l` has the low
/// nibble (r < 2) or high nibble (r >= 2) of `ql[64h + 32(r % 2) + l]` and bits `2r..2r+2` of
/// `qh[32h + l]` as its high two bits.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    for h in 0..2 {
        for r in 0..4 {
            for l in 0..32 {
                let lo = (ql[64 * h + 32 * (r % 2) + l] >> (4 * (r / 2))) & 0x0F;
                let hi = (qh[32 * h + l] >> (2 * r)) & 0x03;
                let q = (lo | (hi << 4)) as i32 - 32;
                let i = 128 * h + 32 * r + l;
                out[i] = (d * scales[i / 16] as i8 as f32) * q as f32;
            }
        }
    }
}

fn f32_row(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_row(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

fn bf16_row(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// Dequantises whole blocks (or, for plain types, a whole row).
type BlockFn = fn(&[u8], &mut [f32]);

/// The block function of a supported type.
fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    Some(match ty {
        t if t == types::F32 => f32_row,
        t if t == types::F16 => f16_row,
        t if t == types::BF16 => bf16_row,
        t if t == types::Q4_0 => q4_0,
        t if t == types::Q4_1 => q4_1,
        t if t == types::Q5_0 => q5_0,
        t if t == types::Q5_1 => q5_1,
        t if t == types::Q8_0 => q8_0,
        t if t == types::Q4_K => q4_k,
        t if t == types::Q5_K => q5_k,
        t if t == types::Q6_K => q6_k,
        _ => return None,
    })
}

/// Dequantises `src` (whole blocks of `ty`) into `out` (`block_elems` values per block).
/// Returns false, writing nothing, when `ty` is not supported or the sizes do not match.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> bool {
    let Some(f) = block_fn(ty) else { return false };
    let blocks = out.len() / ty.block_elems;
    if !out.len().is_multiple_of(ty.block_elems) || src.len() != blocks * ty.block_bytes {
        return false;
    }
    // Plain types convert a whole row at once; block types one block at a time.
    if ty.block_elems == 1 {
        f(src, out);
    } else {
        for (b, o) in src.chunks_exact(ty.block_bytes).zip(out.chunks_exact_mut(ty.block_elems)) {
            f(b, o);
        }
    }
    true
}

/// Output rows of a whole-tensor dequantisation.
pub enum RowsOut<'a> {
    F32(&'a mut [f32]),
    BF16(&'a mut [bf16]),
}

/// Dequantises a matrix of `rows` rows of `cols` values stored row after row in `src`, writing
/// output row `i` from source row `order[i]` (`None`: row `i`), in parallel over rows.
/// The caller has checked the type, sizes and `order` (a permutation of `0..rows`).
pub fn dequantize_rows(ty: GgmlType, src: &[u8], cols: usize, order: Option<&[usize]>, out: RowsOut<'_>) {
    let row_bytes = cols / ty.block_elems * ty.block_bytes;
    let source = |i: usize| {
        let r = order.map_or(i, |o| o[i]);
        &src[r * row_bytes..(r + 1) * row_bytes]
    };
    let cols = cols.max(1);
    match out {
        RowsOut::F32(out) => out.par_chunks_mut(cols).enumerate().for_each(|(i, o)| {
            let ok = dequantize_row(ty, source(i), o);
            debug_assert!(ok);
        }),
        RowsOut::BF16(out) => out.par_chunks_mut(cols).enumerate().for_each_init(
            || vec![0.0f32; cols],
            |row, (i, o)| {
                let ok = dequantize_row(ty, source(i), row);
                debug_assert!(ok);
                for (d, &v) in o.iter_mut().zip(row.iter()) {
                    *d = bf16::from_f32(v);
                }
            },
        ),
    }
}
