//! The CPU matrix product: `C = alpha * A * B (+ C)`, f32 output.
//!
//! Operands are strided views ([`MatRef`]), so transposes, heads inside a `[tokens, heads *
//! dim]` activation and weights stored `[out, in]` are all read in place. `A` and `B` may be
//! stored in f32, bf16 or f16; [`Precision`] says how the product is computed:
//! - `F32`: every operand is widened to f32 and multiplied in f32 (exact on the stored values);
//! - `Bf16`: both operands are rounded to bf16 and multiplied with f32 accumulation, as
//!   PyTorch's bf16 matmul does (AVX-512 BF16 dot products where the CPU has them).
//!
//! Determinism: every element of C is summed over k in the same order whatever the number of
//! threads, so results are bit-identical across thread counts.
//!
//! Small products (under about 4M multiply-adds) run on the calling thread even when
//! `parallel` is set.
//!
//! Frozen weights: [`PackedB::new`] packs a B once (for the kernel and blocking `gemm` would
//! use) and [`gemm_packed`] multiplies by it without repacking, bit-identical to `gemm`.
//!
//! Implementation (BLIS style): `pack.rs` copies blocks of A and B into MR-row and NR-column
//! panels, converting the stored type (`pack_avx512.rs`: its AVX-512 transposes and
//! conversions); `driver.rs` blocks for the caches and splits tiles among rayon threads, with
//! its packing buffers kept per thread (`buffer.rs`); `kernel_avx512.rs` (f32, 14 x 32),
//! `kernel_bf16.rs` (VDPBF16PS, 14 x 32), `kernel_avx2.rs` (f32, 6 x 16) and
//! `kernel_portable.rs` (plain Rust, vectorised by the compiler, for any other CPU) compute one
//! tile; `kernels.rs` picks the path the CPU supports at run time; `packed.rs` holds prepacked
//! B; `reference.rs` is the unblocked test oracle. Measured speed: BENCHMARKS.md, "Matrix
//! product (CPU)".

mod buffer;
mod driver;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512;
#[cfg(target_arch = "x86_64")]
mod kernel_bf16;
mod kernel_portable;
mod kernels;
mod pack;
mod packed;
#[cfg(target_arch = "x86_64")]
mod pack_avx512;
mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pack;
#[cfg(test)]
mod tests_packed;

pub use kernels::KernelPath;
pub use packed::{gemm_packed, PackedB};

use crate::engine::tensor::View;

/// A read-only matrix view: element (i, j) is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: View<'a>,
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows x cols` matrix.
    pub fn new(data: View<'a>, rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub fn from_f32(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(View::F32(data), rows, cols)
    }

    /// A dense row-major matrix whose rows are `row_stride` apart, starting at `offset`.
    pub fn strided(
        data: View<'a>,
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        MatRef {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data
            .get(self.offset + i * self.row_stride + j * self.col_stride)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// The output: `rows x cols`, row `i` starting at `data[i * row_stride]`.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }
}

/// `C = alpha * A * B`, or `C += alpha * A * B` when `accumulate`. `parallel` lets the product
/// use the rayon pool (products too small to gain run serially anyway); callers already inside
/// a parallel loop pass `false`. With `k = 0`, C is zeroed (or left as is when accumulating).
///
/// Panics if the shapes do not fit or a view reaches past its data (callers check user-facing
/// shapes first).
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    c: MatMut<'_>,
    precision: Precision,
    parallel: bool,
) {
    gemm_with(
        KernelPath::best(precision),
        alpha,
        a,
        b,
        accumulate,
        c,
        precision,
        parallel,
    );
}

/// The largest index a view reads, if it reads any.
fn last_index(m: &MatRef<'_>) -> Option<usize> {
    if m.rows == 0 || m.cols == 0 {
        return None;
    }
    let last = (m.rows - 1)
        .checked_mul(m.row_stride)
        .and_then(|r| {
            (m.cols - 1)
                .checked_mul(m.col_stride)
                .and_then(|c| r.checked_add(c))
        })
        .and_then(|rc| rc.checked_add(m.offset));
    Some(last.unwrap_or(usize::MAX))
}

/// Panics unless `A (m x k) * B (k x n)` fits C and the views stay inside their data.
fn check_shapes(a: &MatRef<'_>, (b_rows, b_cols): (usize, usize), c: &MatMut<'_>) {
    assert_eq!(a.cols, b_rows, "gemm: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "gemm: output rows");
    assert_eq!(c.cols, b_cols, "gemm: output columns");
    if c.rows > 0 && c.cols > 0 {
        assert!(
            c.rows == 1 || c.row_stride >= c.cols,
            "gemm: output rows overlap"
        );
        assert!(
            c.data.len() >= (c.rows - 1) * c.row_stride + c.cols,
            "gemm: output too short"
        );
    }
}

fn check_view(name: &str, m: &MatRef<'_>) {
    if let Some(last) = last_index(m) {
        assert!(
            last < m.data.len(),
            "gemm: view of {name} reaches past its data"
        );
    }
}

/// Handles the products with nothing to compute: an empty C (nothing to write) or k = 0
/// (C = 0, or unchanged when accumulating). Returns whether it did.
fn trivial(k: usize, accumulate: bool, c: &mut MatMut<'_>) -> bool {
    if c.rows == 0 || c.cols == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            for row in c.data.chunks_mut(c.row_stride.max(1)).take(c.rows) {
                row[..c.cols].fill(0.0);
            }
        }
        return true;
    }
    false
}

/// [`gemm`] on a chosen kernel path (tests and benchmarks force each path the CPU supports).
/// Panics if this CPU cannot run `path` (see [`KernelPath::supported`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    path: KernelPath,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    mut c: MatMut<'_>,
    precision: Precision,
    parallel: bool,
) {
    check_shapes(&a, (b.rows, b.cols), &c);
    check_view("A", &a);
    check_view("B", &b);
    assert!(path.supported(), "gemm: this CPU cannot run {path:?}");
    assert!(
        path != KernelPath::Avx512Bf16 || precision == Precision::Bf16,
        "gemm: {path:?} is bf16 only"
    );
    if trivial(a.cols, accumulate, &mut c) {
        return;
    }
    if path == KernelPath::Reference {
        return reference::gemm(alpha, a, b, accumulate, c, precision, parallel);
    }
    struct Run<'a, 'c> {
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        accumulate: bool,
        c: MatMut<'c>,
        parallel: bool,
    }
    impl kernels::WithKernel for Run<'_, '_> {
        type Out = ();
        fn call<K: driver::MicroKernel>(self, kern: &K) {
            let b = driver::BSource::Pack(pack::Operand::cols_of(&self.b));
            let n = self.b.cols;
            driver::run(kern, self.alpha, &self.a, b, n, self.accumulate, self.c, self.parallel)
        }
    }
    let run = Run {
        alpha,
        a,
        b,
        accumulate,
        c,
        parallel,
    };
    kernels::with_kernel(path, precision, run).expect("every path but Reference has a kernel");
}
