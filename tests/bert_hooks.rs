//! The hook points adaptation modules use, checked by equivalences on the real and tiny models:
//! a soft prompt made of token embeddings equals those tokens given as input; a position shift
//! equals the same shift written into the position table; an adapter delta of zero changes
//! nothing and a HookSet sums its members.

mod common;

use common::*;
use polyadapt::data::EncodedBatch;
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape, Var};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::hooks::{HookSet, LayerHooks, NoHooks, Site};
use polyadapt::Result;

struct Prompt(ParamId);

impl LayerHooks for Prompt {
    fn prompt(&self, tape: &mut Tape, store: &ParamStore) -> Result<Option<Var>> {
        Ok(Some(tape.param(store, self.0)))
    }
}

struct Shift(usize);

impl LayerHooks for Shift {
    fn position_shift(&self) -> usize {
        self.0
    }
}

/// Adds `scale * h` after the chosen site (a stand-in for an adapter).
struct ScaleAdapter(Site, f32);

impl LayerHooks for ScaleAdapter {
    fn adapter(&self, tape: &mut Tape, _: &ParamStore, _: usize, site: Site, h: &Var) -> Result<Option<Var>> {
        Ok((site == self.0).then(|| ops::scale(tape, h, self.1)).transpose()?)
    }
}

fn batch(rows: &[Vec<u32>], len: usize) -> EncodedBatch {
    let b = rows.len();
    let mut ids = vec![0u32; b * len];
    let mut mask = vec![0.0f32; b * len];
    for (r, row) in rows.iter().enumerate() {
        ids[r * len..r * len + row.len()].copy_from_slice(row);
        mask[r * len..r * len + row.len()].fill(1.0);
    }
    EncodedBatch::from_rows(ids, vec![0; b * len], mask, b, len).unwrap()
}

fn last(model: &BertModel, store: &ParamStore, b: &EncodedBatch, hooks: &dyn LayerHooks) -> Vec<f32> {
    let mut tape = Tape::new();
    let opts = ForwardOptions { layers: vec![model.num_layers()], ..Default::default() };
    let out = model.forward(&mut tape, store, b, hooks, &opts).unwrap();
    out.padded(&mut tape, &out.hidden[0].1).unwrap().into_value().into_f32_vec()
}

/// Rows `from..` of each sequence of a padded `[b, len, h]` output.
fn tail(v: &[f32], b: usize, len: usize, h: usize, from: usize, n: usize) -> Vec<f64> {
    (0..b).flat_map(|r| v[(r * len + from) * h..(r * len + from + n) * h].iter().map(|&x| x as f64).collect::<Vec<_>>()).collect()
}

#[test]
fn soft_prompt_of_token_embeddings_equals_the_tokens_as_input() {
    for dir in [fixtures_dir().join("tiny-xlmr"), real_model("all-minilm-l6-v2")] {
        let mut store = ParamStore::new();
        let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
        let h = model.config.hidden_size;
        let virt = [7u32, 11, 13];
        let word = store.value(store.id("embeddings.word_embeddings.weight").unwrap()).to_f32_cow().into_owned();
        let rows: Vec<f32> = virt.iter().flat_map(|&i| word[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
        let prompt = store.add("prompt", Tensor::new(rows, &[3, h]), true).unwrap();
        let real = [vec![5u32, 20, 30, 6], vec![5, 40, 6]];
        let with_prompt = last(&model, &store, &batch(&real, 4), &Prompt(prompt));
        let as_tokens: Vec<Vec<u32>> = real.iter().map(|r| virt.iter().copied().chain(r.iter().copied()).collect()).collect();
        let plain = last(&model, &store, &batch(&as_tokens, 7), &NoHooks);
        for (r, row) in real.iter().enumerate() {
            let got = tail(&with_prompt, 2, 4, h, 0, 4)[r * 4 * h..(r * 4 + row.len()) * h].to_vec();
            let want = tail(&plain, 2, 7, h, 3, 4)[r * 4 * h..(r * 4 + row.len()) * h].to_vec();
            assert_close(&format!("{}: sequence {r}", dir.display()), &got, &want, 1e-5);
        }
    }
}

#[test]
fn position_shift_equals_a_shifted_position_table() {
    let dir = fixtures_dir().join("tiny-bert-tanh");
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
    let h = model.config.hidden_size;
    let b = batch(&[vec![2, 17, 33, 3], vec![2, 9, 3]], 4);
    let shifted = last(&model, &store, &b, &Shift(5));
    // The same model with its position table moved up by 5 rows, unshifted.
    let pid = store.id("embeddings.position_embeddings.weight").unwrap();
    let table = store.value(pid).to_f32_cow().into_owned();
    let rows = table.len() / h;
    let moved: Vec<f32> = (0..rows).flat_map(|r| table[((r + 5).min(rows - 1)) * h..((r + 5).min(rows - 1) + 1) * h].to_vec()).collect();
    store.set_value(pid, Tensor::new(moved, &[rows, h])).unwrap();
    let plain = last(&model, &store, &b, &NoHooks);
    assert_close("shifted positions", &to64(&shifted), &to64(&plain), 1e-6);
    // Too many positions is an error, not a panic.
    let mut tape = Tape::new();
    let e = model.forward(&mut tape, &store, &b, &Shift(40), &ForwardOptions { layers: vec![1], ..Default::default() });
    assert!(e.err().unwrap().to_string().contains("at most"));
}

#[test]
fn adapters_and_hook_sets() {
    let dir = fixtures_dir().join("tiny-bert-tanh");
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
    let b = batch(&[vec![2, 17, 33, 3], vec![2, 9, 3]], 4);
    let plain = last(&model, &store, &b, &NoHooks);
    let zero = last(&model, &store, &b, &ScaleAdapter(Site::Ffn, 0.0));
    assert_eq!(plain, zero, "a zero adapter delta changes nothing");
    let single = last(&model, &store, &b, &ScaleAdapter(Site::Attention, 0.5));
    assert_ne!(plain, single, "an adapter delta changes the output");
    // Two halves in a HookSet equal one whole (h + 0.25h + 0.25h = h + 0.5h).
    let set = HookSet(vec![Box::new(ScaleAdapter(Site::Attention, 0.25)), Box::new(ScaleAdapter(Site::Attention, 0.25))]);
    assert_close("hook set", &to64(&last(&model, &store, &b, &set)), &to64(&single), 1e-6);
    // Two prompts cannot be combined.
    let p = store.add("p", Tensor::zeros(&[1, model.config.hidden_size]), true).unwrap();
    let both = HookSet(vec![Box::new(Prompt(p)), Box::new(Prompt(p))]);
    let mut tape = Tape::new();
    let e = model.forward(&mut tape, &store, &b, &both, &ForwardOptions { layers: vec![1], ..Default::default() });
    assert!(e.err().unwrap().to_string().contains("two adaptation modules"));
}
