//! Shared by the CUDA kernel tests (tests/cuda_*.rs): the devices to run on, random inputs,
//! and comparison with the CPU backend.
//!
//! Every test body runs on every available device: the host shim always (feature
//! `cuda-shim`), and the GPU when there is one. Without a GPU the GPU variant prints that it
//! was skipped; with `REQUIRE_GPU=1` and no GPU the test fails.
#![allow(dead_code)]

use polyadapt::engine::cuda::{Buffer, Device, Elem};
use polyadapt::engine::rng;

/// The devices a kernel test runs on: the shim and the GPU, or those `POLYADAPT_TEST_DEVICES`
/// names (`shim`, `gpu`, comma-separated; on the GPU machine, `gpu` skips the shim's slow
/// emulation of what was already checked where the shim is all there is).
pub fn devices() -> Vec<Device> {
    let only = std::env::var("POLYADAPT_TEST_DEVICES").ok().filter(|s| !s.is_empty());
    let wants = |d: &str| only.as_deref().is_none_or(|s| s.split(',').any(|x| x.trim() == d));
    if let Some(s) = &only {
        assert!(s.split(',').all(|x| ["shim", "gpu"].contains(&x.trim())), "POLYADAPT_TEST_DEVICES={s}: expected shim, gpu or both");
    }
    let mut v = if wants("shim") { vec![Device::shim()] } else { vec![] };
    if !wants("gpu") {
        return v;
    }
    match Device::gpu() {
        Ok(g) => v.push(g),
        Err(why) => {
            if std::env::var("REQUIRE_GPU").is_ok_and(|s| s == "1") {
                panic!("REQUIRE_GPU=1 but there is no GPU: {why}");
            }
            eprintln!("GPU variant skipped: {why}");
        }
    }
    v
}

/// Runs `body` on every device, naming the device in a failure. It runs on a thread of its
/// own with a 64 MB stack: the CUDA driver's calls overflowed the test harness's 2 MB threads
/// on an H100 (Device::gpu says more).
pub fn on_every_device(body: impl Fn(&Device) + Send) {
    std::thread::scope(|s| {
        let t = std::thread::Builder::new().stack_size(64 << 20).spawn_scoped(s, move || {
            for dev in devices() {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&dev)));
                if let Err(e) = r {
                    eprintln!("failed on device: {}", dev.name());
                    std::panic::resume_unwind(e);
                }
            }
        });
        if let Err(e) = t.expect("spawning the test thread").join() {
            std::panic::resume_unwind(e);
        }
    });
}

/// The float element types a kernel is tested with.
pub const FLOATS: [Elem; 3] = [Elem::F32, Elem::BF16, Elem::F16];

/// Relative tolerance (norm-wise, ||got - want|| / ||want||) of a result stored as `elem` and
/// computed with f32 accumulation: f32 rounding of the arithmetic, or the rounding of the
/// result to 16 bits (bf16 has 8 significant bits: 2^-9 relative per element; f16 11).
pub fn tol(elem: Elem) -> f64 {
    match elem {
        Elem::F32 => 1e-5,
        Elem::BF16 => 1e-2,
        Elem::F16 => 2e-3,
        _ => 0.0,
    }
}

/// A small deterministic generator for shapes and values.
pub struct Gen {
    rng: rng::Rng,
    seed: u64,
    n: u64,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen { rng: rng::Rng::new(seed), seed, n: 0 }
    }

    /// Uniform in lo..=hi.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.rng.below((hi - lo + 1) as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.int(0, xs.len() - 1)]
    }

    /// `n` values uniform in [-scale, scale) (random, never all zero).
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        self.n += 1;
        (0..n).map(|i| (rng::uniform(self.seed, self.n, i as u64) * 2.0 - 1.0) * scale).collect()
    }
}

/// `x` rounded to `elem` and back (the values a kernel of that type sees).
pub fn rounded(x: &[f32], elem: Elem) -> Vec<f32> {
    match elem {
        Elem::BF16 => x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
        Elem::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        _ => x.to_vec(),
    }
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// A poisoned (NaN-filled) output buffer.
pub fn out(dev: &Device, elem: Elem, len: usize) -> Buffer {
    let mut b = dev.alloc(elem, len).unwrap();
    dev.poison(&mut b).unwrap();
    b
}

/// Downloads and checks against `want`: every element written (no NaN left from the poison)
/// and a norm-wise relative error within `tol`. `floor` is the norm below which the error is
/// compared absolutely (results that cancel to near zero).
pub fn check(dev: &Device, what: &str, got: &Buffer, want: &[f64], tol: f64) {
    let got = dev.download_f32(got).unwrap();
    check_values(what, &got, want, tol);
}

pub fn check_values(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{what}: element {i} of {} is {} (want {}): not written, or overflowed", got.len(), got[i], want[i]);
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        num += e * e;
        den += w * w;
        if e > worst.1 {
            worst = (i, e);
        }
    }
    let rel = num.sqrt() / den.sqrt().max(1e-30);
    if std::env::var_os("POLYADAPT_TEST_VERBOSE").is_some() {
        eprintln!("{what}: relative error {rel:.2e} (tolerance {tol:.0e})");
    }
    assert!(
        rel <= tol || num.sqrt() <= tol * 1e-3,
        "{what}: relative error {rel:.3e} > {tol:.1e} (worst element {}: got {}, want {})",
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}
