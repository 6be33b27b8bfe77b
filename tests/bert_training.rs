//! Gradients through the real MiniLM: a LoRA-like matrix pair in a middle layer against finite
//! differences, what the tape keeps when only a late layer trains, and full fine-tuning.

mod common;

use common::*;
use polyadapt::data::text::read_lines;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape, Var};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::hooks::{LayerHooks, NoHooks, Proj};
use polyadapt::Result;

const RANK: usize = 4;

/// `x A^T B^T` added to one projection of one layer: the shape of LoRA, with both matrices
/// random so that both have non-zero gradients.
struct LowRank {
    layer: usize,
    proj: Proj,
    a: ParamId,
    b: ParamId,
}

impl LayerHooks for LowRank {
    fn linear_delta(&self, tape: &mut Tape, store: &ParamStore, layer: usize, proj: Proj, x: &Var) -> Result<Option<Var>> {
        if layer != self.layer || proj != self.proj {
            return Ok(None);
        }
        let (a, b) = (tape.param(store, self.a), tape.param(store, self.b));
        let h = ops::linear(tape, x, &a, None, Precision::F32)?;
        Ok(Some(ops::linear(tape, &h, &b, None, Precision::F32)?))
    }
}

fn setup() -> (BertModel, ParamStore, EncodedBatch) {
    let dir = real_model("all-minilm-l6-v2");
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let lines = read_lines(&fixtures_dir().join("texts_multilingual.txt")).unwrap();
    let batch = tok.encode_batch(&lines[..3], model.max_tokens()).unwrap();
    (model, store, batch)
}

/// `sum(mean_pool(h_last) * r)` for a fixed random `r`, accumulated in f64.
fn loss(model: &BertModel, store: &ParamStore, batch: &EncodedBatch, hooks: &dyn LayerHooks, tape: &mut Tape) -> (Var, f64) {
    loss_with(model, store, batch, hooks, model.num_layers(), false, tape)
}

fn loss_at(model: &BertModel, store: &ParamStore, batch: &EncodedBatch, layer: usize, tape: &mut Tape) -> (Var, f64) {
    loss_with(model, store, batch, &NoHooks, layer, false, tape)
}

/// The same loss on the hidden state of `layer` (the forward stops there); with `training`,
/// dropout (hidden and attention, p = 0.1 as in the config) under a fixed seed.
fn loss_with(model: &BertModel, store: &ParamStore, batch: &EncodedBatch, hooks: &dyn LayerHooks, layer: usize, training: bool, tape: &mut Tape) -> (Var, f64) {
    let opts = ForwardOptions { layers: vec![layer], training, dropout_seed: 1234 };
    let out = model.forward(tape, store, batch, hooks, &opts).unwrap();
    let h = out.padded(tape, &out.hidden[0].1).unwrap();
    let mask = Tensor::new(batch.mask.clone(), &[batch.batch, batch.len]);
    let pooled = ops::mean_pool(tape, &h, &mask).unwrap();
    let r = Var::constant(Tensor::new(rand_vec(99, pooled.value().numel(), 1.0), pooled.shape()));
    let weighted = ops::mul(tape, &pooled, &r).unwrap();
    let total: f64 = weighted.value().f32s().iter().map(|&v| v as f64).sum();
    (ops::sum_all(tape, &weighted).unwrap(), total)
}

#[test]
fn low_rank_gradient_in_a_middle_layer_matches_finite_differences() {
    low_rank_gradient_check(false);
}

#[test]
fn low_rank_gradient_with_dropout_matches_finite_differences() {
    // The dropout masks are a function of the seed, so the loss is a fixed function of the
    // parameters and finite differences apply.
    low_rank_gradient_check(true);
}

fn low_rank_gradient_check(training: bool) {
    let (model, mut store, batch) = setup();
    let n = model.num_layers();
    let h = model.config.hidden_size;
    let a = store.add("lowrank.A", Tensor::new(rand_vec(1, RANK * h, 0.05), &[RANK, h]), true).unwrap();
    let b = store.add("lowrank.B", Tensor::new(rand_vec(2, h * RANK, 0.05), &[h, RANK]), true).unwrap();
    let hooks = LowRank { layer: 3, proj: Proj::Value, a, b };
    let mut tape = Tape::new();
    let (l, _) = loss_with(&model, &store, &batch, &hooks, n, training, &mut tape);
    if training {
        let mut eval = Tape::new();
        let (_, plain) = loss(&model, &store, &batch, &hooks, &mut eval);
        assert_ne!(plain, l.value().f32s()[0] as f64, "dropout must change the loss");
    }
    tape.backward(&l, &mut store).unwrap();
    // Exactly the two trainable matrices have gradient buffers; no frozen weight has one.
    assert_eq!(store.grad_buffers(), (2, 2 * RANK * h * 4));

    for (id, seed) in [(a, 10u64), (b, 20), (a, 30), (b, 40)] {
        let grad = to64(store.grad(id).unwrap().f32s());
        let base = store.value(id).f32s().to_vec();
        let dir = rand_vec(seed, base.len(), 1.0);
        let eps = 3e-3f32;
        let mut at = |sign: f32| {
            let moved: Vec<f32> = base.iter().zip(&dir).map(|(x, d)| x + sign * eps * d).collect();
            store.set_value(id, Tensor::new(moved, store.value(id).shape())).unwrap();
            let mut tape = Tape::new();
            loss_with(&model, &store, &batch, &hooks, n, training, &mut tape).1
        };
        let fd = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
        store.set_value(id, Tensor::new(base.clone(), store.value(id).shape())).unwrap();
        let analytic: f64 = grad.iter().zip(&dir).map(|(g, d)| g * *d as f64).sum();
        // A random direction's derivative is typically |grad| |dir| / sqrt(len); one that
        // happens to be near zero is judged against that size, not its own.
        let typical = norm(&grad) * norm(&to64(&dir)) / (grad.len() as f64).sqrt();
        let err = (analytic - fd).abs() / fd.abs().max(typical);
        println!("{}: directional derivative {analytic:.6e}, finite difference {fd:.6e}, relative error {err:.2e}", store.name(id));
        assert!(err < 1e-2, "{}: directional derivative {analytic:.6e} vs finite difference {fd:.6e} (rel {err:.2e})", store.name(id));
    }
}

#[test]
fn training_one_layer_keeps_no_activations_of_earlier_layers() {
    let (model, mut store, batch) = setup();
    let n = model.num_layers();
    // Only layer `layer` trainable; the forward stops after `stop` layers.
    let run = |store: &mut ParamStore, layer: usize, stop: usize| {
        store.set_trainable_where(false, |_| true);
        let prefix = format!("encoder.layer.{layer}.");
        let count = store.set_trainable_where(true, |name| name.starts_with(&prefix));
        assert_eq!(count, 16, "a BERT layer has 16 parameter tensors");
        let mut tape = Tape::new();
        let (l, _) = loss_at(&model, store, &batch, stop, &mut tape);
        let stats = tape.stats();
        tape.backward(&l, store).unwrap();
        (stats, store.grad_buffers().0)
    };
    // The trainable layer is the last one run: what the tape keeps is that layer's own, the
    // same bytes whether 0 or n-1 frozen layers come before it. Anything kept of an earlier
    // layer would make the later runs bigger.
    let (first, _) = run(&mut store, 0, 1);
    for layer in [2, n - 1] {
        let (s, grads) = run(&mut store, layer, layer + 1);
        assert_eq!(grads, 16, "gradient buffers: the trainable layer's 16 tensors only");
        assert_eq!(s.op_names, first.op_names, "layer {layer}: recorded operations");
        assert_eq!(s.saved_activation_bytes, first.saved_activation_bytes, "layer {layer}: bytes kept for backward");
        assert!(!s.op_names.contains(&"embedding"));
        assert_eq!(s.op_names.iter().filter(|&&o| o == "attention").count(), 1);
    }
    // Layers after the trainable one are recorded (the gradient flows back through them) and
    // keep what their input gradients need.
    let (full, _) = run(&mut store, 0, n);
    assert_eq!(full.op_names.iter().filter(|&&o| o == "attention").count(), n);
    assert!(full.saved_activation_bytes > first.saved_activation_bytes);
    // Freezing the earlier runs' parameters dropped their gradient buffers.
    assert_eq!(store.grad_buffers().0, 16);
}

#[test]
fn full_fine_tuning_gives_every_parameter_a_gradient() {
    let (model, mut store, batch) = setup();
    store.set_trainable_where(true, |_| true);
    let mut tape = Tape::new();
    let (l, _) = loss(&model, &store, &batch, &NoHooks, &mut tape);
    tape.backward(&l, &mut store).unwrap();
    let (count, bytes) = store.grad_buffers();
    assert_eq!(count, store.len());
    assert_eq!(bytes, store.total_numel() * 4);
    for id in store.ids() {
        let g = store.grad(id).unwrap().f32s();
        assert!(g.iter().all(|v| v.is_finite()), "{}", store.name(id));
    }
    // The word embedding gets gradient only in the rows of tokens that occur.
    let word = store.id("embeddings.word_embeddings.weight").unwrap();
    let g = store.grad(word).unwrap().f32s();
    let h = model.config.hidden_size;
    let used: std::collections::HashSet<u32> = batch.ids.iter().copied().collect();
    for row in 0..model.config.vocab_size {
        let nonzero = g[row * h..(row + 1) * h].iter().any(|&v| v != 0.0);
        assert!(!nonzero || used.contains(&(row as u32)), "row {row} has a gradient but never occurs");
    }
}

#[test]
fn forward_and_gradients_do_not_depend_on_the_thread_count() {
    let (model, mut store, batch) = setup();
    let h = model.config.hidden_size;
    let a = store.add("lowrank.A", Tensor::new(rand_vec(1, RANK * h, 0.05), &[RANK, h]), true).unwrap();
    let b = store.add("lowrank.B", Tensor::new(rand_vec(2, h * RANK, 0.05), &[h, RANK]), true).unwrap();
    let hooks = LowRank { layer: 2, proj: Proj::Query, a, b };
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (loss_value, ga, gb) = pool.install(|| {
            store.zero_grad();
            let mut tape = Tape::new();
            let (l, _) = loss_with(&model, &store, &batch, &hooks, model.num_layers(), true, &mut tape);
            let v = l.value().f32s()[0];
            tape.backward(&l, &mut store).unwrap();
            (v, store.grad(a).unwrap().f32s().to_vec(), store.grad(b).unwrap().f32s().to_vec())
        });
        results.push((threads, loss_value.to_bits(), ga.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), gb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
    }
    for r in &results[1..] {
        assert_eq!(r.1, results[0].1, "loss differs with {} threads", r.0);
        assert!(r.2 == results[0].2 && r.3 == results[0].3, "gradients differ with {} threads", r.0);
    }
}
