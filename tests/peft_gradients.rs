//! Each adaptation method's gradient through the real MiniLM against finite differences
//! (directional derivatives along random directions, dropout on: its masks are a function of
//! the seed, so the loss is a fixed function of the parameters), and only the method's own
//! tensors get gradient buffers.

mod common;
mod peft_support;

use common::*;
use peft_support::*;
use polyadapt::data::text::read_lines;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape, Var};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::bert::{BertModel, ForwardOptions};
use polyadapt::models::hooks::LayerHooks;
use polyadapt::models::peft::{Adaptation, AdapterActivation, AdapterConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit};

fn setup() -> (BertModel, ParamStore, EncodedBatch) {
    let dir = real_model("all-minilm-l6-v2");
    let (model, store) = load_model(&dir);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let lines = read_lines(&fixtures_dir().join("texts_multilingual.txt")).unwrap();
    let batch = tok.encode_batch(&lines[..3], model.max_tokens()).unwrap();
    (model, store, batch)
}

/// `sum(mean_pool(h_last) * r)` for a fixed random `r`, in training mode (dropout on, fixed
/// seed); returns the loss variable and its value.
fn loss(model: &BertModel, store: &ParamStore, batch: &EncodedBatch, hooks: &dyn LayerHooks, tape: &mut Tape) -> (Var, f64) {
    let opts = ForwardOptions { layers: vec![model.num_layers()], training: true, dropout_seed: 77 };
    let out = model.forward(tape, store, batch, hooks, &opts).unwrap();
    let h = out.padded(tape, &out.hidden[0].1).unwrap();
    let mask = Tensor::new(batch.mask.clone(), &[batch.batch, batch.len]);
    let pooled = ops::mean_pool(tape, &h, &mask).unwrap();
    let r = Var::constant(Tensor::new(rand_vec(99, pooled.value().numel(), 1.0), pooled.shape()));
    let weighted = ops::mul(tape, &pooled, &r).unwrap();
    let total: f64 = weighted.value().f32s().iter().map(|&v| v as f64).sum();
    (ops::sum_all(tape, &weighted).unwrap(), total)
}

/// Builds `methods`, sets their parameters to random values (`scale`), backpropagates once and
/// checks the directional derivative of every parameter tensor against central differences.
fn check(methods: MethodsConfig, scale: f32, eps: f32) {
    let (model, mut store, batch) = setup();
    let a = Adaptation::build(&mut store, &model.config, &methods, 5, None).unwrap();
    let params = a.params();
    randomize(&mut store, &params, 31, scale);
    let mut tape = Tape::new();
    let (l, _) = loss(&model, &store, &batch, &a, &mut tape);
    tape.backward(&l, &mut store).unwrap();
    let bytes: usize = params.iter().map(|&id| store.value(id).numel() * 4).sum();
    assert_eq!(store.grad_buffers(), (params.len(), bytes), "gradient buffers: the method's tensors only");
    for (k, &id) in params.iter().enumerate() {
        directional(&model, &mut store, &batch, &a, id, 1000 + k as u64, eps);
    }
}

fn directional(model: &BertModel, store: &mut ParamStore, batch: &EncodedBatch, hooks: &dyn LayerHooks, id: ParamId, seed: u64, eps: f32) {
    let grad = to64(store.grad(id).unwrap().f32s());
    let base = store.value(id).f32s().to_vec();
    let shape = store.value(id).shape().to_vec();
    let dir = rand_vec(seed, base.len(), 1.0);
    let mut at = |sign: f32| {
        let moved: Vec<f32> = base.iter().zip(&dir).map(|(x, d)| x + sign * eps * d).collect();
        store.set_value(id, Tensor::new(moved, &shape)).unwrap();
        let mut tape = Tape::new();
        loss(model, store, batch, hooks, &mut tape).1
    };
    let fd = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
    store.set_value(id, Tensor::new(base, &shape)).unwrap();
    let analytic: f64 = grad.iter().zip(&dir).map(|(g, d)| g * *d as f64).sum();
    // A direction whose derivative happens to be near zero is judged against the typical size
    // |grad| |dir| / sqrt(len), not its own.
    let typical = norm(&grad) * norm(&to64(&dir)) / (grad.len() as f64).sqrt();
    let err = (analytic - fd).abs() / fd.abs().max(typical);
    println!("{}: directional derivative {analytic:.6e}, finite difference {fd:.6e}, relative error {err:.2e}", store.name(id));
    assert!(typical > 0.0, "{}: zero gradient", store.name(id));
    assert!(err < 1e-2, "{}: directional derivative {analytic:.6e} vs finite difference {fd:.6e} (rel {err:.2e})", store.name(id));
}

#[test]
fn lora_gradients_match_finite_differences() {
    let lora = LoraConfig { r: 4, alpha: 8.0, dropout: 0.1, targets: vec!["q".into(), "v".into(), "ffn_out".into()], layers: Some(vec![3]), rslora: false };
    check(MethodsConfig { lora: Some(lora), ..Default::default() }, 0.05, 3e-3);
}

#[test]
fn prefix_table_gradient_matches_finite_differences() {
    let prefix = PrefixConfig { virtual_tokens: 4, projection: None, layers: None, peft_positions: true };
    check(MethodsConfig { prefix: Some(prefix), ..Default::default() }, 0.5, 3e-3);
}

#[test]
fn prefix_mlp_gradients_match_finite_differences() {
    let prefix = PrefixConfig { virtual_tokens: 3, projection: Some(8), layers: Some(vec![1, 4]), peft_positions: true };
    check(MethodsConfig { prefix: Some(prefix), ..Default::default() }, 0.3, 3e-3);
}

#[test]
fn prompt_gradient_matches_finite_differences() {
    let prompt = PromptConfig { virtual_tokens: 3, init: PromptInit::Random };
    check(MethodsConfig { prompt: Some(prompt), ..Default::default() }, 0.5, 3e-3);
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let adapter = AdapterConfig { size: 8, activation: AdapterActivation::Gelu, sites: vec!["attention".into(), "ffn".into()], layers: Some(vec![2]), init_std: 1e-3, houlsby: false };
    check(MethodsConfig { adapter: Some(adapter), ..Default::default() }, 0.1, 3e-3);
}
