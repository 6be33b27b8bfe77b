//! `engine-train generate` on SmolLM2-135M-Instruct: flags that do not make sense (alone or
//! together) are refused with a message naming them, before the model loads; a prompts file is
//! generated in batches with the same text as one prompt at a time; beam search prints
//! transformers' hypothesis (fixture of tests/llama_generation.rs); stop strings cut the text;
//! seeded sampling does not depend on the batch size; `--output` writes JSON lines; `--adapter`
//! generates what the library generates with the adapter applied.

mod common;
mod peft_support;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::llama::generate::{generate as generate_lib, GenerateOptions};
use polyadapt::models::llama::LlamaModel;
use polyadapt::models::peft::{self, Adaptation, LoraConfig, MethodsConfig, PrefixConfig, SaveOptions};

fn generate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("generate").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-generate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> String {
    real_model("smollm2-135m-instruct").display().to_string()
}

#[test]
fn bad_flags_are_refused_with_their_names() {
    let d = dir("bad");
    let m = model();
    std::fs::write(d.join("blank.txt"), "The capital of France is\n\nA second prompt\n").unwrap();
    std::fs::write(d.join("empty.txt"), "").unwrap();
    let blank = d.join("blank.txt").display().to_string();
    let empty = d.join("empty.txt").display().to_string();
    let missing = d.join("missing.txt").display().to_string();
    let p = "Hello";
    let encoder_adapter = fixtures_dir().join("peft/from_peft/xlmr_prompt_qa").display().to_string();
    let tiny = fixtures_dir().join("tiny-llama").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", &m], "give --prompt TEXT or --prompts FILE"),
        (vec!["--model", &m, "--prompt", p, "--num-beams", "0"], "--num-beams must be at least 1"),
        (vec!["--model", &m, "--prompt", p, "--num-beams", "2", "--temperature", "0.7"], "beam search with sampling is not supported"),
        (vec!["--model", &m, "--prompt", p, "--num-beams", "3", "--top-k", "5"], "beam search with sampling is not supported"),
        (vec!["--model", &m, "--prompt", p, "--num-beams", "2", "--seed", "1"], "--seed applies to sampling"),
        (vec!["--model", &m, "--prompt", p, "--seed", "1"], "--seed applies to sampling"),
        (vec!["--model", &m, "--prompt", p, "--temperature", "0"], "--temperature must be a positive number"),
        (vec!["--model", &m, "--prompt", p, "--temperature", "-1"], "--temperature must be a positive number"),
        (vec!["--model", &m, "--prompt", p, "--temperature", "NaN"], "--temperature must be a positive number"),
        (vec!["--model", &m, "--prompt", p, "--top-p", "0"], "--top-p must be in (0, 1]"),
        (vec!["--model", &m, "--prompt", p, "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (vec!["--model", &m, "--prompt", p, "--top-p", "-0.5"], "--top-p must be in (0, 1]"),
        (vec!["--model", &m, "--prompt", p, "--top-k", "many"], "--top-k"),
        (vec!["--model", &m, "--prompt", p, "--batch-size", "0"], "--batch-size must be at least 1"),
        (vec!["--model", &m, "--prompt", p, "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (vec!["--model", &m, "--prompt", p, "--stop", ""], "--stop: an empty stop string"),
        (vec!["--model", &m, "--prompt", p, "--prompts", &blank], "cannot be used with"),
        (vec!["--model", &m, "--prompts", &blank], "blank.txt:2: empty prompt"),
        (vec!["--model", &m, "--prompts", &empty], "holds no prompts"),
        (vec!["--model", &m, "--prompts", &missing], "missing.txt"),
        (vec!["--model", &m, "--prompt", p, "--dtype", "f64"], "--dtype: `f64`"),
        (vec!["--model", "no-such-model", "--prompt", p], "--model: `no-such-model`"),
        (vec!["--model", &m, "--prompt", p, "--output", "/no/such/dir/out.jsonl"], "/no/such/dir/out.jsonl"),
        (vec!["--model", &m, "--prompt", p, "--adapter", "/no/such/adapter"], "--adapter: "),
        (vec!["--model", &m, "--prompt", p, "--adapter", &encoder_adapter], "field `task_type`"),
        (vec!["--model", &tiny, "--prompt", p, "--chat"], "--chat: the chat format needs the model's chat template, and the model has none"),
    ];
    for (args, want) in cases {
        let (ok, _, err) = generate(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err:?} does not say {want:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A prompt longer than the model's context.
    let long = "word ".repeat(9000);
    let (ok, _, err) = generate(&["--model", &m, "--prompt", &long, "--max-new-tokens", "1"]);
    assert!(!ok && err.contains("8192"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn batches_of_prompts_print_what_one_prompt_at_a_time_prints() {
    let d = dir("batch");
    let m = model();
    let prompts = ["The capital of France is", "Bucureşti este capitala României. Cel mai lung râu din ţară este", "def fib(n):", "Once upon a time, in a small village near the mountains, there lived"];
    std::fs::write(d.join("prompts.txt"), prompts.join("\n") + "\n").unwrap();
    let file = d.join("prompts.txt").display().to_string();
    let out = d.join("out.jsonl");
    let (ok, stdout, err) = generate(&["--model", &m, "--prompts", &file, "--max-new-tokens", "8", "--batch-size", "3", "--output", &out.display().to_string()]);
    assert!(ok, "{err}");
    let batched = jsonl(&out);
    assert_eq!(batched.len(), prompts.len());
    let mut shown = String::new();
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(batched[i]["prompt"], *p);
        assert_eq!(batched[i]["tokens"].as_array().unwrap().len(), 8);
        assert_eq!(batched[i]["finish"], "length");
        shown += &format!("[{i}] {p}\n{}\n", batched[i]["text"].as_str().unwrap());
        let one = d.join(format!("one{i}.jsonl"));
        let (ok, alone, err) = generate(&["--model", &m, "--prompt", p, "--max-new-tokens", "8", "--output", &one.display().to_string()]);
        assert!(ok, "{err}");
        assert_eq!(jsonl(&one), vec![batched[i].clone()], "prompt {i}");
        assert_eq!(alone, format!("{}\n", batched[i]["text"].as_str().unwrap()));
    }
    assert_eq!(stdout, shown);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn beams_stop_strings_and_seeded_sampling() {
    let m = model();
    let fx = read_safetensors(&fixtures_dir().join("smollm2/generation.safetensors"));
    let path = polyadapt::models::llama::ModelPath::resolve(&real_model("smollm2-135m-instruct")).unwrap();
    let (config, _) = polyadapt::models::llama::Source::open(&path).unwrap();
    let tok = polyadapt::models::llama::load_tokenizer(&path, &config).unwrap();
    let ids = |k: &str| fx[k].data.iter().map(|&v| v as u32).collect::<Vec<u32>>();

    // Beam search: transformers' best hypothesis for 4 beams, its end-of-sequence token not printed.
    let prompt = "The capital of France is";
    let want = ids("beam.prompt.0.beams.4.tokens");
    let (ok, stdout, err) = generate(&["--model", &m, "--prompt", prompt, "--max-new-tokens", "16", "--num-beams", "4", "--ids"]);
    assert!(ok, "{err}");
    let shown = if want.last() == Some(&2) { &want[..want.len() - 1] } else { &want[..] };
    assert!(stdout.starts_with(&format!("{}\n", tok.decode(shown, false).unwrap())), "{stdout}");
    assert!(stdout.contains(&format!("new ids: {want:?}")), "{stdout}");

    // A stop string (4 characters from the middle of the greedy text): the text is cut before
    // its first occurrence, and the sequence ended there.
    let d = dir("stop");
    let full_out = d.join("full.jsonl");
    let (ok, _, err) = generate(&["--model", &m, "--prompt", prompt, "--max-new-tokens", "12", "--output", &full_out.display().to_string()]);
    assert!(ok, "{err}");
    let full = jsonl(&full_out)[0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 4].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let stop_out = d.join("stop.jsonl");
    let (ok, stdout, err) =
        generate(&["--model", &m, "--prompt", prompt, "--max-new-tokens", "12", "--stop", "never-there", "--stop", &stop, "--output", &stop_out.display().to_string()]);
    assert!(ok, "{err}");
    let got = &jsonl(&stop_out)[0];
    assert_eq!(got["text"], cut, "stop {stop:?} in {full:?}");
    assert_eq!(got["finish"], "stop_string");
    assert_eq!(stdout, format!("{cut}\n"));
    let _ = std::fs::remove_dir_all(&d);

    // Seeded sampling: the same seed prints the same texts whatever the batch size; another
    // seed prints other texts.
    let sample = |seed: &str, batch: &str| {
        let (ok, stdout, err) = generate(&[
            "--model", &m, "--prompt", prompt, "--prompt", "Once upon a time", "--prompt", "My favourite food is", "--max-new-tokens", "10",
            "--temperature", "1.2", "--top-k", "100", "--top-p", "0.95", "--seed", seed, "--batch-size", batch,
        ]);
        assert!(ok, "{err}");
        stdout
    };
    let a = sample("3", "3");
    assert_eq!(a, sample("3", "1"));
    assert_ne!(a, sample("4", "3"));
}

/// `--adapter`: a LoRA + prefix adapter (random values) saved in peft's format changes the
/// generation, and the command prints the tokens the library generates with it applied.
#[test]
fn adapter_is_applied() {
    let d = dir("adapter");
    let m = model();
    let mut store = ParamStore::new();
    let model = LlamaModel::load(&real_model("smollm2-135m-instruct"), &mut store, LoadOptions::default()).unwrap();
    let lora = LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q".into(), "v".into(), "down".into()], layers: None, rslora: false };
    let prefix = PrefixConfig { virtual_tokens: 3, projection: None, layers: None, peft_positions: true };
    let methods = MethodsConfig { lora: Some(lora), prefix: Some(prefix), ..MethodsConfig::default() };
    let a = Adaptation::build(&mut store, &model.config, &methods, 7, None).unwrap();
    let lora_ids: Vec<_> = a.lora.iter().flat_map(|l| l.params()).collect();
    let prefix_ids: Vec<_> = a.prefix.iter().flat_map(|p| p.params()).collect();
    peft_support::randomize(&mut store, &lora_ids, 11, 0.05);
    peft_support::randomize(&mut store, &prefix_ids, 12, 1.0);
    let adapter = d.join("adapter");
    peft::save(&adapter, &a, &store, &model.config, &SaveOptions::causal_lm("smollm2-135m-instruct")).unwrap();

    let prompt = "The capital of France is";
    let ids = |stdout: &str| stdout.lines().find_map(|l| l.strip_prefix("new ids: ")).unwrap().to_string();
    let (ok, plain, err) = generate(&["--model", &m, "--prompt", prompt, "--max-new-tokens", "10", "--ids"]);
    assert!(ok, "{err}");
    let (ok, adapted, err) = generate(&["--model", &m, "--adapter", &adapter.display().to_string(), "--prompt", prompt, "--max-new-tokens", "10", "--ids"]);
    assert!(ok, "{err}");
    assert_ne!(ids(&plain), ids(&adapted), "the adapter does not change the generation");

    let prompt_ids: Vec<u32> = adapted.lines().find_map(|l| l.strip_prefix("prompt ids: ")).map(|s| serde_json::from_str(s).unwrap()).unwrap();
    let want = generate_lib(&model, &store, &a, &[prompt_ids], &GenerateOptions::for_model(&model, 10), None).unwrap();
    let finish = if want[0].tokens.len() < 10 { "stop token" } else { "length" };
    assert_eq!(ids(&adapted), format!("{:?} ({finish})", want[0].tokens));
    let _ = std::fs::remove_dir_all(&d);
}
