//! Portable f32 micro-kernel: one `MR x NR` tile of C from packed panels, in plain Rust that
//! LLVM vectorises for whatever SIMD the target has (NEON on ARM, SSE2 on a baseline x86_64).
//! The path for CPUs with neither AVX2 nor AVX-512.
//!
//! Same panel layout and contract as the x86 kernels (`kernel_avx512.rs`): `a[k * MR + r]` =
//! A(row r, k), `b[k * NR + j]` = B(k, column j), both zero-padded by the packer, so every tile
//! is computed whole and only its valid `rows x cols` corner is written.
//!
//! Why this shape: the accumulator is a fixed `[[f32; NR]; MR]` array, so LLVM keeps it in
//! vector registers (NR / 4 registers per row with 128-bit SIMD) and turns the `j` loop into
//! vector multiply-adds of one B row by a broadcast A value. 8 x 8 (16 accumulators of 4 lanes
//! plus 2 B vectors) fits ARM's 32 NEON registers; baseline x86_64 has 16 SSE registers, so
//! there the tile is 4 x 8. Where the target has a fused multiply-add (always on aarch64; on
//! x86 with `-C target-feature=+fma`) `mul_add` compiles to it; elsewhere `mul_add` would be a
//! libm call, so the kernel multiplies and adds separately.
//!
//! Each element of C is summed over k in order 0..kc by one accumulator, whatever thread runs
//! the tile.

use super::driver::CTile;

#[cfg(target_arch = "aarch64")]
pub(crate) const MR: usize = 8;
#[cfg(not(target_arch = "aarch64"))]
pub(crate) const MR: usize = 4;
pub(crate) const NR: usize = 8;

/// `acc + a * b`, fused where the target has a hardware FMA.
#[inline(always)]
fn madd(acc: f32, a: f32, b: f32) -> f32 {
    #[cfg(any(target_arch = "aarch64", target_feature = "fma"))]
    {
        a.mul_add(b, acc)
    }
    #[cfg(not(any(target_arch = "aarch64", target_feature = "fma")))]
    {
        acc + a * b
    }
}

/// `C[0..rows, 0..cols] = alpha * Ap * Bp (+ C if beta_one)` for one tile.
///
/// # Safety
/// `a` holds `kc * MR` and `b` holds `kc * NR` readable f32; C rows `0..tile.rows`, columns
/// `0..tile.cols` at `tile.ptr + r * tile.ldc + j` are writable and no other thread touches
/// them; `1 <= rows <= MR`, `1 <= cols <= NR`.
pub(crate) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, tile: CTile) {
    // SAFETY: the caller guarantees these lengths.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * MR),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    let mut acc = [[0.0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let bk: &[f32; NR] = bk.try_into().expect("NR-wide chunk");
        for (row, &av) in acc.iter_mut().zip(ak) {
            for (x, &bv) in row.iter_mut().zip(bk) {
                *x = madd(*x, av, bv);
            }
        }
    }
    let CTile {
        ptr,
        ldc,
        rows,
        cols,
        alpha,
        beta_one,
    } = tile;
    debug_assert!((1..=MR).contains(&rows) && (1..=NR).contains(&cols));
    for (r, row) in acc.iter().enumerate().take(rows) {
        // SAFETY: row r < rows and columns 0..cols of the tile are writable (caller contract).
        let out = unsafe { std::slice::from_raw_parts_mut(ptr.add(r * ldc), cols) };
        for (o, &x) in out.iter_mut().zip(row) {
            *o = if beta_one { madd(*o, alpha, x) } else { alpha * x };
        }
    }
}
