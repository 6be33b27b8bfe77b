//! The tiny random LLaMA of tests/fixtures/tiny-llama and its reference batch.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use polyadapt::data::tokenize::EncodedBatch;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::llama::LlamaModel;

use crate::common::{fixtures_dir, Fixture};

pub fn tiny_dir() -> PathBuf {
    fixtures_dir().join("tiny-llama")
}

/// The tiny model from its safetensors directory or from its GGUF file, in f32.
pub fn load_tiny(from_gguf: bool) -> (LlamaModel, ParamStore) {
    let path = if from_gguf { tiny_dir().join("model.gguf") } else { tiny_dir() };
    let mut store = ParamStore::new();
    let model = LlamaModel::load(&path, &mut store, LoadOptions::default()).unwrap_or_else(|e| panic!("{}", e.chain()));
    (model, store)
}

/// The reference's padded batch (`input_ids`, `attention_mask`).
pub fn reference_batch(r: &HashMap<String, Fixture>) -> EncodedBatch {
    let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);
    let (b, t) = (ids.shape[0], ids.shape[1]);
    EncodedBatch::from_rows(
        ids.data.iter().map(|&v| v as u32).collect(),
        vec![0; b * t],
        mask.data.iter().map(|&v| v as f32).collect(),
        b,
        t,
    )
    .unwrap()
}

/// The real tokens of each row of the reference batch.
pub fn reference_prompts(r: &HashMap<String, Fixture>) -> Vec<Vec<u32>> {
    let batch = reference_batch(r);
    (0..batch.batch).map(|b| batch.ids[b * batch.len..b * batch.len + batch.lengths[b]].to_vec()).collect()
}
