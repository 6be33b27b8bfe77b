//! Unit tests of the prepacked B (`packed.rs`) on every kernel path this CPU supports: the
//! product with a `PackedB` is bit-identical to `gemm` with the B it was packed from, for every
//! dtype and layout of B, across outer column blocks (n > NCO) and k blocks (k > KC), serial
//! and parallel, accumulating or not; and the reference path (the oracle of `tests.rs`) agrees
//! with the portable kernel within the f32 bound.

use super::packed::PackedB;
use super::tests::{random, Store};
use super::{gemm_packed, gemm_with, KernelPath, MatMut, MatRef, Precision};
use crate::engine::rng::Rng;

const PATHS: [KernelPath; 4] = [
    KernelPath::Avx512Bf16,
    KernelPath::Avx512,
    KernelPath::Avx2,
    KernelPath::Portable,
];

/// C from `gemm_with(path, ..)` and from `gemm_packed` with B packed for `path`, on the same
/// starting C.
#[allow(clippy::too_many_arguments)]
fn both(
    path: KernelPath,
    (m, k, n): (usize, usize, usize),
    b_trans: bool,
    dtypes: (usize, usize),
    precision: Precision,
    accumulate: bool,
    parallel: bool,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let a_store = Store::new(&random(&mut rng, m * k), dtypes.0);
    let b_store = Store::new(&random(&mut rng, k * n + 3), dtypes.1);
    let a = MatRef::new(a_store.view(), m, k);
    // W [n, k] read transposed (a linear layer's weight), or B [k, n] row-major at offset 3.
    let b = if b_trans {
        MatRef::new(b_store.view(), n, k).t()
    } else {
        MatRef::strided(b_store.view(), 3, k, n, n)
    };
    let c0 = random(&mut rng, m * n);
    let (mut plain, mut packed) = (c0.clone(), c0);
    let alpha = -1.25;
    gemm_with(
        path,
        alpha,
        a,
        b,
        accumulate,
        MatMut::new(&mut plain, m, n),
        precision,
        parallel,
    );
    let pb = PackedB::with_path(path, b, precision);
    assert_eq!((pb.rows(), pb.cols(), pb.precision()), (k, n, precision));
    gemm_packed(
        alpha,
        a,
        &pb,
        accumulate,
        MatMut::new(&mut packed, m, n),
        precision,
        parallel,
    );
    (plain, packed)
}

fn same_bits(x: &[f32], y: &[f32]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
}

#[test]
fn packed_b_is_bit_identical_on_every_path() {
    // Tile edges, several k blocks (KC is 256-768), an odd depth (bf16 pair padding), and
    // n past NCO = 2048 (two outer column blocks).
    let shapes = [
        (1, 1, 1),
        (15, 33, 31),
        (29, 385, 47),
        (70, 1537, 65),
        (3, 800, 5),
        (33, 9, 2101),
        (230, 777, 190),
    ];
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precisions: &[Precision] = if path == KernelPath::Avx512Bf16 {
            &[Precision::Bf16]
        } else {
            &[Precision::F32, Precision::Bf16]
        };
        for &precision in precisions {
            for (s, &shape) in shapes.iter().enumerate() {
                let (plain, packed) = both(
                    path,
                    shape,
                    s % 2 == 0,
                    (s % 3, (s + 1) % 3),
                    precision,
                    s % 2 == 1,
                    s % 3 != 1,
                    s as u64,
                );
                assert!(
                    same_bits(&plain, &packed),
                    "{path:?} {precision:?} {shape:?}: packed B differs from gemm"
                );
            }
        }
    }
}

#[test]
fn packed_b_with_zero_depth_or_width() {
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precision = if path == KernelPath::Avx512Bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        let b = [1.0f32; 6];
        // k = 0: C = 0 (or unchanged when accumulating), as gemm does.
        let pb = PackedB::with_path(path, MatRef::from_f32(&b[..0], 0, 3), precision);
        for accumulate in [false, true] {
            let mut c = vec![5.0f32; 6];
            gemm_packed(
                1.0,
                MatRef::from_f32(&b[..0], 2, 0),
                &pb,
                accumulate,
                MatMut::new(&mut c, 2, 3),
                precision,
                true,
            );
            assert_eq!(c, vec![if accumulate { 5.0 } else { 0.0 }; 6], "{path:?}");
        }
        // n = 0: nothing to write.
        let pb = PackedB::with_path(path, MatRef::from_f32(&b, 3, 0), precision);
        assert_eq!(pb.bytes(), 0);
        gemm_packed(
            1.0,
            MatRef::from_f32(&b, 2, 3),
            &pb,
            false,
            MatMut::new(&mut [], 2, 0),
            precision,
            true,
        );
    }
}

#[test]
#[should_panic(expected = "packed for another precision")]
fn packed_b_rejects_another_precision() {
    let b = [1.0f32; 6];
    let pb = PackedB::with_path(KernelPath::Portable, MatRef::from_f32(&b, 3, 2), Precision::F32);
    let mut c = [0.0f32; 4];
    gemm_packed(
        1.0,
        MatRef::from_f32(&b, 2, 3),
        &pb,
        false,
        MatMut::new(&mut c, 2, 2),
        Precision::Bf16,
        false,
    );
}
