//! Properties of AdamW on random shapes and hyperparameters: bit for bit what torch's sequence of
//! f32 tensor operations computes (written here op by op, as in `_single_tensor_adam`, with an
//! IEEE sqrt), close to the textbook AdamW in f64; and the same bits with 1 and 3 threads,
//! clipping included.

use polyadapt::engine::autograd::{ParamId, ParamStore};
use polyadapt::engine::optim::clip::NORM_CHUNK;
use polyadapt::engine::optim::update::UPDATE_CHUNK;
use polyadapt::engine::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

use super::common::{cases, rand_vec};
use super::fixture::{add_grad, assert_bitwise};

/// torch's `_single_tensor_adam` with decoupled weight decay, one tensor op at a time in f32,
/// each scalar rounded from the Python float; lerp and addcmul fused as torch's AVX builds run
/// them (`self + w * (end - self)`, `end - (end - self) * (1 - w)`, `self + value * t1 * t2`).
fn torch_ops(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &AdamWConfig, lr: f64, step: u64) {
    if c.weight_decay != 0.0 {
        let s = (1.0 - lr * c.weight_decay) as f32; // param.mul_(1 - lr * weight_decay)
        p.iter_mut().for_each(|x| *x *= s);
    }
    let w = (1.0 - c.beta1) as f32; // exp_avg.lerp_(grad, 1 - beta1)
    for (mi, &gi) in m.iter_mut().zip(g) {
        *mi = if w.abs() < 0.5 { w.mul_add(gi - *mi, *mi) } else { (-(gi - *mi)).mul_add(1.0 - w, gi) };
    }
    let b2 = c.beta2 as f32; // exp_avg_sq.mul_(beta2)
    v.iter_mut().for_each(|x| *x *= b2);
    let value = (1.0 - c.beta2) as f32; // .addcmul_(grad, grad, value=1 - beta2)
    for (vi, &gi) in v.iter_mut().zip(g) {
        *vi = (value * gi).mul_add(gi, *vi);
    }
    let bias_correction1 = 1.0 - c.beta1.powf(step as f64);
    let bias_correction2 = 1.0 - c.beta2.powf(step as f64);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);
    // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    let denom: Vec<f32> = v.iter().map(|&x| x.sqrt() / bias_correction2_sqrt as f32 + c.eps as f32).collect();
    // param.addcdiv_(exp_avg, denom, value=-step_size)
    let value = -step_size as f32;
    for ((pi, &mi), &d) in p.iter_mut().zip(m.iter()).zip(&denom) {
        *pi += value * mi / d;
    }
}

/// The textbook AdamW (Loshchilov & Hutter, as torch documents it) in f64.
fn textbook(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f32], c: &AdamWConfig, lr: f64, step: u64) {
    for i in 0..p.len() {
        let gi = g[i] as f64;
        p[i] -= lr * c.weight_decay * p[i];
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
        let m_hat = m[i] / (1.0 - c.beta1.powi(step as i32));
        let v_hat = v[i] / (1.0 - c.beta2.powi(step as i32));
        p[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
    }
}

fn config_strategy() -> impl Strategy<Value = AdamWConfig> {
    (
        prop_oneof![Just(0.0), Just(0.5), Just(0.9), 0.0..0.999f64],
        prop_oneof![Just(0.999), 0.5..0.99999f64],
        prop_oneof![Just(1e-8), Just(1e-6), Just(1e-3)],
        prop_oneof![Just(0.0), 0.0..0.3f64],
    )
        .prop_map(|(beta1, beta2, eps, weight_decay)| AdamWConfig { lr: 1e-3, beta1, beta2, eps, weight_decay })
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn update_is_torch_bit_for_bit_and_close_to_f64(
        sizes in prop::collection::vec(1usize..300, 1..4),
        lrs in prop::collection::vec(0.0..0.1f64, 1..6),
        c in config_strategy(),
        seed in 0u64..1000,
    ) {
        let mut store = ParamStore::new();
        let ids: Vec<ParamId> = sizes.iter().enumerate()
            .map(|(i, &n)| store.add(format!("w{i}"), Tensor::new(rand_vec(seed + i as u64, n, 2.0), &[n]), true).unwrap())
            .collect();
        let mut opt = AdamW::new(c).unwrap();
        let mut reference: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> =
            ids.iter().map(|&id| (store.value(id).f32s().to_vec(), vec![0.0; store.value(id).numel()], vec![0.0; store.value(id).numel()])).collect();
        let mut exact: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
            reference.iter().map(|(p, _, _)| (p.iter().map(|&x| x as f64).collect(), vec![0.0; p.len()], vec![0.0; p.len()])).collect();
        for (k, &lr) in lrs.iter().enumerate() {
            store.zero_grad();
            for (i, &id) in ids.iter().enumerate() {
                let g = rand_vec(seed * 31 + 7 * k as u64 + i as u64 + 5000, sizes[i], 1.0);
                add_grad(&mut store, id, &g);
                let (p, m, v) = &mut reference[i];
                torch_ops(p, m, v, &g, &c, lr, k as u64 + 1);
                let (p, m, v) = &mut exact[i];
                textbook(p, m, v, &g, &c, lr, k as u64 + 1);
            }
            opt.step(&mut store, lr).unwrap();
        }
        let lr_sum: f64 = lrs.iter().sum();
        for (i, &id) in ids.iter().enumerate() {
            let name = format!("w{i}");
            assert_bitwise(&name, store.value(id).f32s(), &reference[i].0);
            let (m, v) = opt.moments(&name).unwrap();
            assert_bitwise("m", m, &reference[i].1);
            assert_bitwise("v", v, &reference[i].2);
            for (j, (&got, &want)) in store.value(id).f32s().iter().zip(&exact[i].0).enumerate() {
                let tol = 1e-5 * (want.abs() + lr_sum);
                prop_assert!((got as f64 - want).abs() <= tol, "{} [{}]: {} vs f64 {}", name, j, got, want);
            }
        }
    }
}

/// Three steps with clipping on parameters spanning several parallel chunks; returns every
/// value, moment and norm.
fn run(threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let sizes = [3 * UPDATE_CHUNK.max(NORM_CHUNK) + 5, 100, 1, 2 * NORM_CHUNK];
        let mut store = ParamStore::new();
        let ids: Vec<ParamId> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| store.add(format!("w{i}"), Tensor::new(rand_vec(i as u64, n, 1.0), &[n]), true).unwrap())
            .collect();
        let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
        let mut norms = Vec::new();
        for k in 0..3u64 {
            store.zero_grad();
            for (i, &id) in ids.iter().enumerate() {
                add_grad(&mut store, id, &rand_vec(100 + 10 * k + i as u64, sizes[i], 3.0));
            }
            norms.push(clip_grad_norm(&mut store, 5.0));
            norms.push(grad_norm(&store));
            opt.step(&mut store, 1e-3).unwrap();
        }
        let mut out = Vec::new();
        for &id in &ids {
            out.push(store.value(id).f32s().to_vec());
            let (m, v) = opt.moments(store.name(id)).unwrap();
            out.push(m.to_vec());
            out.push(v.to_vec());
        }
        (out, norms)
    })
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (one, norms_one) = run(1);
    let (three, norms_three) = run(3);
    assert_bitwise("norms", &norms_three, &norms_one);
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert_bitwise(&format!("tensor {i}"), b, a);
    }
    assert!(norms_one[0] > 5.0, "the run clips: norm {}", norms_one[0]);
}
