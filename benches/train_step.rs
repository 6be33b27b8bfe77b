//! One training configuration per process, measured as the PyTorch baseline
//! (`../shared/bench/pytorch/bench_train.py`) measures it: extractive QA on multilingual-e5-small
//! (or MiniLM), batches of 8 real XQuAD-en (question, context) windows of at most 256 tokens,
//! warm-up steps, then the median of timed steps (forward with the loss, backward, AdamW), and
//! the peak resident memory of the process. Prints one JSON line.
//!
//! Each example gives one window, as the baseline's `truncation="only_second"` does: the first
//! window of `data::qa_windows` (question, then as much context as fits). The engine packs real
//! tokens and never computes on padding; the baseline pads to 256. Both report examples/s.
//!
//! ```text
//! cargo bench --bench train_step -- --method lora [--no-dropout] [--bf16] [--model minilm]
//!     [--batch 8] [--seq 256] [--warmup 3] [--steps 10] [--threads 2] [--virtual-tokens 20]
//! ```
//! Methods as the baseline's: `lora` (r 8, alpha 16, q and v), `prefix` (20 virtual tokens, no
//! reparameterisation, peft's position shift), `prompt` (20 tokens), `lora_prefix`, `full` (the
//! encoder body; embeddings frozen), `head` (only the QA head), `infer` (forward only, batch as
//! given). The QA head is trainable in every training method.

use std::path::PathBuf;
use std::time::Instant;

mod support;
use support::*;

use polyadapt::data::qa_windows::{batch_windows, build_windows, QaWindow, WindowConfig};
use polyadapt::data::squad::{read_squad, BadRecords};
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::optim::{AdamW, AdamWConfig};
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::fetch::{default_cache_dir, fetch_model};
use polyadapt::models::heads::QaHead;
use polyadapt::models::peft::{Adaptation, MethodsConfig};

// As engine-train: see `engine::memory`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    model: String,
    method: String,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    threads: usize,
    virtual_tokens: usize,
    dropout: bool,
    bf16: bool,
    data: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: "me5".into(),
        method: "lora".into(),
        batch: 8,
        seq: 256,
        warmup: 3,
        steps: 10,
        threads: 2,
        virtual_tokens: 20,
        dropout: true,
        bf16: false,
        data: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/xquad/xquad.en.json"),
    };
    if let Some(p) = std::env::var_os("XQUAD") {
        a.data = p.into();
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        let mut number = |name: &str| value(name).parse::<usize>().unwrap_or_else(|e| panic!("{name}: {e}"));
        match flag.as_str() {
            "--model" => a.model = value("--model"),
            "--method" => a.method = value("--method"),
            "--batch" => a.batch = number("--batch"),
            "--seq" => a.seq = number("--seq"),
            "--warmup" => a.warmup = number("--warmup"),
            "--steps" => a.steps = number("--steps"),
            "--threads" => a.threads = number("--threads"),
            "--virtual-tokens" => a.virtual_tokens = number("--virtual-tokens"),
            "--data" => a.data = value("--data").into(),
            "--no-dropout" => a.dropout = false,
            "--bf16" => a.bf16 = true,
            // `cargo bench` passes --bench; listing asks for names.
            "--bench" => {}
            "--list" => {
                println!("train_step: bench");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The methods of the baseline's configurations.
fn methods(method: &str, vt: usize) -> MethodsConfig {
    let lora = "[lora]\nr = 8\nalpha = 16\ntargets = [\"q\", \"v\"]\n";
    let prefix = format!("[prefix]\nvirtual_tokens = {vt}\npeft_positions = true\n");
    let text = match method {
        "lora" => lora.to_string(),
        "prefix" => prefix,
        "prompt" => format!("[prompt]\nvirtual_tokens = {vt}\n"),
        "lora_prefix" => format!("{lora}\n{prefix}"),
        "full" => "[fine_tune]\nfreeze_lowest = 0\n".to_string(),
        "head" | "infer" => String::new(),
        m => panic!("unknown method {m}"),
    };
    toml::from_str(&text).unwrap_or_else(|e| panic!("methods of {method}: {e}"))
}

fn main() {
    polyadapt::engine::memory::configure();
    let a = parse_args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads).build_global().expect("thread pool");
    let name = match a.model.as_str() {
        "me5" => "multilingual-e5-small",
        "minilm" => "all-minilm-l6-v2",
        m => panic!("unknown model {m} (me5, minilm)"),
    };
    let dir = fetch_model(name, &default_cache_dir()).expect("fetch model");
    let (rss_start, _) = rss_mib();
    let (dtype, precision) = if a.bf16 { (DType::BF16, Precision::Bf16) } else { (DType::F32, Precision::F32) };
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions { dtype, precision }).expect("load model");
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config.pad_token_id)).expect("tokenizer");
    let seed = 0;
    let hooks = Adaptation::build(&mut store, &model.config, &methods(&a.method, a.virtual_tokens), seed, Some(&tok)).expect("methods");
    let head = QaHead::new(&mut store, model.config.hidden_size, seed).expect("head");
    let (rss_model, _) = rss_mib();

    // The first `batch * (warmup + steps)` questions, one window each.
    let n_steps = a.warmup + a.steps;
    let set = read_squad(&a.data, BadRecords::Error).expect("XQuAD");
    let examples: Vec<_> = set.examples.into_iter().take(a.batch * n_steps).collect();
    assert_eq!(examples.len(), a.batch * n_steps, "{} has too few questions", a.data.display());
    let windows = build_windows(&tok, &examples, &WindowConfig { max_len: a.seq, stride: a.seq / 2 }).expect("windows");
    let mut first: Vec<QaWindow> = Vec::new();
    for w in windows {
        if first.last().is_none_or(|l| l.example != w.example) {
            first.push(w);
        }
    }
    // Tokenised: as `engine-train` does after setup, drop the tokenizer and give its memory back.
    let pad_id = tok.pad_id();
    drop(tok);
    polyadapt::engine::memory::release_free_memory();
    let real_tokens: usize = first.iter().map(|w| w.len()).sum();
    let inside = first.iter().filter(|w| w.has_answer()).count();

    let (rss_before_steps, _) = rss_mib();
    let mut optim = AdamW::new(AdamWConfig { lr: 1e-4, ..AdamWConfig::default() }).expect("AdamW");
    let mut batch_tokens = Vec::new();
    // Activations the tape keeps for backward, and the resident memory, at the end of each forward.
    let mut saved_mib = Vec::new();
    let mut rss_forward = Vec::new();
    let mut rss_forward_file: f64 = 0.0;
    let (mut fwd, mut bwd, mut opt, mut step_t, mut losses) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, chunk) in first.chunks(a.batch).enumerate() {
        let refs: Vec<&QaWindow> = chunk.iter().collect();
        let batch = batch_windows(&refs, pad_id).expect("batch");
        let opts = ForwardOptions { training: a.dropout && a.method != "infer", dropout_seed: i as u64, layers: vec![model.num_layers()] };
        let t0 = Instant::now();
        // t1: forward done; tb: backward starts (the memory readings between are not timed).
        let (t1, tb, t2);
        if a.method == "infer" {
            let mut tape = Tape::no_grad();
            let out = model.forward(&mut tape, &store, &batch, &hooks, &opts).expect("forward");
            std::hint::black_box(out.hidden[0].1.value().f32s()[0]);
            t1 = Instant::now();
            tb = t1;
            t2 = t1;
        } else {
            store.zero_grad();
            let mut tape = Tape::new();
            let out = model.forward(&mut tape, &store, &batch, &hooks, &opts).expect("forward");
            let tokens = out.real_tokens(&mut tape, &out.hidden[0].1).expect("tokens");
            let logits = head.logits(&mut tape, &store, &tokens).expect("logits");
            let targets: Vec<Option<(usize, usize)>> = chunk.iter().map(|w| Some((w.start, w.end))).collect();
            let loss = head.loss(&mut tape, &logits, &out.packing.offsets, &targets).expect("loss");
            losses.push(loss.value().f32s()[0]);
            t1 = Instant::now();
            saved_mib.push(tape.stats().saved_activation_bytes as f64 / (1 << 20) as f64);
            rss_forward.push(rss_mib().0);
            rss_forward_file = rss_forward_file.max(status_mib("RssFile:"));
            tb = Instant::now();
            tape.backward(&loss, &mut store).expect("backward");
            t2 = Instant::now();
            optim.step(&mut store, 1e-4).expect("AdamW step");
        }
        let t3 = Instant::now();
        if i >= a.warmup {
            batch_tokens.push(chunk.iter().map(|w| w.len()).sum::<usize>());
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - tb).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
            step_t.push(((t1 - t0) + (t3 - tb)).as_secs_f64());
        }
    }
    let med = median(&step_t);
    let (_, peak) = rss_mib();
    let json = serde_json::json!({
        "tag": format!("{}/{}{}{}", a.model, a.method, if a.dropout { "" } else { "+nodrop" }, if a.bf16 { "+bf16" } else { "" }),
        "engine": "polyadapt",
        "model": a.model, "method": a.method, "batch": a.batch, "seq": a.seq, "warmup": a.warmup, "steps": a.steps,
        "threads": a.threads, "dtype": if a.bf16 { "bf16 weights, bf16 products" } else { "float32" },
        "dropout": if a.dropout { 0.1 } else { 0.0 },
        "answers_inside_window": format!("{inside}/{}", first.len()),
        "real_tokens_per_batch": real_tokens as f64 / n_steps as f64,
        "params_trainable": store.trainable_numel(),
        "rss_start_mb": rss_start, "rss_after_model_mb": rss_model, "rss_before_steps_mb": rss_before_steps,
        "step_s_median": med,
        "step_s_min": step_t.iter().cloned().fold(f64::INFINITY, f64::min),
        "step_s_max": step_t.iter().cloned().fold(0.0, f64::max),
        "step_s_all": step_t,
        "batch_tokens": batch_tokens,
        "saved_activations_mib_max": saved_mib.iter().cloned().fold(0.0, f64::max),
        "rss_after_forward_mb_max": rss_forward.iter().cloned().fold(0.0, f64::max),
        "rss_file_backed_after_forward_mb_max": rss_forward_file,
        "fwd_s_all": fwd,
        "fwd_s_median": median(&fwd), "bwd_s_median": median(&bwd), "opt_s_median": median(&opt),
        "examples_per_s": a.batch as f64 / med,
        "losses": losses,
        "peak_rss_mb": peak,
    });
    println!("{json}");
}
