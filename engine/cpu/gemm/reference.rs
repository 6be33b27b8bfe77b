//! The reference matrix product: row by row, `k` in order, no blocking. The oracle the kernels
//! are tested against (`KernelPath::Reference`, never chosen for speed: CPUs without AVX2 use
//! the packed portable kernel of `kernel_portable.rs`).

use half::bf16;
use rayon::prelude::*;

use super::{MatMut, MatRef, Precision};

#[inline(always)]
fn round(x: f32, precision: Precision) -> f32 {
    match precision {
        Precision::F32 => x,
        Precision::Bf16 => bf16::from_f32(x).to_f32(),
    }
}

fn row(alpha: f32, a: &MatRef<'_>, b: &MatRef<'_>, i: usize, accumulate: bool, out: &mut [f32], p: Precision) {
    let mut acc = vec![0.0f32; out.len()];
    for kk in 0..a.cols {
        let av = round(a.at(i, kk), p);
        if av == 0.0 {
            continue;
        }
        for (j, o) in acc.iter_mut().enumerate() {
            *o += av * round(b.at(kk, j), p);
        }
    }
    for (o, v) in out.iter_mut().zip(acc) {
        *o = if accumulate { *o + alpha * v } else { alpha * v };
    }
}

pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    c: MatMut<'_>,
    precision: Precision,
    parallel: bool,
) {
    let (n, ldc) = (c.cols, c.row_stride);
    if c.rows == 0 || n == 0 {
        return;
    }
    if parallel && c.rows > 1 {
        c.data.par_chunks_mut(ldc).take(c.rows).enumerate().for_each(|(i, r)| {
            row(alpha, &a, &b, i, accumulate, &mut r[..n], precision)
        });
    } else {
        for (i, r) in c.data.chunks_mut(ldc).take(c.rows).enumerate() {
            row(alpha, &a, &b, i, accumulate, &mut r[..n], precision);
        }
    }
}
