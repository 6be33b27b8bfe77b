//! Reading the optimiser fixture (F32 and F64 tensors, exact), and helpers shared by the
//! optimiser tests: stores, gradients set through the tape, bitwise comparisons.

use std::collections::HashMap;

use polyadapt::engine::autograd::{ParamId, ParamStore, Tape};
use polyadapt::engine::tensor::Tensor;

pub const STEPS: usize = 10;
pub const PARAMS: usize = 5;
/// Parameter 3 has no gradient before this step (torch: `p.grad = None`).
pub const NONE_UNTIL: usize = 3;

pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

pub struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Values)>,
}

impl Fixture {
    pub fn load() -> Fixture {
        use safetensors::{Dtype, SafeTensors};
        let path = super::common::fixtures_dir().join("adamw_reference.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let b = view.data();
                let values = match view.dtype() {
                    Dtype::F32 => Values::F32(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
                    Dtype::F64 => Values::F64(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()),
                    other => panic!("{name}: unexpected dtype {other:?}"),
                };
                (name, (view.shape().to_vec(), values))
            })
            .collect();
        Fixture { tensors }
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        &self.get(name).0
    }

    fn get(&self, name: &str) -> &(Vec<usize>, Values) {
        self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    pub fn f32s(&self, name: &str) -> &[f32] {
        match &self.get(name).1 {
            Values::F32(v) => v,
            Values::F64(_) => panic!("{name} is F64"),
        }
    }

    pub fn f64s(&self, name: &str) -> &[f64] {
        match &self.get(name).1 {
            Values::F64(v) => v,
            Values::F32(_) => panic!("{name} is F32"),
        }
    }

    /// Row `step` of a `[STEPS, *shape]` tensor.
    pub fn at_step(&self, name: &str, step: usize) -> &[f32] {
        let v = self.f32s(name);
        let n = v.len() / STEPS;
        &v[step * n..(step + 1) * n]
    }

    /// Shape of parameter `i`.
    pub fn param_shape(&self, i: usize) -> Vec<usize> {
        self.shape(&format!("param.{i}")).to_vec()
    }
}

/// Adds `g` into the gradient buffer of `id` through the tape, as a backward pass does.
pub fn add_grad(store: &mut ParamStore, id: ParamId, g: &[f32]) {
    let mut tape = Tape::new();
    let v = tape.param(store, id);
    let shape = v.shape().to_vec();
    tape.backward_from(&v, Tensor::new(g.to_vec(), &shape), store).unwrap();
}

/// The fixture's parameters `p0`..`p4` (trainable), plus a frozen `frozen` and a trainable
/// `nograd` that never receives a gradient.
pub fn fixture_store(fx: &Fixture) -> (ParamStore, Vec<ParamId>) {
    let mut store = ParamStore::new();
    let ids = (0..PARAMS)
        .map(|i| {
            let t = Tensor::new(fx.f32s(&format!("param.{i}")).to_vec(), &fx.param_shape(i));
            store.add(format!("p{i}"), t, true).unwrap()
        })
        .collect();
    store.add("frozen", Tensor::new(vec![1.5, -2.5, 3.0], &[3]), false).unwrap();
    store.add("nograd", Tensor::new(vec![0.25, -0.75], &[2]), true).unwrap();
    (store, ids)
}

/// Sets the gradients of fixture step `step`: zero_grad, then each parameter's gradient
/// (parameter 3 gets none before `NONE_UNTIL`).
pub fn set_fixture_grads(fx: &Fixture, store: &mut ParamStore, ids: &[ParamId], step: usize) {
    store.zero_grad();
    for (i, &id) in ids.iter().enumerate() {
        if i == 3 && step < NONE_UNTIL {
            continue;
        }
        add_grad(store, id, fx.at_step(&format!("grad.{i}"), step));
    }
}

/// Distance in units in the last place between two finite f32 (0 between -0 and +0).
pub fn ulps(a: f32, b: f32) -> u64 {
    // Map the sign-magnitude bit patterns onto one ordered integer line.
    let key = |x: f32| {
        let bits = x.to_bits() as i32;
        if bits < 0 {
            i32::MIN as i64 - bits as i64
        } else {
            bits as i64
        }
    };
    let (a, b) = (key(a), key(b));
    (a - b).unsigned_abs()
}

/// The largest ulp distance between `got` and `want` and where it is.
pub fn max_ulps(got: &[f32], want: &[f32]) -> (u64, usize) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter().zip(want).enumerate().map(|(i, (&a, &b))| (ulps(a, b), i)).max().unwrap_or((0, 0))
}

pub fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    let (d, i) = max_ulps(got, want);
    assert!(
        d == 0 && got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: {d} ulps apart at element {i}: got {:e}, want {:e}",
        got[i],
        want[i]
    );
}
