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

mod reference;

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
        MatRef { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    pub fn from_f32(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(View::F32(data), rows, cols)
    }

    /// A dense row-major matrix whose rows are `row_stride` apart, starting at `offset`.
    pub fn strided(data: View<'a>, offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        MatRef { data, offset, rows, cols, row_stride, col_stride: 1 }
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
        self.data.get(self.offset + i * self.row_stride + j * self.col_stride)
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
        MatMut { data, rows, cols, row_stride: cols }
    }
}

/// `C = alpha * A * B`, or `C += alpha * A * B` when `accumulate`. `parallel` lets the product
/// use the rayon pool; callers already inside a parallel loop pass `false`.
///
/// Panics if the shapes do not fit (callers check user-facing shapes first).
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    c: MatMut<'_>,
    precision: Precision,
    parallel: bool,
) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "gemm: output rows");
    assert_eq!(c.cols, b.cols, "gemm: output columns");
    assert!(c.rows == 0 || c.data.len() >= (c.rows - 1) * c.row_stride + c.cols, "gemm: output too short");
    reference::gemm(alpha, a, b, accumulate, c, precision, parallel);
}
