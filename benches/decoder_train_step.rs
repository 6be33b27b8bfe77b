//! Instruction-tuning steps of SmolLM2-135M-Instruct on the CPU, one configuration per process,
//! measured as `benches/decoder_train_step.py` measures transformers + peft: warm-up steps, then
//! the median of timed steps (forward with the loss on target tokens, backward, AdamW), and the
//! peak resident memory of the process. Prints one JSON line.
//!
//! The batches are those of the experiments (`experiments/niv2-base.toml`): 8 examples of a
//! Super-NaturalInstructions task in the zero-shot format (definition, input, then the output
//! and the end-of-sequence token), at most 256 tokens. `--write-batches FILE` writes the token
//! ids and prompt lengths of every step and exits, so that the PyTorch side trains on exactly
//! the same tokens. The engine packs the real tokens; transformers pads each batch to its
//! longest sequence. Both report target tokens and all tokens per second.
//!
//! ```text
//! cargo bench --bench decoder_train_step -- --method lora [--batch 8] [--seq 256] [--warmup 3]
//!     [--steps 10] [--threads 2] [--task FILE] [--write-batches FILE]
//! ```
//! Methods: `lora` (r 8, alpha 16, on q, k, v, o, gate, up, down: the experiments' choice),
//! `lora_qv` (r 8, alpha 16, q and v), `prefix` (20 virtual tokens), `prompt` (20 virtual
//! tokens), `full` (every weight but the embeddings).

use std::path::PathBuf;
use std::time::Instant;

mod support;
use support::*;

use polyadapt::data::instruct::{InstructFormat, PromptFormat, PromptParts};
use polyadapt::data::niv2::read_task;
use polyadapt::data::squad::BadRecords;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::optim::{AdamW, AdamWConfig};
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::fetch::{default_cache_dir, fetch_model};
use polyadapt::models::llama::lm_loss::{masked_lm_loss, LmExample, LmSequence};
use polyadapt::models::llama::{load_tokenizer, DecoderOptions, LlamaModel, ModelPath};
use polyadapt::models::peft::{Adaptation, MethodsConfig};

// As engine-train: see `engine::memory`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    method: String,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    threads: usize,
    task: PathBuf,
    write_batches: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        method: "lora".into(),
        batch: 8,
        seq: 256,
        warmup: 3,
        steps: 10,
        threads: 2,
        task: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/niv2/tasks/task957_e2e_nlg_text_generation_generate.json"),
        write_batches: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        let mut number = |name: &str| value(name).parse::<usize>().unwrap_or_else(|e| panic!("{name}: {e}"));
        match flag.as_str() {
            "--method" => a.method = value("--method"),
            "--batch" => a.batch = number("--batch"),
            "--seq" => a.seq = number("--seq"),
            "--warmup" => a.warmup = number("--warmup"),
            "--steps" => a.steps = number("--steps"),
            "--threads" => a.threads = number("--threads"),
            "--task" => a.task = value("--task").into(),
            "--write-batches" => a.write_batches = Some(value("--write-batches").into()),
            // `cargo bench` passes --bench; listing asks for names.
            "--bench" => {}
            "--list" => {
                println!("decoder_train_step: bench");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The methods of the compared configurations (peft's equivalents in the Python script).
fn methods(method: &str) -> MethodsConfig {
    let text = match method {
        "lora" => "[lora]\nr = 8\nalpha = 16\ntargets = [\"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"]\n".to_string(),
        "lora_qv" => "[lora]\nr = 8\nalpha = 16\ntargets = [\"q\", \"v\"]\n".to_string(),
        "prefix" => "[prefix]\nvirtual_tokens = 20\n".to_string(),
        "prompt" => "[prompt]\nvirtual_tokens = 20\n".to_string(),
        "full" => "[fine_tune]\nfreeze_lowest = 0\n".to_string(),
        m => panic!("unknown method {m} (lora, lora_qv, prefix, prompt, full)"),
    };
    toml::from_str(&text).unwrap_or_else(|e| panic!("methods of {method}: {e}"))
}

fn main() {
    polyadapt::engine::memory::configure();
    let a = parse_args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads).build_global().expect("thread pool");
    let dir = fetch_model("smollm2-135m-instruct", &default_cache_dir()).expect("fetch model");
    let path = ModelPath::resolve(&dir).expect("model path");
    let mut store = ParamStore::new();
    let model = LlamaModel::load(path.path(), &mut store, LoadOptions::default()).expect("load model");
    let tok = load_tokenizer(&path, &model.config).expect("tokenizer");

    // The first batch * (warmup + steps) instances of the task, zero-shot prompts, cut to `seq`.
    let n_steps = a.warmup + a.steps;
    let task = read_task(&a.task, BadRecords::Error).expect("niv2 task");
    let format = InstructFormat::new(PromptFormat::ZeroShot, None).expect("format");
    let eos = model.config.eos_token_ids.first().copied();
    let idx: Vec<usize> = (0..(a.batch * n_steps).min(task.instances.len())).collect();
    assert_eq!(idx.len(), a.batch * n_steps, "{} has too few instances", a.task.display());
    let examples: Vec<LmExample> = task
        .examples(&idx)
        .iter()
        .map(|x| {
            let parts = PromptParts { definition: x.definition.as_deref(), demos: &[], input: &x.input };
            let mut e = format.encode(&tok, &parts, &x.outputs[0], eos).expect("encode");
            e.ids.truncate(a.seq);
            assert!(e.prompt_len < e.ids.len(), "an example's prompt fills all {} tokens", a.seq);
            e
        })
        .collect();
    if let Some(file) = &a.write_batches {
        let batches: Vec<serde_json::Value> = examples
            .chunks(a.batch)
            .map(|c| serde_json::json!(c.iter().map(|e| serde_json::json!({"ids": e.ids, "prompt_len": e.prompt_len})).collect::<Vec<_>>()))
            .collect();
        let doc = serde_json::json!({"task": a.task.display().to_string(), "batch": a.batch, "seq": a.seq, "batches": batches});
        std::fs::write(file, doc.to_string()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return;
    }
    drop(tok);
    polyadapt::engine::memory::release_free_memory();

    let hooks = Adaptation::build(&mut store, &model.config, &methods(&a.method), 0, None).expect("methods");
    let mut optim = AdamW::new(AdamWConfig { lr: 1e-4, ..AdamWConfig::default() }).expect("AdamW");
    let (mut step_t, mut fwd, mut bwd, mut losses, mut tokens, mut targets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, chunk) in examples.chunks(a.batch).enumerate() {
        let owned: Vec<(Vec<u32>, Vec<bool>)> = chunk.iter().map(|e| (e.labels(), e.counted())).collect();
        let seqs: Vec<LmSequence> = chunk.iter().zip(&owned).map(|(e, (l, c))| LmSequence { ids: &e.ids, labels: l, counted: c }).collect();
        let opts = DecoderOptions { training: true, dropout_seed: i as u64, ..Default::default() };
        let t0 = Instant::now();
        store.zero_grad();
        let mut tape = Tape::new();
        let (loss, _) = masked_lm_loss(&model, &mut tape, &store, &hooks, &seqs, &opts).expect("loss");
        let t1 = Instant::now();
        tape.backward(&loss, &mut store).expect("backward");
        let t2 = Instant::now();
        optim.step(&mut store, 1e-4).expect("AdamW step");
        let t3 = Instant::now();
        losses.push(loss.value().f32s()[0]);
        if i >= a.warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            step_t.push((t3 - t0).as_secs_f64());
            tokens.push(chunk.iter().map(|e| e.ids.len()).sum::<usize>());
            targets.push(chunk.iter().map(|e| e.target_len()).sum::<usize>());
        }
    }
    let med = median(&step_t);
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let json = serde_json::json!({
        "tag": format!("smollm2/{}", a.method),
        "engine": "polyadapt",
        "method": a.method, "batch": a.batch, "seq": a.seq, "warmup": a.warmup, "steps": a.steps, "threads": a.threads,
        "task": a.task.file_name().map(|f| f.to_string_lossy().to_string()),
        "dtype": "float32",
        "params_trainable": store.trainable_numel(),
        "tokens_per_batch": mean(&tokens),
        "target_tokens_per_batch": mean(&targets),
        "step_s_median": med,
        "step_s_all": step_t,
        "fwd_s_median": median(&fwd), "bwd_s_median": median(&bwd),
        "tokens_per_s": mean(&tokens) / med,
        "losses": losses,
        "peak_rss_mb": rss_mib().1,
    });
    println!("{json}");
}
