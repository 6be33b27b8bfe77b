//! Greedy generation speed, measured as the baselines measure it
//! (`benches/generate_transformers.py`, `benches/generate_llamacpp.py`): the first `--batch`
//! prompts of `benches/prompts/generate.txt`, tokenised by the model's tokenizer, generated as one
//! batch with the KV cache for exactly `--new-tokens` tokens each (end-of-sequence tokens do not
//! stop a sequence, so every side does the same work). Warm-up runs, then timed runs; prints one
//! JSON line.
//!
//! ```text
//! cargo bench --bench generate -- [--model smollm2-135m-instruct] [--batch 1] [--new-tokens 64]
//!     [--warmup 1] [--runs 5] [--threads 2] [--dtype f32] [--prompts FILE]
//! ```
//!
//! Reported: `tokens_per_s` = batch x new tokens / the median time of a whole generation (prefill
//! included); `decode_tokens_per_s` = batch x (new tokens - 1) / (median whole time - median
//! time of a one-token generation), the incremental steps alone.

use std::path::PathBuf;
use std::time::Instant;

mod support;
use support::*;

use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::fetch::{default_cache_dir, fetch_model};
use polyadapt::models::hooks::NoHooks;
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::{load_tokenizer, LlamaModel, ModelPath};

// As engine-train: see `engine::memory`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    model: String,
    batch: usize,
    new_tokens: usize,
    warmup: usize,
    runs: usize,
    threads: usize,
    dtype: String,
    prompts: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: "smollm2-135m-instruct".into(),
        batch: 1,
        new_tokens: 64,
        warmup: 1,
        runs: 5,
        threads: 2,
        dtype: "f32".into(),
        prompts: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/prompts/generate.txt"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        let mut number = |name: &str| value(name).parse::<usize>().unwrap_or_else(|e| panic!("{name}: {e}"));
        match flag.as_str() {
            "--model" => a.model = value("--model"),
            "--batch" => a.batch = number("--batch"),
            "--new-tokens" => a.new_tokens = number("--new-tokens"),
            "--warmup" => a.warmup = number("--warmup"),
            "--runs" => a.runs = number("--runs"),
            "--threads" => a.threads = number("--threads"),
            "--dtype" => a.dtype = value("--dtype"),
            "--prompts" => a.prompts = value("--prompts").into(),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn main() {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads).build_global().expect("thread pool");
    let dir = if PathBuf::from(&a.model).exists() { PathBuf::from(&a.model) } else { fetch_model(&a.model, &default_cache_dir()).expect("fetch model") };
    let path = ModelPath::resolve(&dir).expect("model path");
    let dtype = DType::parse(&a.dtype).expect("--dtype: f32, bf16 or f16");
    let mut store = ParamStore::new();
    let load_start = Instant::now();
    let model = LlamaModel::load(path.path(), &mut store, LoadOptions { dtype, ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.chain()));
    let load_s = load_start.elapsed().as_secs_f64();
    let tok = load_tokenizer(&path, &model.config).expect("tokenizer");
    let lines: Vec<String> = std::fs::read_to_string(&a.prompts).expect("prompts file").lines().map(str::to_string).collect();
    assert!(a.batch <= lines.len(), "--batch {} but {} prompts", a.batch, lines.len());
    let prompts: Vec<Vec<u32>> = lines[..a.batch].iter().map(|l| tok.encode_ids(l, true).expect("encode")).collect();
    let run = |new: usize| -> f64 {
        let opts = GreedyOptions { max_new_tokens: new, stop_tokens: vec![] };
        let t = Instant::now();
        let out = generate_greedy(&model, &store, &NoHooks, &prompts, &opts).unwrap_or_else(|e| panic!("{}", e.chain()));
        let s = t.elapsed().as_secs_f64();
        assert!(out.iter().all(|o| o.len() == new));
        s
    };
    for _ in 0..a.warmup {
        run(a.new_tokens);
    }
    let mut whole = Vec::new();
    let mut first = Vec::new();
    for _ in 0..a.runs {
        whole.push(run(a.new_tokens));
        first.push(run(1));
    }
    let (t_whole, t_first) = (median(&whole), median(&first));
    let generated = (a.batch * a.new_tokens) as f64;
    let json = serde_json::json!({
        "engine": "polyadapt",
        "model": a.model,
        "dtype": a.dtype,
        "threads": a.threads,
        "batch": a.batch,
        "new_tokens": a.new_tokens,
        "prompt_tokens": prompts.iter().map(Vec::len).collect::<Vec<_>>(),
        "load_s": load_s,
        "whole_s": whole,
        "first_token_s": first,
        "tokens_per_s": generated / t_whole,
        "decode_tokens_per_s": (a.batch * (a.new_tokens - 1)) as f64 / (t_whole - t_first),
    });
    println!("{json}");
}
