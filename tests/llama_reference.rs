//! The LLaMA decoder on a tiny random checkpoint (GQA, untied head) against transformers'
//! LlamaForCausalLM (fixtures from tests/reference/make_llama_fixtures.py): hidden states and
//! logits from the safetensors directory and from the same weights as a llama.cpp-style GGUF
//! (Q/K rows permuted), greedy continuations, the KV cache against full passes, and where the
//! adaptation hooks attach.

mod common;
#[path = "llama_support/tiny.rs"]
mod tiny;

use std::cell::RefCell;

use common::*;
use polyadapt::data::tokenize::EncodedBatch;
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape, Var};
use polyadapt::engine::error::Result;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::hooks::{LayerHooks, NoHooks, Proj, Site};
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::{DecoderOptions, KvCache, LlamaModel, Logits};
use tiny::*;

/// Relative error of the real positions (mask 1) of `got` `[batch, len, w]` against `want`.
fn masked_rel_err(got: &[f32], want: &[f64], mask: &[f64], w: usize) -> f64 {
    let (mut g, mut r) = (Vec::new(), Vec::new());
    for (i, &m) in mask.iter().enumerate() {
        if m != 0.0 {
            g.extend(got[i * w..(i + 1) * w].iter().map(|&v| v as f64));
            r.extend_from_slice(&want[i * w..(i + 1) * w]);
        }
    }
    rel_err(&g, &r, 1e-12)
}

fn check_against_transformers(from_gguf: bool) {
    let (model, store) = load_tiny(from_gguf);
    let reference = read_safetensors(&tiny_dir().join("reference.safetensors"));
    let batch = reference_batch(&reference);
    let mask = &reference["attention_mask"].data;
    let mut tape = Tape::no_grad();
    let opts = DecoderOptions { layers: vec![0, 1, 2], logits: Logits::All, ..Default::default() };
    let out = model.forward(&mut tape, &store, &batch, &NoHooks, &opts, None).unwrap();
    for (l, h) in &out.hidden {
        let h = out.padded(&mut tape, h).unwrap();
        let err = masked_rel_err(h.value().f32s(), &reference[&format!("hidden.{l}")].data, mask, 32);
        assert!(err < 1e-5, "hidden.{l} (gguf {from_gguf}): rel err {err:.3e}");
    }
    let logits = out.padded_real(&mut tape, out.logits.as_ref().unwrap()).unwrap();
    assert_eq!(logits.shape(), &[2, 10, 96]);
    let err = masked_rel_err(logits.value().f32s(), &reference["logits"].data, mask, 96);
    assert!(err < 1e-5, "logits (gguf {from_gguf}): rel err {err:.3e}");
    eprintln!("tiny-llama (gguf {from_gguf}): logits rel err {err:.3e}");
}

#[test]
fn tiny_llama_matches_transformers() {
    check_against_transformers(false);
}

#[test]
fn tiny_llama_from_gguf_matches_transformers() {
    check_against_transformers(true);
}

#[test]
fn gguf_and_safetensors_give_the_same_parameters() {
    let (_, a) = load_tiny(false);
    let (_, b) = load_tiny(true);
    assert_eq!(a.len(), b.len());
    for id in a.ids() {
        let name = a.name(id);
        let other = b.id(name).unwrap_or_else(|| panic!("{name} missing from the GGUF model"));
        assert_eq!(a.value(id).to_f32_cow(), b.value(other).to_f32_cow(), "{name}");
    }
    assert!(a.id("lm_head.weight").is_some(), "the tiny model has an untied head");
}

#[test]
fn greedy_continuations_match_transformers() {
    let reference = read_safetensors(&tiny_dir().join("reference.safetensors"));
    let prompts = reference_prompts(&reference);
    for from_gguf in [false, true] {
        let (model, store) = load_tiny(from_gguf);
        let opts = GreedyOptions::for_model(&model, 20);
        let batched = generate_greedy(&model, &store, &NoHooks, &prompts, &opts).unwrap();
        for (b, p) in prompts.iter().enumerate() {
            let want: Vec<u32> = reference[&format!("greedy.{b}")].data.iter().map(|&v| v as u32).collect();
            assert_eq!(batched[b], want, "row {b} (gguf {from_gguf}), in a batch");
            let alone = generate_greedy(&model, &store, &NoHooks, std::slice::from_ref(p), &opts).unwrap();
            assert_eq!(alone[0], want, "row {b} (gguf {from_gguf}), alone");
        }
    }
}

#[test]
fn cached_steps_give_the_logits_of_full_passes() {
    let (model, store) = load_tiny(false);
    let ids: Vec<u32> = vec![1, 17, 42, 5, 88, 23, 61, 7, 30, 9];
    let full = logits_all(&model, &store, &ids);
    // Prefill 4 tokens, then 3, then one at a time.
    let mut cache = KvCache::new(1, model.num_layers(), model.config.kv_width());
    let mut got = Vec::new();
    for chunk in [&ids[0..4], &ids[4..7], &ids[7..8], &ids[8..9], &ids[9..10]] {
        let batch = EncodedBatch::from_sequences(&[(chunk, &vec![0; chunk.len()][..])], 0);
        let mut tape = Tape::no_grad();
        let opts = DecoderOptions { logits: Logits::All, ..Default::default() };
        let out = model.forward(&mut tape, &store, &batch, &NoHooks, &opts, Some(&mut cache)).unwrap();
        got.extend(out.logits.unwrap().value().f32s().iter().map(|&v| v as f64));
    }
    assert_eq!(cache.len(0), 10);
    let err = rel_err(&got, &to64(&full), 1e-12);
    assert!(err < 1e-6, "cached vs full: {err:.3e}");
    // The last rows alone, as generation asks for them.
    let batch = EncodedBatch::from_sequences(&[(&ids[..], &vec![0; 10][..])], 0);
    let opts = DecoderOptions { logits: Logits::Last, ..Default::default() };
    let last = model.forward(&mut Tape::no_grad(), &store, &batch, &NoHooks, &opts, None).unwrap().logits.unwrap();
    assert_eq!(last.shape(), &[1, 96]);
    assert_eq!(last.value().f32s(), &full[9 * 96..]);
}

fn logits_all(model: &LlamaModel, store: &ParamStore, ids: &[u32]) -> Vec<f32> {
    let batch = EncodedBatch::from_sequences(&[(ids, &vec![0; ids.len()][..])], 0);
    let opts = DecoderOptions { logits: Logits::All, ..Default::default() };
    model.forward(&mut Tape::no_grad(), store, &batch, &NoHooks, &opts, None).unwrap().logits.unwrap().into_value().into_f32_vec()
}

/// Records where the hooks are asked for deltas.
#[derive(Default)]
struct Recorder {
    linear: RefCell<Vec<(usize, Proj)>>,
    adapters: RefCell<Vec<(usize, Site)>>,
}

impl LayerHooks for Recorder {
    fn linear_delta(&self, _: &mut Tape, _: &ParamStore, layer: usize, proj: Proj, _: &Var) -> Result<Option<Var>> {
        self.linear.borrow_mut().push((layer, proj));
        Ok(None)
    }
    fn adapter(&self, _: &mut Tape, _: &ParamStore, layer: usize, site: Site, _: &Var) -> Result<Option<Var>> {
        self.adapters.borrow_mut().push((layer, site));
        Ok(None)
    }
}

#[test]
fn every_projection_and_sublayer_reaches_the_hooks() {
    let (model, store) = load_tiny(false);
    let rec = Recorder::default();
    let batch = EncodedBatch::from_sequences(&[(&[1, 2, 3][..], &[0, 0, 0][..])], 0);
    model.forward(&mut Tape::no_grad(), &store, &batch, &rec, &DecoderOptions { logits: Logits::Last, ..Default::default() }, None).unwrap();
    let order = [Proj::Query, Proj::Key, Proj::Value, Proj::Output, Proj::FfnGate, Proj::FfnIn, Proj::FfnOut];
    let want: Vec<(usize, Proj)> = (0..2).flat_map(|l| order.iter().map(move |&p| (l, p))).collect();
    assert_eq!(*rec.linear.borrow(), want);
    assert_eq!(*rec.adapters.borrow(), vec![(0, Site::Attention), (0, Site::Ffn), (1, Site::Attention), (1, Site::Ffn)]);
}

/// Prefix keys/values given per layer, as prefix tuning does, with the real tokens' positions
/// shifted by the prefix length (transformers counts the prefix as past tokens).
struct FixedPrefix {
    kv: Vec<(ParamId, ParamId)>,
    shift: usize,
}

impl LayerHooks for FixedPrefix {
    fn prefix(&self, tape: &mut Tape, store: &ParamStore, layer: usize) -> Result<Option<(Var, Var)>> {
        let (k, v) = self.kv[layer];
        Ok(Some((tape.param(store, k), tape.param(store, v))))
    }
    fn position_shift(&self) -> usize {
        self.shift
    }
}

#[test]
fn prefix_keys_act_as_cached_tokens_and_get_gradients() {
    let (model, mut store) = load_tiny(false);
    let (prefix_ids, ids) = (vec![1u32, 50, 7], vec![17u32, 42, 5, 88]);
    // Reference: the prefix tokens cached, then the real tokens.
    let mut cache = KvCache::new(1, model.num_layers(), model.config.kv_width());
    let opts = DecoderOptions { logits: Logits::All, ..Default::default() };
    let pre = EncodedBatch::from_sequences(&[(&prefix_ids[..], &[0, 0, 0][..])], 0);
    model.forward(&mut Tape::no_grad(), &store, &pre, &NoHooks, &opts, Some(&mut cache)).unwrap();
    let batch = EncodedBatch::from_sequences(&[(&ids[..], &[0, 0, 0, 0][..])], 0);
    let want = model.forward(&mut Tape::no_grad(), &store, &batch, &NoHooks, &opts, Some(&mut cache.clone())).unwrap();
    // The same keys and values as a trainable prefix.
    let w = model.config.kv_width();
    let kv = (0..model.num_layers())
        .map(|l| {
            let (k, v) = cache.layer(l, 0);
            let k = store.add(format!("prefix.{l}.k"), Tensor::new(k.to_vec(), &[3, w]), true).unwrap();
            let v = store.add(format!("prefix.{l}.v"), Tensor::new(v.to_vec(), &[3, w]), true).unwrap();
            (k, v)
        })
        .collect();
    let hooks = FixedPrefix { kv, shift: 3 };
    let mut tape = Tape::new();
    let got = model.forward(&mut tape, &store, &batch, &hooks, &opts, None).unwrap();
    let (g, wv) = (got.logits.unwrap(), want.logits.unwrap());
    let err = rel_err(&to64(g.value().f32s()), &to64(wv.value().f32s()), 1e-12);
    assert!(err < 1e-6, "prefix vs cache: {err:.3e}");
    let loss = polyadapt::engine::ops::sum_all(&mut tape, &g).unwrap();
    tape.backward(&loss, &mut store).unwrap();
    for (k, v) in &hooks.kv {
        for id in [k, v] {
            let grad = store.grad(*id).unwrap_or_else(|| panic!("{} has no gradient", store.name(*id)));
            assert!(grad.f32s().iter().any(|&x| x != 0.0), "{} has a zero gradient", store.name(*id));
        }
    }
}
