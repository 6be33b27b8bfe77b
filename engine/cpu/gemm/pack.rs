//! Packing: copies a block of an operand into the contiguous panel layout a micro-kernel reads,
//! converting the stored type (f32, bf16, f16) on the way and handling any strides.
//!
//! A block is seen as `lanes x depth`: the lanes are the rows of A or the columns of B (the
//! dimension a kernel spreads across a tile), the depth is k. A panel covers `width` lanes
//! (the kernel's MR for A, NR for B) over `dc` depth steps, zero-padded past the last lane so
//! kernels never read outside the operand:
//! - f32 panels: `panel[d * width + l]` = X(lane l, depth d);
//! - bf16 pair panels: `panel[(d / 2 * width + l) * 2 + d % 2]` = bf16 bits of X(lane l, d),
//!   the two consecutive k of one lane side by side as VDPBF16PS multiplies them; an odd `dc`
//!   is padded with a zero k.
//!
//! Rounding to bf16 is round-to-nearest-even with NaN kept quiet, exactly `bf16::from_f32`.
//!
//! Three source layouts are handled: lanes contiguous (row-major B, column-major A: each depth
//! step is one contiguous run copied to one panel row), depth contiguous (row-major A, and B
//! = W^T for weights stored `[out, in]`: each lane's run is converted then scattered into a
//! panel column), and any other strides (element by element).

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::MatRef;
use crate::engine::tensor::View;

/// Depth steps converted at a time in the depth-contiguous case (a small stack buffer).
const RUN: usize = 64;
/// The widest panel any kernel uses (the AVX-512 NR).
pub(crate) const MAX_WIDTH: usize = 32;

/// An operand seen as `lanes x depth`: element (l, d) is `data[offset + l * lane_stride + d *
/// depth_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: View<'a>,
    offset: usize,
    lane_stride: usize,
    depth_stride: usize,
}

impl<'a> Operand<'a> {
    /// A as packed into row panels: lanes are rows, depth is columns.
    pub(crate) fn rows_of(a: &MatRef<'a>) -> Self {
        Operand {
            data: a.data,
            offset: a.offset,
            lane_stride: a.row_stride,
            depth_stride: a.col_stride,
        }
    }

    /// B as packed into column panels: lanes are columns, depth is rows.
    pub(crate) fn cols_of(b: &MatRef<'a>) -> Self {
        Operand {
            data: b.data,
            offset: b.offset,
            lane_stride: b.col_stride,
            depth_stride: b.row_stride,
        }
    }
}

/// Panels to pack: lanes `lane0..lane0 + lanes` in `lanes.div_ceil(width)` panels of `width`
/// lanes (the last zero-padded), depth `d0..d0 + dc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelSpec {
    pub lane0: usize,
    pub lanes: usize,
    pub d0: usize,
    pub dc: usize,
    pub width: usize,
}

/// Elements in an f32 panel.
pub(crate) fn f32_panel_len(dc: usize, width: usize) -> usize {
    dc * width
}

/// Elements (u16) in a bf16 pair panel.
pub(crate) fn pair_panel_len(dc: usize, width: usize) -> usize {
    dc.div_ceil(2) * 2 * width
}

/// A stored element type: conversion to f32 and rounding to bf16 bits, one at a time and by
/// contiguous runs (the run forms are the fast paths).
trait Elem: Copy {
    fn to_f32(self) -> f32;
    fn to_bf16_bits(self) -> u16;
    fn run_to_f32(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    fn run_to_bf16_bits(src: &[Self], dst: &mut [u16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_bf16_bits();
        }
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn to_bf16_bits(self) -> u16 {
        bf16::from_f32(self).to_bits()
    }
    fn run_to_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn to_bf16_bits(self) -> u16 {
        self.to_bits()
    }
    fn run_to_bf16_bits(src: &[Self], dst: &mut [u16]) {
        dst.copy_from_slice(bytemuck::cast_slice(src));
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn to_bf16_bits(self) -> u16 {
        bf16::from_f32(f16::to_f32(self)).to_bits()
    }
    fn run_to_f32(src: &[Self], dst: &mut [f32]) {
        // half converts slices with F16C where the CPU has it.
        src.convert_to_f32_slice(dst);
    }
}

/// Packs the panels of `p` into `dst`, each `f32_panel_len(dc, width)` long; with `round`,
/// every value is rounded to bf16 (the f32 kernels then compute the bf16 product exactly, as
/// products of bf16 values are exact in f32). `simd`: use the AVX-512 packers (the caller
/// checked that the CPU has AVX-512F and BW).
pub(crate) fn pack_f32_panels(op: &Operand<'_>, p: PanelSpec, round: bool, simd: bool, dst: &mut [f32]) {
    let len = f32_panel_len(p.dc, p.width);
    let dst = &mut dst[..p.lanes.div_ceil(p.width) * len];
    #[cfg(target_arch = "x86_64")]
    if simd && (op.lane_stride == 1 || op.depth_stride == 1) {
        let unit = super::pack_avx512::Unit::F32 { round };
        let dst = bytemuck::cast_slice_mut(dst);
        match op.data {
            View::F32(s) => simd_panels(s, op, p, unit, dst),
            View::BF16(s) => simd_panels(s, op, p, unit, dst),
            View::F16(s) => simd_panels(s, op, p, unit, dst),
        }
        return;
    }
    let _ = simd;
    for (i, panel) in dst.chunks_exact_mut(len).enumerate() {
        let lane0 = p.lane0 + i * p.width;
        let one = PanelSpec { lane0, lanes: p.width.min(p.lane0 + p.lanes - lane0), ..p };
        match op.data {
            View::F32(s) => f32_panel(s, op, one, panel),
            View::BF16(s) => f32_panel(s, op, one, panel),
            View::F16(s) => f32_panel(s, op, one, panel),
        }
    }
    if round && !matches!(op.data, View::BF16(_)) {
        for x in dst.iter_mut() {
            *x = bf16::from_f32(*x).to_f32();
        }
    }
}

/// Packs the panels of `p` into `dst` as bf16 pair panels, each `pair_panel_len(dc, width)`
/// long; `simd` as for [`pack_f32_panels`].
pub(crate) fn pack_pair_panels(op: &Operand<'_>, p: PanelSpec, simd: bool, dst: &mut [u16]) {
    let len = pair_panel_len(p.dc, p.width);
    let dst = &mut dst[..p.lanes.div_ceil(p.width) * len];
    #[cfg(target_arch = "x86_64")]
    if simd && (op.lane_stride == 1 || op.depth_stride == 1) {
        let unit = super::pack_avx512::Unit::Pair;
        // Panels start at even offsets of a 64-byte aligned buffer: pairs are 4-byte aligned.
        let dst = bytemuck::cast_slice_mut(dst);
        match op.data {
            View::F32(s) => simd_panels(s, op, p, unit, dst),
            View::BF16(s) => simd_panels(s, op, p, unit, dst),
            View::F16(s) => simd_panels(s, op, p, unit, dst),
        }
        return;
    }
    let _ = simd;
    for (i, panel) in dst.chunks_exact_mut(len).enumerate() {
        let lane0 = p.lane0 + i * p.width;
        let one = PanelSpec { lane0, lanes: p.width.min(p.lane0 + p.lanes - lane0), ..p };
        match op.data {
            View::F32(s) => pair_panel(s, op, one, panel),
            View::BF16(s) => pair_panel(s, op, one, panel),
            View::F16(s) => pair_panel(s, op, one, panel),
        }
    }
}

/// The AVX-512 packers on a lane-contiguous or depth-contiguous source.
#[cfg(target_arch = "x86_64")]
fn simd_panels<T: super::pack_avx512::SimdSrc>(
    s: &[T],
    op: &Operand<'_>,
    p: PanelSpec,
    unit: super::pack_avx512::Unit,
    dst: &mut [u32],
) {
    use super::pack_avx512::{pack_depth_runs, pack_lane_rows, Block};
    let PanelSpec { lane0, lanes, d0, dc, width } = p;
    let first = op.offset + lane0 * op.lane_stride + d0 * op.depth_stride;
    let block = Block { first, lane_stride: op.lane_stride, depth_stride: op.depth_stride, lanes, depth: dc };
    if op.lane_stride == 1 {
        // SAFETY: the caller checked that the CPU has AVX-512F and BW.
        unsafe { pack_lane_rows(s, block, width, unit, dst) };
        return;
    }
    let len = dst.len() / lanes.div_ceil(width);
    for (i, panel) in dst.chunks_exact_mut(len).enumerate() {
        let first = first + i * width * op.lane_stride;
        let lanes = width.min(lanes - i * width);
        let ahead = width * op.lane_stride;
        // SAFETY: the caller checked that the CPU has AVX-512F and BW.
        unsafe { pack_depth_runs(s, Block { first, lanes, ..block }, width, unit, ahead, panel) };
    }
}

/// Asks for `s[start..start + len]` (the same lane of the next panel) to be brought into the
/// cache: the rows of a depth-contiguous block are short runs far apart, which the hardware
/// prefetcher does not follow, so without this the packer waits on memory at every run.
#[inline(always)]
fn prefetch_run<T>(s: &[T], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let line = 64 / std::mem::size_of::<T>();
        for i in (start..(start + len).min(s.len())).step_by(line) {
            // SAFETY: SSE (all x86_64 CPUs) is the only feature needed; a prefetch is a hint
            // that never faults, and i is inside s anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().wrapping_add(i) as *const i8) };
        }
    }
}

fn f32_panel<T: Elem>(s: &[T], op: &Operand<'_>, p: PanelSpec, dst: &mut [f32]) {
    let PanelSpec {
        lane0,
        lanes,
        d0,
        dc,
        width,
    } = p;
    let first = op.offset + lane0 * op.lane_stride + d0 * op.depth_stride;
    if op.lane_stride == 1 {
        for (d, row) in dst.chunks_exact_mut(width).enumerate() {
            let start = first + d * op.depth_stride;
            T::run_to_f32(&s[start..start + lanes], &mut row[..lanes]);
            row[lanes..].fill(0.0);
        }
    } else if op.depth_stride == 1 {
        if lanes < width {
            dst.fill(0.0);
        }
        let mut run = [0.0f32; RUN];
        for l in 0..lanes {
            let start = first + l * op.lane_stride;
            prefetch_run(s, start + width * op.lane_stride, dc);
            for c0 in (0..dc).step_by(RUN) {
                let len = RUN.min(dc - c0);
                T::run_to_f32(&s[start + c0..start + c0 + len], &mut run[..len]);
                for (x, v) in dst[c0 * width + l..]
                    .iter_mut()
                    .step_by(width)
                    .zip(&run[..len])
                {
                    *x = *v;
                }
            }
        }
    } else {
        for (d, row) in dst.chunks_exact_mut(width).enumerate() {
            for (l, x) in row.iter_mut().enumerate() {
                *x = if l < lanes {
                    s[first + l * op.lane_stride + d * op.depth_stride].to_f32()
                } else {
                    0.0
                };
            }
        }
    }
}

fn pair_panel<T: Elem>(s: &[T], op: &Operand<'_>, p: PanelSpec, dst: &mut [u16]) {
    let PanelSpec {
        lane0,
        lanes,
        d0,
        dc,
        width,
    } = p;
    assert!(width <= MAX_WIDTH, "pack: panel wider than {MAX_WIDTH}");
    let first = op.offset + lane0 * op.lane_stride + d0 * op.depth_stride;
    if op.lane_stride == 1 {
        let (mut even, mut odd) = ([0u16; MAX_WIDTH], [0u16; MAX_WIDTH]);
        for (k2, row) in dst.chunks_exact_mut(2 * width).enumerate() {
            let start = first + 2 * k2 * op.depth_stride;
            T::run_to_bf16_bits(&s[start..start + lanes], &mut even[..lanes]);
            if 2 * k2 + 1 < dc {
                let start = start + op.depth_stride;
                T::run_to_bf16_bits(&s[start..start + lanes], &mut odd[..lanes]);
            } else {
                odd.fill(0);
            }
            for (pair, (e, o)) in row
                .chunks_exact_mut(2)
                .zip(even.iter().zip(&odd))
                .take(lanes)
            {
                pair[0] = *e;
                pair[1] = *o;
            }
            row[2 * lanes..].fill(0);
        }
    } else if op.depth_stride == 1 {
        if lanes < width || dc % 2 == 1 {
            dst.fill(0);
        }
        let mut run = [0u16; RUN];
        for l in 0..lanes {
            let start = first + l * op.lane_stride;
            prefetch_run(s, start + width * op.lane_stride, dc);
            for c0 in (0..dc).step_by(RUN) {
                let len = RUN.min(dc - c0);
                T::run_to_bf16_bits(&s[start + c0..start + c0 + len], &mut run[..len]);
                // RUN is even, so c0 starts a pair: pairs of the run go to consecutive k2 rows.
                let rows = dst[c0 / 2 * 2 * width + 2 * l..].chunks_mut(2 * width);
                for (row, v) in rows.zip(run[..len].chunks(2)) {
                    row[..v.len()].copy_from_slice(v);
                }
            }
        }
    } else {
        for (k2, row) in dst.chunks_exact_mut(2 * width).enumerate() {
            for (i, x) in row.iter_mut().enumerate() {
                let (l, d) = (i / 2, 2 * k2 + i % 2);
                *x = if l < lanes && d < dc {
                    s[first + l * op.lane_stride + d * op.depth_stride].to_bf16_bits()
                } else {
                    0
                };
            }
        }
    }
}
