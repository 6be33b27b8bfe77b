//! Every adaptation method on the tiny random LLaMA (tests/fixtures/tiny-llama: GQA, untied
//! head): the instruction-tuning loss's gradient against finite differences (directional
//! derivatives along random directions, dropout on with fixed masks), only the method's own
//! tensors getting gradient buffers; new modules leaving the model unchanged; LoRA merging;
//! fine-tuning flags by LLaMA names; the loss counting target positions only.

mod common;
#[path = "llama_support/tiny.rs"]
mod tiny;

use common::*;
use polyadapt::engine::autograd::{ParamId, ParamStore, Tape};
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::hooks::{LayerHooks, NoHooks};
use polyadapt::models::llama::lm_loss::{masked_lm_loss, LmExample, LmSequence};
use polyadapt::models::llama::{DecoderOptions, LlamaModel, Logits};
use polyadapt::models::peft::{
    Adaptation, AdapterActivation, AdapterConfig, Arch, FineTuneConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit,
};
use tiny::*;

/// Two prompt + target sequences of the tiny vocabulary (96).
fn examples() -> Vec<LmExample> {
    vec![
        LmExample { ids: vec![1, 17, 42, 5, 88, 23, 61, 9, 2], prompt_len: 5 },
        LmExample { ids: vec![1, 70, 3, 44, 12, 2], prompt_len: 3 },
    ]
}

/// The masked loss of [`examples`] (training mode, fixed dropout seed) and its value.
fn loss(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, tape: &mut Tape) -> (polyadapt::engine::autograd::Var, f64) {
    let ex = examples();
    let owned: Vec<(Vec<u32>, Vec<bool>)> = ex.iter().map(|e| (e.labels(), e.counted())).collect();
    let seqs: Vec<LmSequence> = ex.iter().zip(&owned).map(|(e, (l, c))| LmSequence { ids: &e.ids, labels: l, counted: c }).collect();
    let opts = DecoderOptions { training: true, dropout_seed: 77, ..Default::default() };
    let (l, n) = masked_lm_loss(model, tape, store, hooks, &seqs, &opts).unwrap();
    assert_eq!(n, 4 + 3, "target tokens counted");
    let v = l.value().f32s()[0] as f64;
    (l, v)
}

/// Checks the directional derivative of parameter `id` along a random direction against central
/// differences. In f32 the small step's difference is dominated by rounding when the derivative
/// is small, the large step's by truncation when the loss curves: the better of the two is
/// taken (a wrong gradient fails both).
fn directional(model: &LlamaModel, store: &mut ParamStore, hooks: &dyn LayerHooks, id: ParamId, seed: u64) {
    let grad = to64(store.grad(id).unwrap_or_else(|| panic!("{} has no gradient", store.name(id))).f32s());
    let base = store.value(id).to_f32_cow().into_owned();
    let shape = store.value(id).shape().to_vec();
    let dir = rand_vec(seed, base.len(), 1.0);
    let analytic: f64 = grad.iter().zip(&dir).map(|(g, d)| g * *d as f64).sum();
    let typical = norm(&grad) * norm(&to64(&dir)) / (grad.len() as f64).sqrt();
    assert!(typical > 0.0, "{}: zero gradient", store.name(id));
    let mut best = (f64::INFINITY, 0.0);
    for eps in [3e-3f32, 1e-2] {
        let mut at = |sign: f32| {
            let moved: Vec<f32> = base.iter().zip(&dir).map(|(x, d)| x + sign * eps * d).collect();
            store.set_value(id, Tensor::new(moved, &shape)).unwrap();
            loss(model, store, hooks, &mut Tape::new()).1
        };
        let fd = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
        let err = (analytic - fd).abs() / fd.abs().max(typical);
        if err < best.0 {
            best = (err, fd);
        }
    }
    store.set_value(id, Tensor::new(base, &shape)).unwrap();
    let (err, fd) = best;
    println!("{}: directional derivative {analytic:.6e}, finite difference {fd:.6e}, relative error {err:.2e}", store.name(id));
    assert!(err < 1e-2, "{}: directional derivative {analytic:.6e} vs finite difference {fd:.6e} (rel {err:.2e})", store.name(id));
}

/// Builds `methods` on the tiny model, sets the modules' tensors to random values, checks that
/// exactly the trainable tensors got gradient buffers and every one's directional derivative.
fn check(methods: MethodsConfig, scale: f32) {
    let (model, mut store) = load_tiny(false);
    let a = Adaptation::build(&mut store, &model.config, &methods, 5, None).unwrap();
    randomize(&mut store, &a.params(), 31, scale);
    let trainable: Vec<ParamId> = store.trainable_ids().collect();
    assert!(!trainable.is_empty());
    let mut tape = Tape::new();
    let (l, _) = loss(&model, &store, &a, &mut tape);
    tape.backward(&l, &mut store).unwrap();
    let bytes: usize = trainable.iter().map(|&id| store.value(id).numel() * 4).sum();
    assert_eq!(store.grad_buffers(), (trainable.len(), bytes), "gradient buffers: the trainable tensors only");
    for (k, &id) in trainable.iter().enumerate() {
        directional(&model, &mut store, &a, id, 1000 + k as u64);
    }
}

fn randomize(store: &mut ParamStore, ids: &[ParamId], seed: u64, scale: f32) {
    for (i, &id) in ids.iter().enumerate() {
        let shape = store.value(id).shape().to_vec();
        let n = store.value(id).numel();
        store.set_value(id, Tensor::new(rand_vec(seed.wrapping_add(i as u64 * 7919), n, scale), &shape)).unwrap();
    }
}

fn lora(targets: &[&str], layers: Option<Vec<usize>>) -> LoraConfig {
    LoraConfig { r: 3, alpha: 6.0, dropout: 0.1, targets: targets.iter().map(|s| s.to_string()).collect(), layers, rslora: false }
}

#[test]
fn lora_on_all_seven_projections_matches_finite_differences() {
    check(MethodsConfig { lora: Some(lora(&["q", "k", "v", "o", "gate", "up", "down"], None)), ..Default::default() }, 0.2);
}

#[test]
fn prefix_table_and_mlp_match_finite_differences() {
    check(MethodsConfig { prefix: Some(PrefixConfig { virtual_tokens: 3, projection: None, layers: None, peft_positions: true }), ..Default::default() }, 0.5);
    check(MethodsConfig { prefix: Some(PrefixConfig { virtual_tokens: 2, projection: Some(6), layers: Some(vec![1]), peft_positions: true }), ..Default::default() }, 0.3);
}

#[test]
fn prompt_matches_finite_differences() {
    check(MethodsConfig { prompt: Some(PromptConfig { virtual_tokens: 3, init: PromptInit::Random }), ..Default::default() }, 0.5);
}

#[test]
fn adapters_match_finite_differences() {
    let adapter = AdapterConfig { size: 4, activation: AdapterActivation::Gelu, sites: vec!["attention".into(), "ffn".into()], layers: None, init_std: 1e-3, houlsby: false };
    check(MethodsConfig { adapter: Some(adapter), ..Default::default() }, 0.2);
}

#[test]
fn full_fine_tuning_matches_finite_differences() {
    let ft = FineTuneConfig { freeze_lowest: 1, embeddings: true };
    check(MethodsConfig { fine_tune: Some(ft), ..Default::default() }, 0.0);
}

#[test]
fn combined_methods_match_finite_differences() {
    let methods = MethodsConfig {
        lora: Some(lora(&["q", "v", "down"], Some(vec![0]))),
        prompt: Some(PromptConfig { virtual_tokens: 2, init: PromptInit::Tokens(vec![5, 9]) }),
        ..Default::default()
    };
    check(methods, 0.3);
}

#[test]
fn fine_tuning_trains_llama_layers_by_name() {
    let (model, mut store) = load_tiny(false);
    let cfg = MethodsConfig { fine_tune: Some(FineTuneConfig { freeze_lowest: 1, embeddings: false }), lora: Some(lora(&["q"], None)), ..Default::default() };
    Adaptation::build(&mut store, &model.config, &cfg, 0, None).unwrap();
    let mut names: Vec<String> = store.trainable_ids().map(|id| store.name(id).to_string()).collect();
    names.sort();
    let mut want: Vec<String> = [
        "input_layernorm", "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "post_attention_layernorm", "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj",
    ]
    .iter()
    .map(|m| format!("model.layers.1.{m}.weight"))
    .collect();
    want.push("model.norm.weight".into());
    for l in 0..2 {
        want.push(format!("lora.layers.{l}.self_attn.q_proj.lora_A.weight"));
        want.push(format!("lora.layers.{l}.self_attn.q_proj.lora_B.weight"));
    }
    want.sort();
    assert_eq!(names, want);
    // With the embeddings: the token embedding and the untied output projection too.
    let (_, mut s2) = load_tiny(false);
    let n = polyadapt::models::peft::fine_tune_backbone(&mut s2, &Arch::from(&model.config), &FineTuneConfig { freeze_lowest: 0, embeddings: true }).unwrap();
    assert_eq!(n, s2.ids().count(), "every tensor of the tiny model trains");
    assert!(s2.trainable_ids().any(|id| s2.name(id) == "lm_head.weight"));
    assert!(polyadapt::models::peft::fine_tune_backbone(&mut s2, &Arch::from(&model.config), &FineTuneConfig { freeze_lowest: 3, embeddings: false }).is_err());
}

fn logits(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks) -> Vec<f32> {
    let r = read_safetensors(&tiny_dir().join("reference.safetensors"));
    let batch = reference_batch(&r);
    let opts = DecoderOptions { logits: Logits::All, ..Default::default() };
    model.forward(&mut Tape::no_grad(), store, &batch, hooks, &opts, None).unwrap().logits.unwrap().into_value().into_f32_vec()
}

#[test]
fn new_lora_and_adapters_leave_the_model_unchanged_and_lora_merges() {
    let (model, mut store) = load_tiny(false);
    let plain = logits(&model, &store, &NoHooks);
    let adapter = AdapterConfig { size: 4, activation: AdapterActivation::Relu, sites: vec!["attention".into(), "ffn".into()], layers: None, init_std: 1e-3, houlsby: false };
    let methods = MethodsConfig { lora: Some(lora(&["q", "k", "v", "o", "gate", "up", "down"], None)), adapter: Some(adapter), ..Default::default() };
    let mut a = Adaptation::build(&mut store, &model.config, &methods, 3, None).unwrap();
    assert!(logits(&model, &store, &a) == plain, "a new LoRA (B = 0) and new adapters (up = 0) change nothing");
    // Shapes follow the projections: q [32 -> 32], k/v [32 -> 16] (2 kv heads of 8), gate/up
    // [32 -> 48], down [48 -> 32].
    let l = a.lora.as_ref().unwrap();
    let shape = |n: &str| store.value(store.id(n).unwrap()).shape().to_vec();
    assert_eq!(shape("lora.layers.0.self_attn.k_proj.lora_B.weight"), vec![16, 3]);
    assert_eq!(shape("lora.layers.1.mlp.down_proj.lora_A.weight"), vec![3, 48]);
    assert_eq!(shape("lora.layers.1.mlp.gate_proj.lora_B.weight"), vec![48, 3]);
    assert_eq!(shape("adapter.layers.0.self_attn.adapter.down.weight"), vec![4, 32]);
    assert_eq!(l.sites().len(), 14);
    let lora_params = a.lora.as_ref().unwrap().params();
    randomize(&mut store, &lora_params, 8, 0.3);
    let adapted = logits(&model, &store, a.lora.as_ref().unwrap());
    assert!(rel_err(&to64(&adapted), &to64(&plain), 1e-12) > 1e-2, "random LoRA moves the logits");
    let before: Vec<Vec<f32>> = store.ids().map(|id| store.value(id).to_f32_cow().into_owned()).collect();
    a.lora.as_mut().unwrap().merge(&mut store).unwrap();
    let merged = logits(&model, &store, &NoHooks);
    let e = rel_err(&to64(&merged), &to64(&adapted), 1e-12);
    assert!(e < 1e-5, "merged weights give the adapted logits: {e:.2e}");
    a.lora.as_mut().unwrap().unmerge(&mut store).unwrap();
    let after: Vec<Vec<f32>> = store.ids().map(|id| store.value(id).to_f32_cow().into_owned()).collect();
    assert!(before == after, "unmerge restores every weight bit for bit");
}

#[test]
fn decoder_projection_names_and_errors() {
    let (model, mut store) = load_tiny(false);
    for (targets, needle) in [(vec!["ffn_gate_x"], "not a projection"), (vec!["query"], "not a projection")] {
        let e = Adaptation::build(&mut store, &model.config, &MethodsConfig { lora: Some(lora(&targets, None)), ..Default::default() }, 0, None).err().unwrap();
        assert!(e.to_string().contains(needle), "{e}");
    }
    // peft's module names are accepted, and name the same projections as the short ones.
    let a = Adaptation::build(&mut store, &model.config, &MethodsConfig { lora: Some(lora(&["q_proj", "up", "ffn_out", "gate_proj"], Some(vec![0]))), ..Default::default() }, 0, None).unwrap();
    let got: Vec<&str> = a.lora.as_ref().unwrap().sites().iter().map(|s| s.proj.short()).collect();
    assert_eq!(got, vec!["q", "ffn_in", "ffn_out", "ffn_gate"]);
    // A BERT encoder has no gate.
    let bert = polyadapt::models::config::BertConfig::from_file(&fixtures_dir().join("tiny-bert-tanh/config.json")).unwrap();
    let e = Arch::from(&bert).parse_proj("gate").err().unwrap();
    assert!(e.to_string().contains("no gated feed-forward"), "{e}");
}

#[test]
fn the_loss_counts_target_positions_only() {
    let (model, store) = load_tiny(false);
    let ex = examples();
    let run = |labels: &[Vec<u32>]| {
        let counted: Vec<Vec<bool>> = ex.iter().map(|e| e.counted()).collect();
        let seqs: Vec<LmSequence> = ex.iter().enumerate().map(|(i, e)| LmSequence { ids: &e.ids, labels: &labels[i], counted: &counted[i] }).collect();
        masked_lm_loss(&model, &mut Tape::no_grad(), &store, &NoHooks, &seqs, &DecoderOptions::default()).unwrap().0.value().f32s()[0]
    };
    let labels: Vec<Vec<u32>> = ex.iter().map(|e| e.labels()).collect();
    let base = run(&labels);
    // The f64 reference: -mean log softmax(logits)[next token] over the target positions.
    let mut total = 0.0f64;
    let mut n = 0;
    for e in &ex {
        let batch = polyadapt::data::EncodedBatch::from_sequences(&[(&e.ids[..], &vec![0; e.ids.len()][..])], 0);
        let out = model.forward(&mut Tape::no_grad(), &store, &batch, &NoHooks, &DecoderOptions { logits: Logits::All, ..Default::default() }, None).unwrap();
        let lg = out.logits.unwrap().into_value().into_f32_vec();
        for t in e.prompt_len - 1..e.ids.len() - 1 {
            let row = &lg[t * 96..(t + 1) * 96];
            let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            total += lse - row[e.ids[t + 1] as usize] as f64;
            n += 1;
        }
    }
    let want = total / n as f64;
    assert!((base as f64 - want).abs() < 1e-5 * want.abs(), "loss {base} vs f64 reference {want}");
    // Whatever the labels of prompt positions say, the loss is the same, bit for bit.
    for seed in 0..5u64 {
        let mut changed = labels.clone();
        for (i, e) in ex.iter().enumerate() {
            for (t, label) in changed[i][..e.prompt_len - 1].iter_mut().enumerate() {
                *label = (rand_vec(seed * 31 + t as u64 + 7 * i as u64, 1, 1.0)[0].abs() * 95.0) as u32;
            }
            let last = e.ids.len() - 1;
            changed[i][last] = 95 - changed[i][last];
        }
        assert_eq!(run(&changed).to_bits(), base.to_bits(), "prompt-position labels changed the loss");
    }
    // A target label does change it.
    let mut changed = labels.clone();
    changed[0][5] = (labels[0][5] + 1) % 96;
    assert_ne!(run(&changed), base);
}

/// Prompt positions carry no gradient: the output projection's gradient (untied `lm_head`,
/// trainable here) is, to f32 rounding, the f64 sum over target positions only of
/// `(softmax(logits_t) - onehot(next token)) h_t^T / N` (`h_t` the final-norm hidden state);
/// the same sum over every position differs, so the check can tell.
#[test]
fn prompt_positions_carry_no_gradient() {
    let (model, mut store) = load_tiny(false);
    let head = store.id("lm_head.weight").expect("the tiny model's head is untied");
    store.set_trainable(head, true);
    let ex = examples();
    let (vocab, width) = (model.config.vocab_size, model.config.hidden_size);
    let owned: Vec<(Vec<u32>, Vec<bool>)> = ex.iter().map(|e| (e.labels(), e.counted())).collect();
    let seqs: Vec<LmSequence> = ex.iter().zip(&owned).map(|(e, (l, c))| LmSequence { ids: &e.ids, labels: l, counted: c }).collect();
    let mut tape = Tape::new();
    let (l, n) = masked_lm_loss(&model, &mut tape, &store, &NoHooks, &seqs, &DecoderOptions::default()).unwrap();
    tape.backward(&l, &mut store).unwrap();
    let got = to64(store.grad(head).unwrap().f32s());
    // The f64 reference from each sequence's hidden states and logits.
    let reference = |all_positions: bool| {
        let mut g = vec![0.0f64; vocab * width];
        let mut count = 0;
        let mut terms = Vec::new();
        for e in &ex {
            let batch = polyadapt::data::EncodedBatch::from_sequences(&[(&e.ids[..], &vec![0; e.ids.len()][..])], 0);
            let mut t = Tape::no_grad();
            let opts = DecoderOptions { layers: vec![model.num_layers()], logits: Logits::All, ..Default::default() };
            let out = model.forward(&mut t, &store, &batch, &NoHooks, &opts, None).unwrap();
            let h = out.hidden[0].1.value().to_f32_cow().into_owned();
            let lg = out.logits.unwrap().into_value().into_f32_vec();
            let first = if all_positions { 0 } else { e.prompt_len - 1 };
            for t in first..e.ids.len() - 1 {
                terms.push((lg[t * vocab..(t + 1) * vocab].to_vec(), h[t * width..(t + 1) * width].to_vec(), e.ids[t + 1] as usize));
                count += 1;
            }
        }
        for (row, h, y) in &terms {
            let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for v in 0..vocab {
                let d = (row[v] as f64 - max).exp() / z - if v == *y { 1.0 } else { 0.0 };
                for k in 0..width {
                    g[v * width + k] += d * h[k] as f64 / count as f64;
                }
            }
        }
        (g, count)
    };
    let (want, count) = reference(false);
    assert_eq!(count, n, "target positions");
    let err = rel_err(&got, &want, 1e-12);
    assert!(err < 1e-5, "lm_head gradient against the target-only reference: relative error {err:.2e}");
    let (all, _) = reference(true);
    let apart = rel_err(&all, &want, 1e-12);
    assert!(apart > 1e-2, "counting the prompt positions should change the gradient (only {apart:.2e})");
}
