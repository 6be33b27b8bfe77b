//! The element-wise and row-wise CUDA kernels against the CPU backend, on every device (host
//! shim, and the GPU when there is one): casts, norms, activations, cross-entropy, embedding
//! with soft prompts, AdamW, and the alignment-distance reduction.
#![cfg(feature = "cuda-shim")]

mod cuda_util;

use cuda_util::*;
use polyadapt::engine::cpu::activation as act;
use polyadapt::engine::cpu::norm::{layer_norm, layer_norm_backward, rms_norm, rms_norm_backward, NormNeeds, NormSaved};
use polyadapt::engine::cpu::{cross_entropy as ce, distance, embedding as emb, pooling};
use polyadapt::engine::cuda::kernels::activation::{gelu_backward, gelu_forward, swiglu_backward, swiglu_forward};
use polyadapt::engine::cuda::kernels::adamw::{adamw_step, AdamSlot, AdamW};
use polyadapt::engine::cuda::kernels::align::{align_pairs, Side};
use polyadapt::engine::cuda::kernels::cast::cast;
use polyadapt::engine::cuda::kernels::cross_entropy::{cross_entropy_fused, cross_entropy_fused_in_place};
use polyadapt::engine::cuda::kernels::embedding::{embedding_backward_prompt, embedding_backward_table, embedding_forward};
use polyadapt::engine::cuda::kernels::norm::{norm_backward, norm_forward, NormGradsOut, NormKind};
use polyadapt::engine::cuda::Elem;
use polyadapt::engine::tensor::View;

#[test]
fn casts_round_like_the_half_crate() {
    on_every_device(|dev| {
        let mut g = Gen::new(1);
        // Values across the f16 range, its subnormals, overflow, and ties.
        let mut x = g.values(1000, 3.0);
        x.extend([65504.0, 65519.0, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 2.98e-8, 1e-40, 0.0, -0.0, 1.0 + 1.0 / 1024.0 + 1.0 / 2048.0]);
        x.extend(g.values(300, 1e-5));
        let xb = dev.upload_f32(&x, Elem::F32).unwrap();
        for elem in [Elem::BF16, Elem::F16] {
            let mut y = out(dev, elem, x.len());
            cast(dev, &xb, &mut y).unwrap();
            let bits: Vec<u16> = dev.download(&y).unwrap();
            for (i, (&b, &v)) in bits.iter().zip(&x).enumerate() {
                let want = match elem {
                    Elem::BF16 => half::bf16::from_f32(v).to_bits(),
                    _ => half::f16::from_f32(v).to_bits(),
                };
                assert_eq!(b, want, "{elem:?} of {v:e} (element {i})");
            }
            let mut back = out(dev, Elem::F32, x.len());
            cast(dev, &y, &mut back).unwrap();
            let back = dev.download_f32(&back).unwrap();
            assert_eq!(back, rounded(&x, elem), "{elem:?} back to f32");
        }
    });
}

#[test]
fn norms_forward_and_backward_match_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(2);
        for case in 0..12 {
            let rows = g.pick(&[1, 3, 17, 64, 130]);
            let d = g.pick(&[1, 7, 32, 100, 384]);
            let elem = FLOATS[case % 3];
            let kind = if case % 2 == 0 { NormKind::Layer } else { NormKind::Rms };
            let eps = 1e-5f32;
            // An offset mean makes the two-pass variance matter.
            let x: Vec<f32> = rounded(&g.values(rows * d, 2.0).iter().map(|v| v + 0.5).collect::<Vec<_>>(), elem);
            let w = g.values(d, 1.0);
            let bias = g.values(d, 0.5);
            let dy = rounded(&g.values(rows * d, 1.0), elem);
            let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&bias), to_f64(&dy));
            let what = format!("case {case}: {kind:?} {elem:?} rows {rows} d {d}");

            let xb = dev.upload_f32(&x, elem).unwrap();
            let wb = dev.upload_f32(&w, Elem::F32).unwrap();
            let bb = dev.upload_f32(&bias, Elem::F32).unwrap();
            let dyb = dev.upload_f32(&dy, elem).unwrap();
            let mut y = out(dev, elem, rows * d);
            let has_bias = kind == NormKind::Layer;
            let stats = norm_forward(dev, kind, &xb, &wb, has_bias.then_some(&bb), &mut y, rows, d, eps).unwrap();

            let mut y_ref = vec![0.0f64; rows * d];
            let (mean, rstd) = match kind {
                NormKind::Layer => layer_norm(&x64, &w64, Some(&b64), eps as f64, d, &mut y_ref),
                NormKind::Rms => (vec![], rms_norm(&x64, &w64, eps as f64, d, &mut y_ref)),
            };
            check(dev, &format!("{what}: y"), &y, &y_ref, tol(elem));
            check(dev, &format!("{what}: rstd"), &stats.rstd, &rstd, 1e-5);

            // Backward: dx overwritten, dw/db accumulated onto what is there.
            let mut dx = out(dev, elem, rows * d);
            let start = g.values(d, 1.0);
            let mut dw = dev.upload_f32(&start, Elem::F32).unwrap();
            let mut db = dev.upload_f32(&start, Elem::F32).unwrap();
            let grads = NormGradsOut { dx: Some(&mut dx), dw: Some(&mut dw), db: has_bias.then_some(&mut db) };
            norm_backward(dev, kind, &xb, &wb, &stats, &dyb, grads, rows, d).unwrap();
            let saved = NormSaved { x: Some(&x64), mean: &mean, rstd: &rstd, w: Some(&w64) };
            let needs = NormNeeds { dx: true, dw: true, db: has_bias };
            let r = match kind {
                NormKind::Layer => layer_norm_backward(&dy64, &saved, d, needs),
                NormKind::Rms => rms_norm_backward(&dy64, &saved, d, needs),
            };
            check(dev, &format!("{what}: dx"), &dx, r.dx.as_ref().unwrap(), tol(elem));
            let plus_start = |v: &[f64]| v.iter().zip(&start).map(|(a, &s)| a + s as f64).collect::<Vec<_>>();
            check(dev, &format!("{what}: dw"), &dw, &plus_start(r.dw.as_ref().unwrap()), 1e-5);
            if has_bias {
                check(dev, &format!("{what}: db"), &db, &plus_start(r.db.as_ref().unwrap()), 1e-5);
            }
        }
    });
}

#[test]
fn activations_match_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(3);
        for case in 0..9 {
            let elem = FLOATS[case % 3];
            let n = g.pick(&[1, 31, 1000, 4099]);
            // Wide inputs: the tanh form saturates, silu's exp overflows (both must stay finite).
            let mut x = rounded(&g.values(n, 6.0), elem);
            if n > 2 {
                x[0] = rounded(&[-100.0], elem)[0];
                x[1] = rounded(&[100.0], elem)[0];
            }
            let up = rounded(&g.values(n, 2.0), elem);
            let dy = rounded(&g.values(n, 1.0), elem);
            let (x64, up64, dy64) = (to_f64(&x), to_f64(&up), to_f64(&dy));
            let (xb, ub, dyb) = (dev.upload_f32(&x, elem).unwrap(), dev.upload_f32(&up, elem).unwrap(), dev.upload_f32(&dy, elem).unwrap());
            for kind in [act::GeluKind::Erf, act::GeluKind::Tanh] {
                let what = format!("case {case} {elem:?} n {n} {kind:?}");
                let mut y = out(dev, elem, n);
                gelu_forward(dev, kind, &xb, &mut y).unwrap();
                let mut want = vec![0.0; n];
                act::gelu(kind, &x64, &mut want);
                check(dev, &format!("{what} gelu"), &y, &want, tol(elem));
                let mut dx = out(dev, elem, n);
                gelu_backward(dev, kind, &xb, &dyb, &mut dx).unwrap();
                act::gelu_backward(kind, &x64, &dy64, &mut want);
                check(dev, &format!("{what} gelu backward"), &dx, &want, tol(elem));
            }
            let what = format!("case {case} {elem:?} n {n} swiglu");
            let mut y = out(dev, elem, n);
            swiglu_forward(dev, &xb, &ub, &mut y).unwrap();
            let mut want = vec![0.0; n];
            act::swiglu(&x64, &up64, &mut want);
            check(dev, &what, &y, &want, tol(elem));
            let (mut dgate, mut dup) = (out(dev, elem, n), out(dev, elem, n));
            swiglu_backward(dev, &xb, &ub, &dyb, Some(&mut dgate), Some(&mut dup)).unwrap();
            act::swiglu_backward_gate(&x64, &up64, &dy64, &mut want);
            check(dev, &format!("{what} dgate"), &dgate, &want, tol(elem));
            act::swiglu_backward_up(&x64, &dy64, &mut want);
            check(dev, &format!("{what} dup"), &dup, &want, tol(elem));
        }
    });
}

#[test]
fn cross_entropy_fused_matches_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(4);
        for case in 0..9 {
            let elem = FLOATS[case % 3];
            let n = g.pick(&[1, 5, 33]);
            let c = g.pick(&[2, 17, 300, 5000]);
            let logits = rounded(&g.values(n * c, 8.0), elem);
            let mut targets: Vec<i64> = (0..n).map(|_| g.int(0, c - 1) as i64).collect();
            if n > 1 {
                targets[1] = ce::IGNORE_INDEX;
            }
            if case == 4 {
                targets.iter_mut().for_each(|t| *t = ce::IGNORE_INDEX); // every row ignored
            }
            let grad = 0.7f32;
            let what = format!("case {case} {elem:?} n {n} c {c}");
            let lb = dev.upload_f32(&logits, elem).unwrap();
            let mut dl = out(dev, elem, n * c);
            let loss = cross_entropy_fused(dev, &lb, &targets, c, grad, Some(&mut dl)).unwrap();
            let l64 = to_f64(&logits);
            let r = ce::cross_entropy(&l64, &targets, c);
            assert!(((loss as f64) - r.loss).abs() <= 1e-5 * r.loss.abs().max(1.0), "{what}: loss {loss} want {}", r.loss);
            let mut want = vec![0.0; n * c];
            ce::cross_entropy_backward(&l64, &r.max, &r.log_sum, &targets, r.count, c, grad as f64, &mut want);
            check(dev, &format!("{what} dlogits"), &dl, &want, tol(elem));
            // In place: the gradient over the logits.
            let mut inplace = dev.upload_f32(&logits, elem).unwrap();
            let loss2 = cross_entropy_fused_in_place(dev, &mut inplace, &targets, c, grad).unwrap();
            assert_eq!(loss, loss2, "{what}: in-place loss");
            check(dev, &format!("{what} dlogits (in place)"), &inplace, &want, tol(elem));
        }
        // A bad target is an error, not a fault.
        let lb = dev.upload_f32(&[0.0; 6], Elem::F32).unwrap();
        let e = cross_entropy_fused(dev, &lb, &[0, 3], 3, 1.0, None).unwrap_err();
        assert!(e.to_string().contains("target 3"), "{e}");
    });
}

#[test]
fn embedding_with_soft_prompt_matches_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(5);
        for case in 0..9 {
            let elem = FLOATS[case % 3];
            let (vocab, d) = (g.pick(&[3, 50, 1000]), g.pick(&[1, 8, 96]));
            let p = g.pick(&[0, 1, 5]);
            let batch = g.int(1, 4);
            let lens: Vec<usize> = (0..batch).map(|b| if b == 1 { 0 } else { g.int(0, 9) }).collect();
            let mut offsets = vec![0i32];
            for l in &lens {
                offsets.push(offsets.last().unwrap() + *l as i32);
            }
            let ntok = *offsets.last().unwrap() as usize;
            // Repeated ids: the table gradient sums them.
            let ids: Vec<i32> = (0..ntok).map(|_| g.int(0, vocab.min(7) - 1) as i32).collect();
            let table = rounded(&g.values(vocab * d, 1.0), elem);
            let prompt = g.values(p * d, 1.0);
            let what = format!("case {case} {elem:?} vocab {vocab} d {d} P {p} lens {lens:?}");
            let tb = dev.upload_f32(&table, elem).unwrap();
            let pb = dev.upload_f32(&prompt, Elem::F32).unwrap();
            let rows = ntok + batch * p;
            let mut o = out(dev, elem, rows * d);
            embedding_forward(dev, &tb, vocab, d, &ids, &offsets, (p > 0).then_some(&pb), p, &mut o).unwrap();
            // Reference: the CPU lookup, with the (rounded) prompt rows placed in front.
            let mut looked = vec![0.0f32; ntok * d];
            let ids_u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            emb::embedding(&ids_u, View::F32(&table), d, &mut looked);
            let prompt_r = rounded(&prompt, elem);
            let mut want = Vec::with_capacity(rows * d);
            for b in 0..batch {
                want.extend(to_f64(&prompt_r));
                want.extend(to_f64(&looked[offsets[b] as usize * d..offsets[b + 1] as usize * d]));
            }
            check(dev, &format!("{what} forward"), &o, &want, 0.0);
            // Backward.
            let dout = rounded(&g.values(rows * d, 1.0), elem);
            let db = dev.upload_f32(&dout, elem).unwrap();
            let start_p = g.values(p * d, 1.0);
            let mut dp = dev.upload_f32(&start_p, Elem::F32).unwrap();
            embedding_backward_prompt(dev, &db, &offsets, p, d, &mut dp).unwrap();
            let mut want_p = to_f64(&start_p);
            let mut dtok = Vec::with_capacity(ntok * d);
            for b in 0..batch {
                let r0 = offsets[b] as usize + b * p;
                for k in 0..p * d {
                    want_p[k] += dout[r0 * d + k] as f64;
                }
                dtok.extend(to_f64(&dout[(r0 + p) * d..(r0 + p + lens[b]) * d]));
            }
            check(dev, &format!("{what} dprompt"), &dp, &want_p, 1e-6);
            let start_t = g.values(vocab * d, 1.0);
            let mut dt = dev.upload_f32(&start_t, Elem::F32).unwrap();
            embedding_backward_table(dev, &db, &ids, &offsets, p, vocab, d, &mut dt).unwrap();
            let mut want_t = emb::embedding_backward(&ids_u, &dtok, vocab, d);
            want_t.iter_mut().zip(&start_t).for_each(|(w, &s)| *w += s as f64);
            check(dev, &format!("{what} dtable"), &dt, &want_t, 1e-6);
        }
        let tb = dev.upload_f32(&[0.0; 4], Elem::F32).unwrap();
        let mut o = dev.alloc(Elem::F32, 4).unwrap();
        let e = embedding_forward(dev, &tb, 2, 2, &[0, 2], &[0, 2], None, 0, &mut o).unwrap_err();
        assert!(e.to_string().contains("token id 2"), "{e}");
    });
}

/// torch.optim.AdamW's update (single-tensor path), in f64.
fn adamw_ref(h: &AdamW, step: u64, scale: f32, p: &mut [f64], g: &[f32], m: &mut [f64], v: &mut [f64]) {
    let (lr, b1, b2, eps, wd) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64, h.eps as f64, h.weight_decay as f64);
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2 = 1.0 - b2.powi(step as i32);
    for i in 0..p.len() {
        let gi = g[i] as f64 * scale as f64;
        p[i] *= 1.0 - lr * wd;
        m[i] += (1.0 - b1) * (gi - m[i]);
        v[i] = v[i] * b2 + (1.0 - b2) * gi * gi;
        let denom = v[i].sqrt() / bc2.sqrt() + eps;
        p[i] -= lr / bc1 * (m[i] / denom);
    }
}

#[test]
fn adamw_over_many_tensors_matches_torch_formula() {
    on_every_device(|dev| {
        let mut g = Gen::new(6);
        let h = AdamW { lr: 3e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.05 };
        let lens = [1usize, 1023, 1024, 1025, 0, 5000, 17];
        let mut host: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = Vec::new();
        let mut bufs = Vec::new();
        for &n in &lens {
            let p = g.values(n, 1.0);
            bufs.push((
                dev.upload_f32(&p, Elem::F32).unwrap(),
                dev.alloc(Elem::F32, n).unwrap(),
                dev.alloc(Elem::F32, n).unwrap(),
                dev.alloc(Elem::F32, n).unwrap(),
            ));
            host.push((to_f64(&p), vec![0.0; n], vec![0.0; n]));
        }
        for step in 1..=3u64 {
            let scale = if step == 2 { 0.5 } else { 1.0 };
            let grads: Vec<Vec<f32>> = lens.iter().map(|&n| g.values(n, 2.0)).collect();
            for (b, gr) in bufs.iter_mut().zip(&grads) {
                dev.write_bytes(&mut b.1, bytemuck::cast_slice(gr)).unwrap();
            }
            let mut slots: Vec<AdamSlot> = bufs.iter_mut().map(|(p, gb, m, v)| AdamSlot { param: p, grad: &*gb, m, v }).collect();
            adamw_step(dev, &h, step, scale, &mut slots).unwrap();
            for ((p, m, v), gr) in host.iter_mut().zip(&grads) {
                adamw_ref(&h, step, scale, p, gr, m, v);
            }
        }
        for (i, ((p, _, v), b)) in host.iter().zip(&bufs).enumerate() {
            check(dev, &format!("tensor {i} param"), &b.0, p, 1e-6);
            check(dev, &format!("tensor {i} v"), &b.3, v, 1e-6);
        }
    });
}

/// The CPU reference of the alignment reduction on a padded batch: pooled features,
/// distances, and gradients of w_l2 * sum l2 + w_cos * sum cos.
#[allow(clippy::type_complexity)]
fn align_ref(h: &[f64], mask: &[f64], b: usize, t: usize, ht: &[f64], mt: &[f64], tt: usize, d: usize, w: (f64, f64)) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut fs, mut ft) = (vec![0.0; b * d], vec![0.0; b * d]);
    pooling::mean_pool(h, mask, b, t, d, &mut fs);
    pooling::mean_pool(ht, mt, b, tt, d, &mut ft);
    let mut diff = vec![0.0; b * d];
    let l2 = distance::sq_l2(&fs, &ft, b, d, &mut diff);
    let eps = 1e-8;
    let cos = distance::cosine_distance(&fs, &ft, b, d, eps);
    let (mut ga, mut gb, mut tmp) = (vec![0.0; b * d], vec![0.0; b * d], vec![0.0; b * d]);
    distance::sq_l2_backward(&diff, &vec![w.0; b], d, &mut ga);
    gb.iter_mut().zip(&ga).for_each(|(o, &v)| *o = -v);
    distance::cosine_distance_backward(&fs, &ft, &vec![w.1; b], d, eps, &mut tmp);
    ga.iter_mut().zip(&tmp).for_each(|(o, &v)| *o += v);
    distance::cosine_distance_backward(&ft, &fs, &vec![w.1; b], d, eps, &mut tmp);
    gb.iter_mut().zip(&tmp).for_each(|(o, &v)| *o += v);
    let (mut dhs, mut dht) = (vec![0.0; b * t * d], vec![0.0; b * tt * d]);
    pooling::mean_pool_backward(&ga, mask, b, t, d, &mut dhs);
    pooling::mean_pool_backward(&gb, mt, b, tt, d, &mut dht);
    (l2, cos, dhs, dht)
}

#[test]
fn alignment_reduction_matches_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(7);
        for case in 0..9 {
            let elem = FLOATS[case % 3];
            let b = g.int(1, 5);
            let d = g.pick(&[1, 7, 64, 384]);
            let (t, tt) = (g.int(1, 9), g.int(1, 9));
            // Padded masks with random lengths; pair 0's source is fully padded.
            let lens_s: Vec<usize> = (0..b).map(|i| if i == 0 { 0 } else { g.int(1, t) }).collect();
            let lens_t: Vec<usize> = (0..b).map(|_| g.int(1, tt)).collect();
            let mask = |lens: &[usize], t: usize| -> Vec<f32> { lens.iter().flat_map(|&l| (0..t).map(move |j| (j < l) as u8 as f32)).collect() };
            let (ms, mt) = (mask(&lens_s, t), mask(&lens_t, tt));
            let hs = rounded(&g.values(b * t * d, 1.0), elem);
            let ht = rounded(&g.values(b * tt * d, 1.0), elem);
            let w = (0.3 / b as f32, 0.7 / b as f32);
            let (l2, cos, dhs_w, dht_w) = align_ref(&to_f64(&hs), &to_f64(&ms), b, t, &to_f64(&ht), &to_f64(&mt), tt, d, (w.0 as f64, w.1 as f64));
            let what = format!("case {case} {elem:?} B {b} d {d} lens {lens_s:?} {lens_t:?}");
            // Padded layout with masks.
            let (hsb, htb) = (dev.upload_f32(&hs, elem).unwrap(), dev.upload_f32(&ht, elem).unwrap());
            let off = |t: usize| (0..=b).map(|i| (i * t) as i32).collect::<Vec<_>>();
            let (os, ot) = (off(t), off(tt));
            let (mut dhs, mut dht) = (out(dev, elem, hs.len()), out(dev, elem, ht.len()));
            let s_side = Side { hidden: &hsb, offsets: &os, mask: Some(&ms) };
            let t_side = Side { hidden: &htb, offsets: &ot, mask: Some(&mt) };
            let r = align_pairs(dev, &s_side, &t_side, d, w.0, w.1, 1e-8, Some(&mut dhs), Some(&mut dht)).unwrap();
            check_values(&format!("{what} l2"), &r.l2, &l2, 1e-5);
            check_values(&format!("{what} cos"), &r.cos, &cos, 1e-5);
            check(dev, &format!("{what} dhs"), &dhs, &dhs_w, tol(elem));
            check(dev, &format!("{what} dht"), &dht, &dht_w, tol(elem));
            // Packed layout: only the real rows, no mask; same results.
            let pack = |h: &[f32], lens: &[usize], t: usize| -> (Vec<f32>, Vec<i32>) {
                let mut v = Vec::new();
                let mut o = vec![0i32];
                for (i, &l) in lens.iter().enumerate() {
                    v.extend_from_slice(&h[i * t * d..(i * t + l) * d]);
                    o.push(o.last().unwrap() + l as i32);
                }
                (v, o)
            };
            let (hp, op) = pack(&hs, &lens_s, t);
            let (tp, otp) = pack(&ht, &lens_t, tt);
            let (hpb, tpb) = (dev.upload_f32(&hp, elem).unwrap(), dev.upload_f32(&tp, elem).unwrap());
            let (mut dhp, mut dtp) = (out(dev, elem, hp.len()), out(dev, elem, tp.len()));
            let r = align_pairs(
                dev,
                &Side { hidden: &hpb, offsets: &op, mask: None },
                &Side { hidden: &tpb, offsets: &otp, mask: None },
                d, w.0, w.1, 1e-8, Some(&mut dhp), Some(&mut dtp),
            )
            .unwrap();
            check_values(&format!("{what} packed l2"), &r.l2, &l2, 1e-5);
            let packed_want = |full: &[f64], lens: &[usize], t: usize| -> Vec<f64> {
                lens.iter().enumerate().flat_map(|(i, &l)| full[i * t * d..(i * t + l) * d].to_vec()).collect()
            };
            check(dev, &format!("{what} packed dhs"), &dhp, &packed_want(&dhs_w, &lens_s, t), tol(elem));
            check(dev, &format!("{what} packed dht"), &dtp, &packed_want(&dht_w, &lens_t, tt), tol(elem));
        }
    });
}
