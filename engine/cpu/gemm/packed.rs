//! Prepacked B: the panels of a frozen weight packed once and reused by every product.
//!
//! A training step multiplies the same frozen weights thousands of times; `gemm` repacks B on
//! every call (a copy, a conversion and, for `W^T`, a transpose). [`PackedB::new`] does that
//! once, for the kernel the CPU would use at a given precision and with the cache blocking
//! `gemm` would use, and [`gemm_packed`] reads the panels in place. Same kernel, same panels,
//! same k blocks: the result is bit-identical to `gemm` with the unpacked B.
//!
//! Layout (see `driver::Blocking::b_block`): column blocks of NCO, each its k blocks in order,
//! each block's NR-column panels one after the other, in a 64-byte aligned buffer.

use super::driver::{self, Blocking, MicroKernel};
use super::kernels::{self, KernelPath, WithKernel};
use super::pack::{Operand, PanelSpec};
use super::{check_shapes, check_view, trivial, MatMut, MatRef, Precision};

/// A cache line, the unit of the aligned buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);
// SAFETY: a plain array of bytes with no padding (size 64 = alignment), any bits valid.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; Copy, 'static, repr(C).
unsafe impl bytemuck::Pod for Line {}

/// The right-hand operand of a product (`k x n`), packed for one kernel path and precision.
pub struct PackedB {
    path: KernelPath,
    precision: Precision,
    rows: usize,
    cols: usize,
    blocking: Blocking,
    /// Length of the panels in bytes (the buffer is rounded up to whole lines).
    bytes: usize,
    lines: Vec<Line>,
}

impl PackedB {
    /// Packs `b` (any dtype, strides or transposition) for products at `precision` on the
    /// fastest kernel of this CPU.
    pub fn new(b: MatRef<'_>, precision: Precision) -> Self {
        Self::with_path(KernelPath::best(precision), b, precision)
    }

    /// Packs `b` for `path` (tests force each path).
    pub(crate) fn with_path(path: KernelPath, b: MatRef<'_>, precision: Precision) -> Self {
        check_view("B", &b);
        assert!(path.supported(), "gemm: this CPU cannot run {path:?}");
        assert!(
            path != KernelPath::Reference,
            "gemm: the reference path has no packed form"
        );
        struct Pack<'a>(MatRef<'a>);
        impl WithKernel for Pack<'_> {
            type Out = (Blocking, usize, Vec<Line>);
            fn call<K: MicroKernel>(self, kern: &K) -> Self::Out {
                pack_all(kern, &self.0)
            }
        }
        let (blocking, bytes, lines) = kernels::with_kernel(path, precision, Pack(b))
            .expect("every path but Reference has a kernel");
        PackedB {
            path,
            precision,
            rows: b.rows,
            cols: b.cols,
            blocking,
            bytes,
            lines,
        }
    }

    /// `k`, the rows of B.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `n`, the columns of B.
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Memory held by the panels, in bytes.
    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    fn panels<P: bytemuck::Pod>(&self) -> &[P] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.lines);
        bytemuck::cast_slice(&bytes[..self.bytes])
    }
}

/// Packs all of `b` with `kern` in the layout `driver::run` reads.
fn pack_all<K: MicroKernel>(kern: &K, b: &MatRef<'_>) -> (Blocking, usize, Vec<Line>) {
    let (depth, n) = (b.rows, b.cols);
    if depth == 0 || n == 0 {
        return (Blocking::new::<K>(1, 1, 1), 0, Vec::new());
    }
    let blk = Blocking::new::<K>(1, n, depth);
    let len = blk.b_len::<K>(n, depth);
    let bytes = len * std::mem::size_of::<K::Packed>();
    let mut lines = vec![Line([0; 64]); bytes.div_ceil(64)];
    let all: &mut [K::Packed] = &mut bytemuck::cast_slice_mut(&mut lines)[..len];
    let op = Operand::cols_of(b);
    for n0 in (0..n).step_by(blk.nco) {
        let nb = blk.nco.min(n - n0);
        for d0 in (0..depth).step_by(blk.kc) {
            let dc = blk.kc.min(depth - d0);
            let (offset, len) = blk.b_block::<K>(depth, (n0, nb), (d0, dc));
            let spec = PanelSpec {
                lane0: n0,
                lanes: nb,
                d0,
                dc,
                width: K::NR,
            };
            kern.pack(&op, spec, &mut all[offset..offset + len]);
        }
    }
    (blk, bytes, lines)
}

/// `C = alpha * A * B (+ C when accumulate)` with B prepacked: as [`super::gemm`] with the B
/// that `b` was packed from, bit for bit.
///
/// Panics if the shapes do not fit, a view reaches past its data, or `precision` is not the
/// one `b` was packed for.
pub fn gemm_packed(
    alpha: f32,
    a: MatRef<'_>,
    b: &PackedB,
    accumulate: bool,
    mut c: MatMut<'_>,
    precision: Precision,
    parallel: bool,
) {
    check_shapes(&a, (b.rows, b.cols), &c);
    check_view("A", &a);
    assert_eq!(
        precision, b.precision,
        "gemm_packed: B was packed for another precision"
    );
    if trivial(a.cols, accumulate, &mut c) {
        return;
    }
    struct Run<'a, 'c> {
        alpha: f32,
        a: MatRef<'a>,
        b: &'a PackedB,
        accumulate: bool,
        c: MatMut<'c>,
        parallel: bool,
    }
    impl WithKernel for Run<'_, '_> {
        type Out = ();
        fn call<K: MicroKernel>(self, kern: &K) {
            let Run { alpha, a, b, accumulate, c, parallel } = self;
            assert_eq!(K::PATH, b.path);
            let blk = Blocking::new::<K>(a.rows, b.cols, b.rows);
            assert_eq!(
                (blk.kc, blk.nco),
                (b.blocking.kc, b.blocking.nco),
                "gemm_packed: blocking changed since B was packed"
            );
            let panels = driver::BSource::Packed(b.panels::<K::Packed>());
            driver::run(kern, alpha, &a, panels, b.cols, accumulate, c, parallel);
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
    kernels::with_kernel(b.path, precision, run).expect("a packed B has a kernel path");
}
