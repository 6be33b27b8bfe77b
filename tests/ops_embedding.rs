//! Embedding lookup: gathers rows exactly from f32/bf16/f16 tables, scatter-adds gradients
//! (repeated ids accumulate) deterministically, rejects out-of-range ids, records nothing for a
//! frozen table.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::embedding as k;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::{DType, Tensor};
use proptest::prelude::*;

fn gather_ref(table: &[f64], ids: &[u32], d: usize) -> Vec<f64> {
    ids.iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].to_vec()).collect()
}

fn ids_for(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| (polyadapt::engine::rng::bits(seed, 3, i as u64) % vocab as u64) as u32).collect()
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn embedding_matches_reference(b in 0usize..3, t in 0usize..5, vocab in 1usize..7, d in 0usize..6, seed in any::<u64>()) {
        let table = rand_vec(seed, vocab * d, 1.0);
        // Few ids over a small vocabulary: repeats are common, and test accumulation.
        let ids = ids_for(seed, b * t, vocab);
        let run = run_op(&[(&table, &[vocab, d])], 1, seed ^ 1, |tp, v| ops::embedding(tp, &v[0], &ids, &[b, t]));
        prop_assert_eq!(&run.shape, &vec![b, t, d]);
        let (t64, g64) = (to64(&table), to64(&run.g));
        prop_assert_eq!(to64(&run.out), gather_ref(&t64, &ids, d));
        let fd = finite_diff(|v| dot(&g64, &gather_ref(v, &ids, d)), &t64, 1e-6);
        let kernel = k::embedding_backward(&ids, &g64, vocab, d);
        // Repeated ids sum upstream gradients, which may cancel: errors follow |g|.
        let sg = norm(&g64).max(1e-6);
        assert_close_scaled("f64 dtable", &kernel, &fd, 1e-7, sg);
        assert_grads_scaled(&run, &[kernel], 1e-6, &[sg]);
    }
}

#[test]
fn half_precision_tables_are_read_in_place() {
    let (vocab, d) = (5, 3);
    let table = Tensor::new(rand_vec(9, vocab * d, 1.0), &[vocab, d]);
    let ids = [4u32, 0, 4, 2];
    for dtype in [DType::BF16, DType::F16] {
        let stored = table.to_dtype(dtype);
        let want = stored.to_dtype(DType::F32);
        let y = ops::embedding(&mut Tape::new(), &Var::constant(stored), &ids, &[4]).unwrap();
        assert_eq!(y.value().dtype(), DType::F32);
        let got = y.value().f32s();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(&got[i * d..(i + 1) * d], &want.f32s()[id as usize * d..(id as usize + 1) * d]);
        }
    }
}

#[test]
fn out_of_range_ids_and_bad_shapes_are_errors() {
    let table = Var::constant(Tensor::zeros(&[10, 4]));
    let mut tape = Tape::new();
    let e = ops::embedding(&mut tape, &table, &[1, 10, 3], &[3]).unwrap_err();
    assert_eq!(e.to_string(), "embedding: token id 10 (position 1) is out of range for a vocabulary of 10");
    let e = ops::embedding(&mut tape, &table, &[1, 2, 3], &[2, 2]).unwrap_err();
    assert!(e.to_string().contains("3 ids cannot have shape [2, 2]"), "{e}");
    let e = ops::embedding(&mut tape, &Var::constant(Tensor::zeros(&[10])), &[1], &[1]).unwrap_err();
    assert!(e.to_string().contains("table must be [vocab, dim]"), "{e}");
}

#[test]
fn scatter_add_does_not_depend_on_thread_count() {
    // Large enough to run in parallel: 3000 x 64 table, 5000 positions over few ids.
    let (vocab, d, n) = (3000, 64, 5000);
    let ids = ids_for(7, n, 50);
    let dy = rand_vec(8, n * d, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| k::embedding_backward(&ids, &dy, vocab, d))
    };
    let one = run(1);
    assert_eq!(one, run(3));
    // Row 0 of the gradient is exactly the in-order sum of its positions.
    let mut want = vec![0.0f32; d];
    for (i, _) in ids.iter().enumerate().filter(|(_, &id)| id == 0) {
        for j in 0..d {
            want[j] += dy[i * d + j];
        }
    }
    assert_eq!(&one[..d], &want[..]);
}

/// A frozen table records nothing; a trainable one keeps no tensor (only the ids).
#[test]
fn what_the_tape_keeps() {
    let mut store = ParamStore::new();
    let frozen = store.add("frozen", Tensor::zeros(&[4, 2]), false).unwrap();
    let trained = store.add("trained", Tensor::zeros(&[4, 2]), true).unwrap();
    let mut tape = Tape::new();
    let vf = tape.param(&store, frozen);
    let y = ops::embedding(&mut tape, &vf, &[1, 3], &[2]).unwrap();
    assert!(!y.requires_grad());
    assert_eq!(tape.stats().ops, 0);
    let vt = tape.param(&store, trained);
    let y = ops::embedding(&mut tape, &vt, &[1, 3, 1], &[3]).unwrap();
    let s = tape.stats();
    assert_eq!((s.ops, s.saved_activation_bytes), (1, 0));
    let loss = ops::sum_all(&mut tape, &y).unwrap();
    tape.backward(&loss, &mut store).unwrap();
    assert_eq!(store.grad(trained).unwrap().f32s(), [0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0]);
}
