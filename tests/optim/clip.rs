//! Gradient clipping against torch.nn.utils.clip_grad_norm_ on the fixture's step-0 gradients:
//! the norm, the clipped gradients, the unclipped case; frozen parameters and parameters
//! without a gradient take no part; a non-finite norm behaves as in torch.

use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::optim::clip::clip_coefficient;
use polyadapt::engine::optim::{clip_grad_norm, grad_norm};
use polyadapt::engine::tensor::Tensor;

use super::fixture::{add_grad, assert_bitwise, fixture_store, max_ulps, ulps, Fixture, PARAMS};

/// The fixture store with every parameter's step-0 gradient (parameter 3 included).
fn store_with_step0_grads(fx: &Fixture) -> ParamStore {
    let (mut store, ids) = fixture_store(fx);
    for (i, &id) in ids.iter().enumerate() {
        add_grad(&mut store, id, fx.at_step(&format!("grad.{i}"), 0));
    }
    store
}

#[test]
fn norm_is_the_f32_nearest_the_exact_norm_and_within_an_ulp_of_torch() {
    let fx = Fixture::load();
    let store = store_with_step0_grads(&fx);
    let norm = grad_norm(&store);
    let exact = fx.f64s("clip.norm_f64")[0];
    assert_eq!(norm.to_bits(), (exact as f32).to_bits(), "norm {norm} vs exact {exact}");
    for k in 0..2 {
        let torch = fx.f32s(&format!("clip.norm.{k}"))[0];
        assert!(ulps(norm, torch) <= 1, "torch's f32 norm {torch} vs {norm}");
    }
}

#[test]
fn clipped_gradients_match_torch() {
    let fx = Fixture::load();
    for k in 0..2 {
        let mut store = store_with_step0_grads(&fx);
        let max_norm = fx.f64s(&format!("clip.max_norm.{k}"))[0] as f32;
        let torch_norm = fx.f32s(&format!("clip.norm.{k}"))[0];
        let norm = clip_grad_norm(&mut store, max_norm);
        assert!(ulps(norm, torch_norm) <= 1, "case {k}: returned norm {norm}, torch {torch_norm}");
        for i in 0..PARAMS {
            let id = store.id(&format!("p{i}")).unwrap();
            let got = store.grad(id).unwrap().f32s();
            let want = fx.f32s(&format!("clip.{k}.grad.{i}"));
            if norm == torch_norm {
                // Same norm, same f32 coefficient arithmetic: the same bits.
                assert_bitwise(&format!("case {k} gradient {i}"), got, want);
            } else {
                let (d, at) = max_ulps(got, want);
                assert!(d <= 2, "case {k} gradient {i}: {d} ulps at {at}");
            }
        }
        if k == 1 {
            // max_norm above the norm: gradients are exactly the input.
            for i in 0..PARAMS {
                let id = store.id(&format!("p{i}")).unwrap();
                assert_bitwise("unclipped", store.grad(id).unwrap().f32s(), fx.at_step(&format!("grad.{i}"), 0));
            }
        }
    }
}

#[test]
fn clipping_brings_the_norm_to_max_norm() {
    let fx = Fixture::load();
    let mut store = store_with_step0_grads(&fx);
    let before = clip_grad_norm(&mut store, 2.0);
    assert!(before > 2.0);
    let after = grad_norm(&store);
    assert!((after - 2.0).abs() <= 2.0 * 4.0 * f32::EPSILON, "norm after clipping {after}");
}

#[test]
fn frozen_parameters_and_parameters_without_gradient_take_no_part() {
    let mut store = ParamStore::new();
    let a = store.add("a", Tensor::new(vec![3.0, 0.0], &[2]), true).unwrap();
    store.add("frozen", Tensor::new(vec![100.0; 4], &[4]), false).unwrap();
    let idle = store.add("idle", Tensor::new(vec![50.0], &[1]), true).unwrap();
    let b = store.add("b", Tensor::new(vec![0.0], &[1]), true).unwrap();
    assert_eq!(grad_norm(&store), 0.0, "no gradients: norm 0");
    add_grad(&mut store, a, &[3.0, 0.0]);
    add_grad(&mut store, b, &[4.0]);
    assert_eq!(grad_norm(&store), 5.0);
    assert_eq!(clip_grad_norm(&mut store, 1.0), 5.0);
    assert!(store.grad(idle).is_none());
    let coef = clip_coefficient(5.0, 1.0);
    assert_eq!(store.grad(a).unwrap().f32s(), &[3.0 * coef, 0.0]);
    assert_eq!(store.grad(b).unwrap().f32s(), &[4.0 * coef]);
}

#[test]
fn non_finite_norms_scale_as_torch_does() {
    // torch: clip_coef = max_norm / (nan + 1e-6) = nan, clamp keeps nan, every gradient * nan.
    assert!(clip_coefficient(f32::NAN, 1.0).is_nan());
    assert_eq!(clip_coefficient(f32::INFINITY, 1.0), 0.0);
    assert_eq!(clip_coefficient(0.5, 1.0), 1.0, "never scaled up");
    let mut store = ParamStore::new();
    let a = store.add("a", Tensor::new(vec![0.0; 2], &[2]), true).unwrap();
    add_grad(&mut store, a, &[f32::NAN, 1.0]);
    assert!(clip_grad_norm(&mut store, 1.0).is_nan());
    assert!(store.grad(a).unwrap().f32s().iter().all(|x| x.is_nan()));
}
