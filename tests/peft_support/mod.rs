//! Helpers shared by the PEFT tests: models, batches, forward passes, random adapter values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use polyadapt::data::EncodedBatch;
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape};
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::hooks::LayerHooks;

use crate::common::{rand_vec, read_safetensors, Fixture};

pub fn load_model(dir: &Path) -> (BertModel, ParamStore) {
    let mut store = ParamStore::new();
    let model = BertModel::load(dir, &mut store, LoadOptions::default()).unwrap();
    (model, store)
}

/// A batch from the `input_ids`, `token_type_ids` (zeros when absent) and `attention_mask`
/// of a fixture file.
pub fn batch_from(fx: &std::collections::HashMap<String, Fixture>) -> EncodedBatch {
    let ids = &fx["input_ids"];
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let to_u32 = |v: &[f64]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
    let types = fx.get("token_type_ids").map_or(vec![0; b * t], |f| to_u32(&f.data));
    let mask = fx["attention_mask"].data.iter().map(|&x| x as f32).collect();
    EncodedBatch::from_rows(to_u32(&ids.data), types, mask, b, t).unwrap()
}

/// Every hidden state (0 = embeddings output .. N = last layer), padded `[b, t, h]` flat, with
/// zeros at padding.
pub fn hidden_states(model: &BertModel, store: &ParamStore, batch: &EncodedBatch, hooks: &dyn LayerHooks) -> Vec<Vec<f32>> {
    let mut tape = Tape::new();
    let opts = ForwardOptions { layers: (0..=model.num_layers()).collect(), ..Default::default() };
    let out = model.forward(&mut tape, store, batch, hooks, &opts).unwrap();
    out.hidden.iter().map(|(_, h)| out.padded(&mut tape, h).unwrap().into_value().into_f32_vec()).collect()
}

/// The real tokens' rows of a padded `[b, t, width]` state.
pub fn real_rows(v: &[f64], mask: &[f32], width: usize) -> Vec<f64> {
    (0..mask.len()).filter(|&r| mask[r] != 0.0).flat_map(|r| v[r * width..(r + 1) * width].to_vec()).collect()
}

/// Overwrites each parameter with uniform values in `±scale` (a stand-in for a few training
/// steps: every tensor non-trivial, LoRA's B included).
pub fn randomize(store: &mut ParamStore, ids: &[ParamId], seed: u64, scale: f32) {
    for (i, &id) in ids.iter().enumerate() {
        let shape = store.value(id).shape().to_vec();
        let n = store.value(id).numel();
        store.set_value(id, Tensor::new(rand_vec(seed.wrapping_add(i as u64 * 7919), n, scale), &shape)).unwrap();
    }
}

pub fn fixture(path: &Path) -> std::collections::HashMap<String, Fixture> {
    assert!(path.is_file(), "{} is missing: run tests/reference/peft_check.py (see tests/reference/README.md)", path.display());
    read_safetensors(path)
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-peft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Whether a written adapter file is the committed one: the same bytes, except that tensor
/// values of a safetensors file (with the same header: names, dtypes, shapes, metadata) may differ
/// by rounding (1e-6 relative): a prefix projection's saved keys and values are computed, and
/// the order of a product's sums is the matrix kernels' choice. `None` when they match, else
/// what differs.
pub fn adapter_file_mismatch(path: &Path, got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let header = |b: &[u8]| b.get(..8).map(|n| u64::from_le_bytes(n.try_into().unwrap()) as usize).and_then(|n| b.get(..8 + n).map(|h| h.to_vec()));
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") || header(got).is_none() || header(got) != header(want) {
        return Some("the bytes (or the safetensors header) differ".into());
    }
    let dir = std::env::temp_dir().join(format!("polyadapt-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("got.safetensors"), dir.join("want.safetensors"));
    std::fs::write(&a, got).unwrap();
    std::fs::write(&b, want).unwrap();
    let (ga, wb) = (crate::common::read_safetensors(&a), crate::common::read_safetensors(&b));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, w) in &wb {
        let g = &ga[name];
        for (i, (x, y)) in g.data.iter().zip(&w.data).enumerate() {
            if (x - y).abs() > 1e-6 * y.abs().max(1.0) {
                return Some(format!("tensor `{name}` element {i}: {x} against {y}"));
            }
        }
    }
    None
}
