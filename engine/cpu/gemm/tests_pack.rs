//! Unit tests of the packers: every source layout (lanes contiguous, depth contiguous, other
//! strides), dtype, scalar and AVX-512 path, one panel or a group, gives the panel layouts of
//! `pack.rs` exactly, including the bf16 rounding of special values (bit-exact with
//! `bf16::from_f32`).

use half::bf16;

use super::pack::{self, Operand, PanelSpec};
use super::tests::{random, Store};
use super::{KernelPath, MatRef};
use crate::engine::rng::Rng;

/// Test values with rounding ties (to even both ways), subnormals, infinities, NaNs with
/// payloads and overflow among uniform ones.
fn values() -> Vec<f32> {
    let mut values = random(&mut Rng::new(4), 4000);
    let special = [
        0x3F80_8000u32,
        0x3F81_8000,
        0x3F80_8001,
        0x0000_0001,
        0x8000_7FFF,
        0x0000_8000,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0001,
        0xFF81_2345,
        0x7F7F_FFFF,
        0x8000_0000,
    ];
    for (i, bits) in special.iter().cycle().take(values.len() / 5).enumerate() {
        values[5 * i + 2] = f32::from_bits(*bits);
    }
    values
}

/// (lane0, lanes, d0, dc, width): one full panel, a short one, a group of three panels with a
/// short last one, odd depths.
const SPECS: [(usize, usize, usize, usize, usize); 7] = [
    (0, 14, 0, 37, 14),
    (28, 2, 3, 33, 14),
    (0, 30, 0, 37, 14),
    (0, 30, 0, 36, 32),
    (5, 9, 1, 5, 16),
    (3, 17, 2, 35, 32),
    (1, 29, 2, 33, 16),
];

#[test]
fn panels_follow_the_documented_layout() {
    let values = values();
    let simd_paths: &[bool] = if KernelPath::Avx512.supported() {
        &[false, true]
    } else {
        &[false]
    };
    for dtype in 0..3 {
        let store = Store::new(&values, dtype);
        // (lane_stride, depth_stride): lanes contiguous, depth contiguous, neither.
        for (ls, ds) in [(1, 40), (45, 1), (3, 97)] {
            let m = MatRef {
                data: store.view(),
                offset: 7,
                rows: 30,
                cols: 37,
                row_stride: ls,
                col_stride: ds,
            };
            let op = Operand::rows_of(&m);
            for &simd in simd_paths {
                for (lane0, lanes, d0, dc, width) in SPECS {
                    let p = PanelSpec {
                        lane0,
                        lanes,
                        d0,
                        dc,
                        width,
                    };
                    let panels = lanes.div_ceil(width);
                    // Element (lane l of panel i, depth d), zero past the lanes and the depth.
                    let at = |i: usize, l: usize, d: usize| {
                        let lane = i * width + l;
                        (lane < lanes && d < dc).then(|| m.at(lane0 + lane, d0 + d))
                    };
                    for round in [false, true] {
                        let len = pack::f32_panel_len(dc, width);
                        let mut out = vec![f32::NAN; panels * len];
                        pack::pack_f32_panels(&op, p, round, simd, &mut out);
                        for (i, d, l) in (0..panels).flat_map(|i| {
                            (0..dc).flat_map(move |d| (0..width).map(move |l| (i, d, l)))
                        }) {
                            let want = at(i, l, d).unwrap_or(0.0);
                            let want = if round {
                                bf16::from_f32(want).to_f32()
                            } else {
                                want
                            };
                            let got = out[i * len + d * width + l];
                            assert_eq!(got.to_bits(), want.to_bits(), "f32 dtype {dtype} strides ({ls},{ds}) simd {simd} {p:?} panel {i} l={l} d={d}");
                        }
                    }
                    let len = pack::pair_panel_len(dc, width);
                    let mut out = vec![0xFFFFu16; panels * len];
                    pack::pack_pair_panels(&op, p, simd, &mut out);
                    for (i, d, l) in (0..panels).flat_map(|i| {
                        (0..dc.div_ceil(2) * 2)
                            .flat_map(move |d| (0..width).map(move |l| (i, d, l)))
                    }) {
                        let want = at(i, l, d).map_or(0, |v| bf16::from_f32(v).to_bits());
                        let got = out[i * len + (d / 2 * width + l) * 2 + d % 2];
                        assert_eq!(got, want, "pairs dtype {dtype} strides ({ls},{ds}) simd {simd} {p:?} panel {i} l={l} d={d}");
                    }
                }
            }
        }
    }
}
