//! The element-wise and row-wise CUDA kernels against the CPU backend, on every device (host
//! shim, and the GPU when there is one): casts, norms.
#![cfg(feature = "cuda-shim")]

mod cuda_util;

use cuda_util::*;
use polyadapt::engine::cpu::norm::{layer_norm, layer_norm_backward, rms_norm, rms_norm_backward, NormNeeds, NormSaved};
use polyadapt::engine::cuda::kernels::cast::cast;
use polyadapt::engine::cuda::kernels::norm::{norm_backward, norm_forward, NormGradsOut, NormKind};
use polyadapt::engine::cuda::Elem;

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
