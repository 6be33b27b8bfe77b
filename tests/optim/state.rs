//! The optimiser state as named tensors: N steps, save (through a real safetensors file), load
//! into a new store and optimiser, M more steps equals N + M steps straight, bit for bit; a state
//! that does not fit the model is a clear error and leaves the optimiser as it was.

use std::path::Path;

use polyadapt::engine::autograd::{ParamId, ParamStore};
use polyadapt::engine::optim::state::{count_tensor, read_count};
use polyadapt::engine::optim::{clip_grad_norm, AdamW, AdamWConfig, Decay, Schedule};
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::weights::{write_safetensors, TensorData, Weights};
use polyadapt::Error;

use super::common::rand_vec;
use super::fixture::{add_grad, assert_bitwise};

/// Named tensors, as a checkpoint holds them.
type State = Vec<(String, Tensor)>;

const SHAPES: [(&str, &[usize]); 4] =
    [("lora_A", &[4, 6]), ("lora_B", &[6, 4]), ("big", &[3 * 16384 + 17]), ("late", &[5])];
const SCHEDULE: Schedule = Schedule { warmup_steps: 2, total_steps: 9, decay: Decay::Cosine, min_lr_ratio: 0.0 };
const CONFIG: AdamWConfig = AdamWConfig { lr: 3e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };

fn new_store() -> (ParamStore, Vec<ParamId>) {
    let mut store = ParamStore::new();
    let ids = SHAPES
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            store.add(*name, Tensor::new(rand_vec(100 + i as u64, n, 1.0), shape), true).unwrap()
        })
        .collect();
    store.add("backbone", Tensor::new(vec![1.0; 8], &[8]), false).unwrap();
    store.add("unused", Tensor::new(vec![2.0; 3], &[3]), true).unwrap();
    (store, ids)
}

/// Training step `k`: gradients from the step index (`late` gets none before step 3), clipping,
/// the scheduled learning rate.
fn train_step(store: &mut ParamStore, ids: &[ParamId], opt: &mut AdamW, k: u64) {
    store.zero_grad();
    for (i, &id) in ids.iter().enumerate() {
        if SHAPES[i].0 == "late" && k < 3 {
            continue;
        }
        let n = store.value(id).numel();
        add_grad(store, id, &rand_vec(1000 * k + i as u64, n, 0.5));
    }
    clip_grad_norm(store, 1.0);
    opt.step(store, SCHEDULE.lr_at(CONFIG.lr, opt.updates())).unwrap();
}

fn assert_same(a: &ParamStore, oa: &AdamW, b: &ParamStore, ob: &AdamW) {
    for id in a.ids() {
        let name = a.name(id);
        assert_bitwise(name, a.value(id).f32s(), b.value(b.id(name).unwrap()).f32s());
        match (oa.moments(name), ob.moments(name)) {
            (Some((ma, va)), Some((mb, vb))) => {
                assert_bitwise(&format!("m of {name}"), ma, mb);
                assert_bitwise(&format!("v of {name}"), va, vb);
            }
            (None, None) => {}
            _ => panic!("{name}: state present on one side only"),
        }
        assert_eq!(oa.param_step(name), ob.param_step(name), "{name}");
    }
    assert_eq!(oa.updates(), ob.updates());
}

/// Writes the adapter values and the optimiser state to one safetensors file and reads both
/// back, as a checkpoint does.
fn save_and_reload(store: &ParamStore, opt: &AdamW, path: &Path) -> State {
    let mut tensors: State = opt.state_tensors();
    for id in store.trainable_ids() {
        tensors.push((store.name(id).to_string(), store.value(id).clone()));
    }
    let data: Vec<(String, TensorData)> = tensors.iter().map(|(n, t)| (n.clone(), TensorData::from_tensor(t))).collect();
    write_safetensors(path, &data, &Default::default()).unwrap();
    let w = Weights::open_file(path).unwrap();
    let mut names: Vec<String> = w.names().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let shape = w.info(&n).unwrap().shape.to_vec();
            let t = w.get(&n, &shape).unwrap();
            (n, t)
        })
        .collect()
}

#[test]
fn resumed_run_equals_straight_run_bitwise() {
    let (n, m) = (4, 5);
    let (mut straight, ids) = new_store();
    let mut opt_straight = AdamW::new(CONFIG).unwrap();
    for k in 0..n + m {
        train_step(&mut straight, &ids, &mut opt_straight, k);
    }

    let (mut first, ids) = new_store();
    let mut opt_first = AdamW::new(CONFIG).unwrap();
    for k in 0..n {
        train_step(&mut first, &ids, &mut opt_first, k);
    }
    let dir = std::env::temp_dir().join(format!("polyadapt-optim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let saved = save_and_reload(&first, &opt_first, &path);
    std::fs::remove_dir_all(&dir).ok();

    // A fresh process: new store from the initial weights, adapter values from the checkpoint.
    let (mut resumed, ids) = new_store();
    for (name, t) in &saved {
        if let Some(id) = resumed.id(name) {
            resumed.set_value(id, t.clone()).unwrap();
        }
    }
    let mut opt = AdamW::new(CONFIG).unwrap();
    opt.load_state(&resumed, &saved, &path).unwrap();
    assert_same(&first, &opt_first, &resumed, &opt);
    assert_eq!(opt.updates(), n);
    for k in n..n + m {
        train_step(&mut resumed, &ids, &mut opt, k);
    }
    assert_same(&straight, &opt_straight, &resumed, &opt);
}

#[test]
fn counts_are_exact_far_beyond_f32_integers() {
    for n in [0u64, 1, 16_777_215, 16_777_216, 16_777_217, 123_456_789_012, (1 << 48) - 1] {
        assert_eq!(read_count(&count_tensor(n)), Some(n));
    }
    for bad in [vec![0.0, 1.5], vec![-1.0, 0.0], vec![0.0, 16_777_216.0], vec![f32::NAN, 0.0]] {
        assert_eq!(read_count(&Tensor::new(bad.clone(), &[2])), None, "{bad:?}");
    }
    assert_eq!(read_count(&Tensor::new(vec![3.0], &[1])), None);
}

/// A state after three steps, with `unused` recorded as idle.
fn trained_state() -> (ParamStore, AdamW, State) {
    let (mut store, ids) = new_store();
    let mut opt = AdamW::new(CONFIG).unwrap();
    for k in 0..3 {
        train_step(&mut store, &ids, &mut opt, k);
    }
    let state = opt.state_tensors();
    (store, opt, state)
}

/// Loads `state` into a trained optimiser, expects an `Error::Tensor` naming `tensor` whose
/// message contains `words`, and checks the optimiser was left as it was.
fn expect_error(store: &ParamStore, opt: &mut AdamW, state: &[(String, Tensor)], tensor: &str, words: &str) {
    let before = opt.state_tensors();
    let err = opt.load_state(store, state, Path::new("ckpt/optim.safetensors")).unwrap_err();
    match &err {
        Error::Tensor { path, name, msg } => {
            assert_eq!(path, Path::new("ckpt/optim.safetensors"));
            assert_eq!(name, tensor, "{}", err.chain());
            assert!(msg.contains(words), "{}", err.chain());
        }
        other => panic!("expected a tensor error about {tensor}, got {}", other.chain()),
    }
    let after = opt.state_tensors();
    assert_eq!(before.len(), after.len());
    for ((na, ta), (nb, tb)) in before.iter().zip(&after) {
        assert_eq!(na, nb);
        assert_bitwise(na, ta.f32s(), tb.f32s());
    }
}

fn edited(state: &[(String, Tensor)], f: impl Fn(&mut State)) -> State {
    let mut s = state.to_vec();
    f(&mut s);
    s
}

fn remove(name: &'static str) -> impl Fn(&mut State) {
    move |s| s.retain(|(n, _)| n != name)
}

#[test]
fn a_state_that_does_not_fit_the_model_is_a_clear_error() {
    let (store, mut opt, state) = trained_state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"optim.step.unused") && !names.contains(&"optim.m.unused"), "{names:?}");
    // `late` gets its first gradient at step 3: after three steps it is idle, like `unused`.
    assert!(names.contains(&"optim.step.late") && !names.contains(&"optim.m.late"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("backbone")), "{names:?}");

    let add = |name: &'static str, t: Tensor| move |s: &mut State| s.push((name.to_string(), t.clone()));
    let cases: Vec<(State, &str, &str)> = vec![
        (edited(&state, remove("optim.updates")), "optim.updates", "missing"),
        (edited(&state, remove("optim.v.lora_B")), "optim.v.lora_B", "missing"),
        (edited(&state, remove("optim.step.lora_A")), "optim.step.lora_A", "missing"),
        (edited(&state, |s| s.retain(|(n, _)| !n.ends_with(".big"))), "optim.step.big", "no optimiser state"),
        (edited(&state, remove("optim.step.unused")), "optim.step.unused", "no optimiser state"),
        (edited(&state, add("optim.m.ghost", Tensor::zeros(&[2]))), "optim.m.ghost", "no parameter `ghost`"),
        (edited(&state, add("optim.step.backbone", count_tensor(1))), "optim.step.backbone", "frozen"),
        (edited(&state, add("optim.momentum.lora_A", Tensor::zeros(&[4, 6]))), "optim.momentum.lora_A", "not an AdamW state"),
        (edited(&state, add("optim.m.unused", Tensor::zeros(&[3]))), "optim.m.unused", "never updated"),
        (edited(&state, add("optim.updates", count_tensor(3))), "optim.updates", "twice"),
        (
            edited(&state, |s| s.iter_mut().filter(|(n, _)| n == "optim.m.lora_A").for_each(|(_, t)| *t = Tensor::zeros(&[6, 4]))),
            "optim.m.lora_A",
            "shape [4, 6]",
        ),
        (
            edited(&state, |s| s.iter_mut().filter(|(n, _)| n == "optim.step.lora_B").for_each(|(_, t)| *t = Tensor::new(vec![0.0, 2.5], &[2]))),
            "optim.step.lora_B",
            "count",
        ),
        (
            edited(&state, |s| s.iter_mut().filter(|(n, _)| n == "optim.step.lora_B").for_each(|(_, t)| *t = count_tensor(4))),
            "optim.step.lora_B",
            "only 3 steps",
        ),
        (
            edited(&state, |s| s.iter_mut().filter(|(n, _)| n == "optim.v.lora_A").for_each(|(_, t)| *t = t.to_dtype(polyadapt::engine::tensor::DType::BF16))),
            "optim.v.lora_A",
            "F32",
        ),
    ];
    for (bad, tensor, words) in cases {
        expect_error(&store, &mut opt, &bad, tensor, words);
    }
    // Tensors outside `optim.` (the adapter weights of the same file) are ignored.
    let with_weights = edited(&state, add("lora_A", Tensor::zeros(&[4, 6])));
    opt.load_state(&store, &with_weights, Path::new("ckpt")).unwrap();
}

#[test]
fn an_empty_state_loads_into_any_store() {
    let (store, _) = new_store();
    let fresh = AdamW::new(CONFIG).unwrap();
    let state = fresh.state_tensors();
    assert_eq!(state.len(), 1, "only the update count");
    let mut opt = AdamW::new(CONFIG).unwrap();
    opt.load_state(&store, &state, Path::new("ckpt")).unwrap();
    assert_eq!(opt.updates(), 0);
}
