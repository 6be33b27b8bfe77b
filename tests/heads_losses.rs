//! Pooling, the alignment loss and the L2-to-init regulariser: values against direct f64
//! computations and gradients against finite differences.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::heads::{pool, Pooling};
use polyadapt::models::losses::{alignment_loss, Distance, L2ToInit};
use proptest::prelude::*;

fn offsets_of(lens: &[usize]) -> Vec<usize> {
    let mut o = vec![0];
    for l in lens {
        o.push(o.last().unwrap() + l);
    }
    o
}

fn pool64(x: &[f64], d: usize, offsets: &[usize], how: Pooling) -> Vec<f64> {
    let mut out = Vec::new();
    for s in 0..offsets.len() - 1 {
        let rows = offsets[s]..offsets[s + 1];
        for j in 0..d {
            out.push(match how {
                Pooling::First => x[offsets[s] * d + j],
                Pooling::Mean if rows.is_empty() => 0.0,
                Pooling::Mean => rows.clone().map(|r| x[r * d + j]).sum::<f64>() / rows.len() as f64,
            });
        }
    }
    out
}

fn align64(xs: &[f64], xt: &[f64], d: usize, os: &[usize], ot: &[usize], how: Pooling, dist: Distance) -> f64 {
    let (ps, pt) = (pool64(xs, d, os, how), pool64(xt, d, ot, how));
    let b = os.len() - 1;
    let per: Vec<f64> = (0..b)
        .map(|i| {
            let (a, c) = (&ps[i * d..(i + 1) * d], &pt[i * d..(i + 1) * d]);
            match dist {
                Distance::SqL2 => a.iter().zip(c).map(|(x, y)| (x - y) * (x - y)).sum(),
                Distance::Cosine => {
                    let dot: f64 = a.iter().zip(c).map(|(x, y)| x * y).sum();
                    1.0 - dot / (norm(a).max(1e-8) * norm(c).max(1e-8))
                }
            }
        })
        .collect();
    per.iter().sum::<f64>() / b as f64
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn pooling_matches_reference(lens in proptest::collection::vec(1usize..5, 1..4), d in 1usize..5, mean in any::<bool>(), seed in any::<u64>()) {
        let how = if mean { Pooling::Mean } else { Pooling::First };
        let o = offsets_of(&lens);
        let n = *o.last().unwrap();
        let x = rand_vec(seed, n * d, 1.0);
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 1, |t, v| pool(t, &v[0], &o, how));
        let (x64, g64) = (to64(&x), to64(&run.g));
        assert_close("pooled", &to64(&run.out), &pool64(&x64, d, &o, how), 1e-6);
        let fd = finite_diff(|v| dot(&g64, &pool64(v, d, &o, how)), &x64, 1e-6);
        assert_grads_scaled(&run, &[fd], 1e-5, &[1.0]);
    }

    #[test]
    fn alignment_loss_matches_reference(ls in proptest::collection::vec((1usize..4, 1usize..4), 1..4), d in 2usize..5,
                                        cosine in any::<bool>(), mean in any::<bool>(), seed in any::<u64>()) {
        let dist = if cosine { Distance::Cosine } else { Distance::SqL2 };
        let how = if mean { Pooling::Mean } else { Pooling::First };
        let os = offsets_of(&ls.iter().map(|l| l.0).collect::<Vec<_>>());
        let ot = offsets_of(&ls.iter().map(|l| l.1).collect::<Vec<_>>());
        let (ns, nt) = (*os.last().unwrap(), *ot.last().unwrap());
        let (xs, xt) = (rand_vec(seed, ns * d, 1.0), rand_vec(seed ^ 2, nt * d, 1.0));
        let run = run_op(&[(&xs, &[ns, d]), (&xt, &[nt, d])], 3, seed ^ 1, |t, v| alignment_loss(t, &v[0], &os, &v[1], &ot, how, dist));
        let (s64, t64) = (to64(&xs), to64(&xt));
        let want = align64(&s64, &t64, d, &os, &ot, how, dist);
        assert_close_scaled("loss", &to64(&run.out), &[want], 1e-5, 1.0);
        let g = run.g[0] as f64;
        let fs: Vec<f64> = finite_diff(|v| align64(v, &t64, d, &os, &ot, how, dist), &s64, 1e-6).iter().map(|x| x * g).collect();
        let ft: Vec<f64> = finite_diff(|v| align64(&s64, v, d, &os, &ot, how, dist), &t64, 1e-6).iter().map(|x| x * g).collect();
        assert_grads_scaled(&run, &[fs, ft], 1e-4, &[1.0, 1.0]);
    }
}

#[test]
fn l2_to_init_is_zero_at_start_and_its_gradient_is_twice_the_displacement() {
    let mut store = ParamStore::new();
    let a = store.add("a", Tensor::new(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]), true).unwrap();
    let b = store.add("b", Tensor::new(vec![-1.0, 0.5], &[2]), true).unwrap();
    let reg = L2ToInit::new(&store, &[a, b]);
    let mut tape = Tape::new();
    assert_eq!(reg.loss(&mut tape, &store).unwrap().value().f32s(), &[0.0]);
    store.set_value(a, Tensor::new(vec![1.5, 2.0, 3.0, 3.0], &[2, 2])).unwrap();
    store.set_value(b, Tensor::new(vec![-1.0, 1.5], &[2])).unwrap();
    let mut tape = Tape::new();
    let l = reg.loss(&mut tape, &store).unwrap();
    assert!((l.value().f32s()[0] - (0.25 + 1.0 + 1.0)).abs() < 1e-6);
    tape.backward(&l, &mut store).unwrap();
    assert_eq!(store.grad(a).unwrap().f32s(), &[1.0, 0.0, 0.0, -2.0]);
    assert_eq!(store.grad(b).unwrap().f32s(), &[0.0, 2.0]);
}

#[test]
fn first_token_of_an_empty_sequence_is_an_error() {
    let mut tape = Tape::new();
    let x = polyadapt::engine::autograd::Var::constant(Tensor::zeros(&[3, 2]));
    assert!(pool(&mut tape, &x, &[0, 0, 3], Pooling::First).is_err());
    let m = pool(&mut tape, &x, &[0, 0, 3], Pooling::Mean).unwrap();
    assert_eq!(m.shape(), &[2, 2]);
}
