//! The adaptation modules on their own: initial values, LoRA merge/unmerge, what the tape keeps
//! under prefix-only training, combinations through HookSet, and the fine-tuning baselines.

mod common;
mod peft_support;

use common::*;
use peft_support::*;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::hooks::{HookSet, LayerHooks, NoHooks};
use polyadapt::models::peft::names::weight_name;
use polyadapt::models::peft::{
    fine_tune, Adaptation, AdapterActivation, AdapterConfig, FineTuneConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit,
};

fn tiny_bert() -> (BertModel, ParamStore) {
    load_model(&fixtures_dir().join("tiny-bert-tanh"))
}

fn batch() -> polyadapt::data::EncodedBatch {
    batch_from(&read_safetensors(&fixtures_dir().join("tiny-bert-tanh/reference.safetensors")))
}

fn lora_all(layers: Option<Vec<usize>>) -> LoraConfig {
    let targets = ["q", "k", "v", "o", "ffn_in", "ffn_out"].map(String::from).to_vec();
    LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets, layers, rslora: false }
}

fn adapters() -> AdapterConfig {
    AdapterConfig { size: 4, activation: AdapterActivation::Gelu, sites: vec!["attention".into(), "ffn".into()], layers: None, init_std: 1e-3, houlsby: false }
}

#[test]
fn new_modules_start_from_the_backbone_exactly() {
    let (model, mut store) = tiny_bert();
    let b = batch();
    let plain = hidden_states(&model, &store, &b, &NoHooks);
    let methods = MethodsConfig { lora: Some(lora_all(None)), adapter: Some(adapters()), ..Default::default() };
    let a = Adaptation::build(&mut store, &model.config, &methods, 3, None).unwrap();
    // B = 0 and up = 0: the deltas are exact zeros, so the outputs are equal bit for bit.
    assert!(hidden_states(&model, &store, &b, &a) == plain);
    // A is uniform in +-1/sqrt(in) (nn.Linear's kaiming_uniform(a=sqrt(5))), and not constant.
    let lora = a.lora.as_ref().unwrap();
    for s in lora.sites() {
        let av = store.value(s.a).f32s();
        let bound = 1.0 / (av.len() as f32 / 4.0).sqrt();
        assert!(av.iter().all(|v| v.abs() <= bound) && av.iter().any(|v| v.abs() > 0.5 * bound));
        assert!(store.value(s.b).f32s().iter().all(|&v| v == 0.0));
    }
    // The same seed gives the same values; another seed others.
    let (_, mut s2) = tiny_bert();
    let a2 = Adaptation::build(&mut s2, &model.config, &methods, 3, None).unwrap();
    let first = |st: &ParamStore, a: &Adaptation| st.value(a.params()[0]).f32s().to_vec();
    assert_eq!(first(&store, &a), first(&s2, &a2));
    let (_, mut s3) = tiny_bert();
    let a3 = Adaptation::build(&mut s3, &model.config, &methods, 4, None).unwrap();
    assert_ne!(first(&store, &a), first(&s3, &a3));
}

#[test]
fn lora_merge_equals_the_hook_and_unmerge_restores_the_weights_bit_for_bit() {
    for dtype in [DType::F32, DType::BF16] {
        let mut store = ParamStore::new();
        let dir = real_model("all-minilm-l6-v2");
        let model = BertModel::load(&dir, &mut store, LoadOptions { dtype, ..Default::default() }).unwrap();
        let methods = MethodsConfig { lora: Some(lora_all(Some(vec![1, 4]))), ..Default::default() };
        let mut a = Adaptation::build(&mut store, &model.config, &methods, 9, None).unwrap();
        randomize(&mut store, &a.params(), 4, 0.1);
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
        let lines = polyadapt::data::text::read_lines(&fixtures_dir().join("texts_multilingual.txt")).unwrap();
        let b = tok.encode_batch(&lines, model.max_tokens()).unwrap();
        let hooked = hidden_states(&model, &store, &b, &a);
        let weights: Vec<_> = a.lora.as_ref().unwrap().sites().iter().map(|s| store.id(&weight_name(s.layer, s.proj)).unwrap()).collect();
        let before: Vec<_> = weights.iter().map(|&id| (store.value(id).clone(), store.value(id).storage_id())).collect();

        a.lora.as_mut().unwrap().merge(&mut store).unwrap();
        assert!(a.lora.as_mut().unwrap().merge(&mut store).is_err(), "merging twice is an error");
        for &id in &weights {
            assert_eq!(store.value(id).dtype(), dtype, "the merged weight keeps its dtype");
        }
        // While merged the hook adds nothing: the model alone computes W' x.
        let merged = hidden_states(&model, &store, &b, &a);
        assert!(merged == hidden_states(&model, &store, &b, &NoHooks));
        let w = model.config.hidden_size;
        let last = |v: &Vec<Vec<f32>>| real_rows(&to64(v.last().unwrap()), &b.mask, w);
        let e = rel_err(&last(&merged), &last(&hooked), 1e-12);
        let plain_gap = {
            a.lora.as_mut().unwrap().unmerge(&mut store).unwrap();
            let p = rel_err(&last(&hidden_states(&model, &store, &b, &NoHooks)), &last(&hooked), 1e-12);
            a.lora.as_mut().unwrap().merge(&mut store).unwrap();
            p
        };
        // f32: rounding only. bf16: the merged weight is rounded to bf16 as peft's merge on a
        // bf16 model is; still far closer than the model without LoRA.
        let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
        println!("{dtype:?}: merged vs hooked {e:.2e}; plain vs hooked {plain_gap:.2e}");
        assert!(e < tol && e < plain_gap / 10.0, "{dtype:?}: merged vs hooked {e:.2e}");

        a.lora.as_mut().unwrap().unmerge(&mut store).unwrap();
        assert!(a.lora.as_mut().unwrap().unmerge(&mut store).is_err(), "unmerging twice is an error");
        for (&id, (t, storage)) in weights.iter().zip(&before) {
            assert_eq!(store.value(id).storage_id(), *storage, "the original tensor itself is back");
            assert_eq!(store.value(id).is_mapped(), t.is_mapped());
            let bits = |x: &polyadapt::engine::tensor::Tensor| x.to_f32_cow().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(store.value(id)), bits(t));
        }
        assert!(hidden_states(&model, &store, &b, &a) == hooked, "after unmerge the hook is back");
    }
}

#[test]
fn prefix_only_training_keeps_nothing_before_the_first_attention() {
    let dir = real_model("all-minilm-l6-v2");
    let (model, _) = load_model(&dir);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let lines = polyadapt::data::text::read_lines(&fixtures_dir().join("texts_multilingual.txt")).unwrap();
    let b = tok.encode_batch(&lines[..4], model.max_tokens()).unwrap();
    for projection in [None, Some(16)] {
        let (_, mut fresh) = load_model(&dir);
        let cfg = PrefixConfig { virtual_tokens: 5, projection, layers: None, peft_positions: true };
        let a = Adaptation::build(&mut fresh, &model.config, &MethodsConfig { prefix: Some(cfg), ..Default::default() }, 1, None).unwrap();
        let mut tape = Tape::new();
        let opts = ForwardOptions { layers: vec![1], training: true, dropout_seed: 3 };
        let out = model.forward(&mut tape, &fresh, &b, &a, &opts).unwrap();
        let stats = tape.stats();
        let first_attention = stats.op_names.iter().position(|&o| o == "attention").unwrap();
        let before = &stats.op_names[..first_attention];
        // The prefix's own ops (table, once per pass) and nothing of the backbone: no embedding
        // lookup, LayerNorm, dropout or projection was recorded or kept.
        let mlp: &[&str] = if projection.is_some() { &["linear", "tanh", "linear"] } else { &[] };
        let gathers = 2 * model.num_layers();
        assert_eq!(before.len(), mlp.len() + 1 + gathers, "{before:?}");
        assert_eq!(&before[..mlp.len()], mlp);
        assert_eq!(before[mlp.len()], "reshape");
        assert!(before[mlp.len() + 1..].iter().all(|&o| o == "gather_rows"));
        assert_eq!(stats.op_names.iter().filter(|&&o| o == "attention").count(), 1);
        // The loss reaches the prefix; only the prefix's tensors get gradient buffers.
        let l = polyadapt::engine::ops::sum_all(&mut tape, &out.hidden[0].1).unwrap();
        tape.backward(&l, &mut fresh).unwrap();
        assert_eq!(fresh.grad_buffers().0, a.params().len());
    }
}

#[test]
fn combinations_through_hookset_equal_the_adaptation_and_train_every_tensor() {
    let (model, _) = load_model(&fixtures_dir().join("tiny-xlmr"));
    let b = batch_from(&read_safetensors(&fixtures_dir().join("tiny-xlmr/reference.safetensors")));
    let cases = [
        MethodsConfig { lora: Some(lora_all(None)), prefix: Some(PrefixConfig { virtual_tokens: 3, projection: Some(8), layers: None, peft_positions: true }), ..Default::default() },
        MethodsConfig {
            prompt: Some(PromptConfig { virtual_tokens: 2, init: PromptInit::Tokens(vec![5, 9]) }),
            lora: Some(lora_all(Some(vec![0]))),
            adapter: Some(adapters()),
            ..Default::default()
        },
    ];
    for (i, methods) in cases.into_iter().enumerate() {
        let (_, mut store) = load_model(&fixtures_dir().join("tiny-xlmr"));
        let a = Adaptation::build(&mut store, &model.config, &methods, 11, None).unwrap();
        let params = a.params();
        randomize(&mut store, &params, 12, 0.3);
        let together = hidden_states(&model, &store, &b, &a);
        assert!(together != hidden_states(&model, &store, &b, &NoHooks), "case {i}: the adaptation changes the output");
        let Adaptation { lora, prefix, prompt, adapters } = a;
        let mut boxed: Vec<Box<dyn LayerHooks>> = Vec::new();
        boxed.extend(lora.map(|m| Box::new(m) as Box<dyn LayerHooks>));
        boxed.extend(prefix.map(|m| Box::new(m) as Box<dyn LayerHooks>));
        boxed.extend(prompt.map(|m| Box::new(m) as Box<dyn LayerHooks>));
        boxed.extend(adapters.map(|m| Box::new(m) as Box<dyn LayerHooks>));
        let set = HookSet(boxed);
        assert!(hidden_states(&model, &store, &b, &set) == together, "case {i}: HookSet and Adaptation agree bit for bit");
        // Every tensor of every module gets a non-zero gradient.
        let mut tape = Tape::new();
        let opts = ForwardOptions { layers: vec![model.num_layers()], training: true, dropout_seed: 1 };
        let out = model.forward(&mut tape, &store, &b, &set, &opts).unwrap();
        let l = polyadapt::engine::ops::sum_all(&mut tape, &out.hidden[0].1).unwrap();
        let sq = polyadapt::engine::ops::mul(&mut tape, &l, &l).unwrap();
        tape.backward(&sq, &mut store).unwrap();
        assert_eq!(store.grad_buffers().0, params.len(), "case {i}");
        for &id in &params {
            assert!(store.grad(id).unwrap().f32s().iter().any(|&g| g != 0.0), "case {i}: {} has a zero gradient", store.name(id));
        }
    }
}

#[test]
fn prompt_init_from_tokens_and_text_as_peft() {
    let dir = real_model("all-minilm-l6-v2");
    let (model, mut store) = load_model(&dir);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let h = model.config.hidden_size;
    let word = store.value(store.id("embeddings.word_embeddings.weight").unwrap()).to_f32_cow().into_owned();
    let row = |i: u32| word[i as usize * h..(i as usize + 1) * h].to_vec();
    // "hello world" is [CLS] hello world [SEP] with special tokens, as peft tokenises it; 6
    // virtual tokens repeat the ids, 3 cut them.
    let ids = tok.encode_batch(&["hello world".to_string()], 512).unwrap().ids;
    assert_eq!(ids.len(), 4);
    for (k, name) in [(6, "a"), (3, "b")] {
        let cfg = PromptConfig { virtual_tokens: k, init: PromptInit::Text("hello world".into()) };
        let mut s = ParamStore::new();
        let m = BertModel::load(&dir, &mut s, LoadOptions::default()).unwrap();
        let p = polyadapt::models::peft::Prompt::new(&mut s, &m.config, &cfg, 0, Some(&tok)).unwrap();
        let want: Vec<f32> = ids.iter().cycle().take(k).flat_map(|&i| row(i)).collect();
        assert_eq!(s.value(p.embedding).f32s(), &want[..], "{name}");
    }
    let cfg = PromptConfig { virtual_tokens: 2, init: PromptInit::Tokens(vec![7, 8]) };
    let p = polyadapt::models::peft::Prompt::new(&mut store, &model.config, &cfg, 0, None).unwrap();
    assert_eq!(store.value(p.embedding).f32s(), &[row(7), row(8)].concat()[..]);
    // Bad inits are errors, not panics.
    let mut s = ParamStore::new();
    let m = BertModel::load(&dir, &mut s, LoadOptions::default()).unwrap();
    let bad = PromptConfig { virtual_tokens: 2, init: PromptInit::Tokens(vec![u32::MAX]) };
    assert!(polyadapt::models::peft::Prompt::new(&mut s, &m.config, &bad, 0, None).err().unwrap().to_string().contains("outside the vocabulary"));
    let text = PromptConfig { virtual_tokens: 2, init: PromptInit::Text("x".into()) };
    assert!(polyadapt::models::peft::Prompt::new(&mut s, &m.config, &text, 0, None).err().unwrap().to_string().contains("tokenizer"));
}

#[test]
fn fine_tuning_baselines_set_trainable_flags_by_name() {
    let (model, mut store) = load_model(&real_model("all-minilm-l6-v2"));
    let n = model.num_layers();
    let lora = MethodsConfig { lora: Some(lora_all(Some(vec![0]))), ..Default::default() };
    let a = Adaptation::build(&mut store, &model.config, &lora, 1, None).unwrap();
    let count = fine_tune(&mut store, n, &FineTuneConfig { freeze_lowest: 2, embeddings: false }).unwrap();
    assert_eq!(count, (n - 2) * 16, "16 tensors per BERT layer");
    for id in store.ids() {
        let name = store.name(id);
        let want = name.starts_with("lora.") || (2..n).any(|l| name.starts_with(&format!("encoder.layer.{l}.")));
        assert_eq!(store.is_trainable(id), want, "{name}");
    }
    let full = fine_tune(&mut store, n, &FineTuneConfig { freeze_lowest: 0, embeddings: true }).unwrap();
    assert_eq!(full, store.len() - a.params().len(), "every backbone tensor");
    assert!(a.params().iter().all(|&id| store.is_trainable(id)), "the LoRA stays trainable");
    assert!(fine_tune(&mut store, n, &FineTuneConfig { freeze_lowest: n + 1, embeddings: false }).is_err());
    // Through the builder, as a run config gives it.
    let (_, mut s2) = load_model(&real_model("all-minilm-l6-v2"));
    let cfg: MethodsConfig = serde_json::from_str(r#"{"fine_tune": {"freeze_lowest": 5}}"#).unwrap();
    let a2 = Adaptation::build(&mut s2, &model.config, &cfg, 0, None).unwrap();
    assert!(a2.is_empty());
    assert_eq!(s2.trainable_ids().count(), 16);
}

#[test]
fn methods_config_names_unknown_keys() {
    let ok: MethodsConfig = serde_json::from_str(r#"{"lora": {"r": 8, "alpha": 16}, "prefix": {"virtual_tokens": 20, "projection": 512}}"#).unwrap();
    assert_eq!(ok.lora.as_ref().unwrap().targets, vec!["q", "v"], "default targets q, v");
    assert!(ok.prefix.as_ref().unwrap().peft_positions, "peft-compatible positions by default");
    for (text, key) in [(r#"{"lora": {"r": 8, "alpha": 16, "rank": 2}}"#, "rank"), (r#"{"lorra": {}}"#, "lorra"), (r#"{"prompt": {"virtual_tokens": 5, "init": {"txt": "a"}}}"#, "txt")] {
        let e = serde_json::from_str::<MethodsConfig>(text).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
    // Bad values are errors from the builder.
    let (model, mut store) = tiny_bert();
    for (cfg, needle) in [
        (MethodsConfig { lora: Some(LoraConfig { r: 0, ..lora_all(None) }), ..Default::default() }, "rank"),
        (MethodsConfig { lora: Some(LoraConfig { targets: vec!["qq".into()], ..lora_all(None) }), ..Default::default() }, "qq"),
        (MethodsConfig { lora: Some(lora_all(Some(vec![7]))), ..Default::default() }, "layer 7"),
        (MethodsConfig { adapter: Some(AdapterConfig { sites: vec!["mlp".into()], ..adapters() }), ..Default::default() }, "mlp"),
        (MethodsConfig { prefix: Some(PrefixConfig { virtual_tokens: 0, projection: None, layers: None, peft_positions: true }), ..Default::default() }, "virtual_tokens"),
    ] {
        let e = Adaptation::build(&mut store, &model.config, &cfg, 0, None).err().unwrap().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}
