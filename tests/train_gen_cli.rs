//! `engine-train train` with a decoder and gen tasks (instruction tuning) end to end, on a tiny
//! random LLaMA that reads SmolLM2's tokenizer and chat template (tests/llama_support/
//! tiny_decoder.rs) and on SmolLM2-135M itself, with the Romanian->English task of
//! Super-NaturalInstructions: every method trains and writes a run directory whose adapter
//! loads as peft's `CAUSAL_LM` format; each prompt format; a run killed with SIGKILL resumes to
//! the same adapter byte for byte (and the same losses whatever the thread count); multi-task
//! weights; evaluation never on training instances; configuration mistakes named.

mod common;
#[path = "llama_support/tiny_decoder.rs"]
mod tiny_decoder;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use polyadapt::data::niv2::read_task;
use polyadapt::data::squad::BadRecords;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::llama::LlamaModel;
use polyadapt::models::peft;
use tiny_decoder::*;

const TASK: &str = "task1435_ro_sts_parallel_language_translation_ro_to_en.json";
const BOOL_TASK: &str = "task1732_bbh_boolean_expressions.json";

/// A Super-NaturalInstructions task file of the shared data (tests skip without it).
fn niv2(task: &str) -> PathBuf {
    shared_data().expect("checked by the test").join("niv2/tasks").join(task)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-gen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny decoder with SmolLM2's chat template, written once per test process.
fn tiny() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = temp_dir("tiny-decoder");
        write_tiny_decoder(&d, true);
        d
    })
}

/// A gen run: `max_train` 40 of the task (50 instances used: 40 train, 10 test), 8 sampled
/// for training, the test part evaluated.
fn config(model: &Path, methods: &str, gen: &str, steps: usize, checkpoint_every: usize) -> String {
    format!(
        r#"
[model]
name = "{model}"

[run]
seed = 11
steps = {steps}
batch_size = 4
max_seq_len = 160
log_every = 1
checkpoint_every = {checkpoint_every}

[optim]
lr = 1e-2
warmup_steps = 1

{methods}

[[tasks]]
name = "ro-en"
kind = "gen"
train = {{ path = "{task}", sample = 8 }}
eval = [{{ name = "test", path = "{task}", lang = "ro-en" }}]

[tasks.gen]
max_train = 40
max_new_tokens = 6
metrics = ["bleu", "rouge_l"]
{gen}
"#,
        model = model.display(),
        task = niv2(TASK).display(),
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("train").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn run_dir_of(tag: &str, text: &str, extra: &[&str]) -> (PathBuf, String) {
    let dir = temp_dir(tag);
    let cfg = write_config(&dir, text);
    let run = dir.join("run");
    let mut args = vec!["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()];
    args.extend(extra);
    let (ok, stdout, err) = train(&args);
    assert!(ok, "{tag}: {err}");
    (run, stdout)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn losses(run: &Path) -> Vec<(u64, serde_json::Value)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["loss"].as_f64().unwrap().to_bits(), v["losses"].clone())
        })
        .collect()
}

const LORA_ALL: &str = "[methods.lora]\nr = 4\nalpha = 8\ntargets = [\"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"]\n";

#[test]
fn each_method_and_format_trains_a_decoder_and_writes_a_run_directory() {
    if shared_data().is_none() {
        return;
    }
    let cases = [
        ("lora", LORA_ALL, "format = \"zero_shot\""),
        ("prefix", "[methods.prefix]\nvirtual_tokens = 4\nprojection = 16\n", "format = \"few_shot\"\nshots = 2"),
        ("prompt", "[methods.prompt]\nvirtual_tokens = 3\ninit = { text = \"Translate to English:\" }\n", "format = \"chat\""),
        ("adapter", "[methods.adapter]\nsize = 8\n", "format = \"chat\"\nshots = 1"),
        ("full", "[methods.fine_tune]\nfreeze_lowest = 1\n", "format = \"zero_shot\""),
        ("lora_prompt", "[methods.lora]\nr = 2\nalpha = 4\n\n[methods.prompt]\nvirtual_tokens = 2\n", "format = \"chat\""),
    ];
    for (name, methods, gen) in cases {
        let (run, stdout) = run_dir_of(name, &config(tiny(), methods, gen, 2, 0), &[]);
        assert!(stdout.contains("[final] ro-en / test (ro-en): bleu"), "{name}: {stdout}");
        let l = losses(&run);
        assert_eq!(l.len(), 2, "{name}: one metrics line per step");
        assert!(l.iter().all(|(b, _)| f64::from_bits(*b).is_finite() && f64::from_bits(*b) > 0.0), "{name}");
        for f in ["config.toml", "results.json", "loss.png", "checkpoints/step-2/state.safetensors"] {
            assert!(run.join(f).exists(), "{name}: {f} missing");
        }
        let results = json(&run.join("results.json"));
        let eval = &results["eval"][0];
        assert_eq!(eval["count"], 10, "{name}: the 10 test instances of the split");
        for m in ["bleu", "rouge_l"] {
            let v = eval["metrics"][m].as_f64().unwrap_or_else(|| panic!("{name}: {m} missing: {results}"));
            assert!((0.0..=100.0).contains(&v), "{name}: {m} {v}");
        }
        assert!(eval["samples"][0]["prediction"].is_string(), "{name}: {results}");
        // Every generation, by instance id, for re-scoring; the samples are among them.
        let predictions = json(&run.join("predictions/ro-en.test.json"));
        assert_eq!(predictions.as_object().unwrap().len(), 10, "{name}");
        for sample in eval["samples"].as_array().unwrap() {
            assert_eq!(predictions[sample["id"].as_str().unwrap()], sample["prediction"], "{name}");
        }
        let adapter = run.join("adapter");
        let (model, mut store) = {
            let mut s = ParamStore::new();
            (LlamaModel::load(tiny(), &mut s, LoadOptions::default()).unwrap(), s)
        };
        match name {
            "full" => {
                let t = polyadapt::models::weights::Weights::open_file(&adapter.join("trained.safetensors")).unwrap();
                let mut names: Vec<&str> = t.names().collect();
                names.sort();
                assert_eq!(names.len(), 10, "{name}: layer 1's nine tensors and the final norm: {names:?}");
                assert!(names.iter().all(|n| n.starts_with("model.layers.1.") || *n == "model.norm.weight"), "{names:?}");
            }
            _ => {
                let loaded = peft::load(&adapter, &mut store, &model.config, false).unwrap_or_else(|e| panic!("{name}: {}", e.chain()));
                assert_eq!(loaded.adaptation.methods().join("_"), name, "{name}");
                let first = peft::format::adapter_folders(&adapter).unwrap()[0].join("adapter_config.json");
                assert_eq!(json(&first)["task_type"], "CAUSAL_LM", "{name}");
            }
        }
    }
}

#[test]
fn a_killed_decoder_run_resumes_to_the_same_adapter_whatever_the_threads() {
    if shared_data().is_none() {
        return;
    }
    let methods = format!("{LORA_ALL}\n[methods.prompt]\nvirtual_tokens = 2\n");
    let text = config(tiny(), &methods, "format = \"few_shot\"\nshots = 1", 8, 2);
    let bytes = |run: &Path| -> Vec<Vec<u8>> {
        ["lora", "prompt"].iter().flat_map(|m| ["adapter_config.json", "adapter_model.safetensors"].map(|f| std::fs::read(run.join("adapter").join(m).join(f)).unwrap())).collect()
    };
    let (straight, _) = run_dir_of("straight", &text, &["--set", "run.threads=1"]);
    let reference = (losses(&straight), bytes(&straight), json(&straight.join("results.json"))["eval"].clone());
    let dir = temp_dir("killed");
    let cfg = write_config(&dir, &text);
    let run = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine-train"))
        .args(["train", "--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", "run.threads=2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while !run.join("checkpoints/step-4").exists() {
        assert!(began.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, _, err) = train(&["--resume", run.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(losses(&run), reference.0, "losses");
    assert!(bytes(&run) == reference.1, "the adapter differs from the uninterrupted run's");
    assert_eq!(json(&run.join("results.json"))["eval"], reference.2, "the same generations and scores");
}

#[test]
fn multi_task_losses_are_weighted_and_evaluation_skips_training_instances() {
    if shared_data().is_none() {
        return;
    }
    let jsonl = temp_dir("jsonl").join("bool.jsonl");
    let task = read_task(&niv2(BOOL_TASK), BadRecords::Error).unwrap();
    let lines: Vec<String> = task.instances[..30]
        .iter()
        .map(|x| serde_json::json!({ "id": x.id, "input": x.input, "output": x.outputs, "definition": task.definition }).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let second = format!(
        "\n[[tasks]]\nname = \"bool\"\nkind = \"gen\"\nweight = 0.25\ntrain = {{ path = \"{p}\" }}\neval = [{{ name = \"held-out\", path = \"{p}\" }}]\n\n[tasks.gen]\nformat = \"few_shot\"\nshots = 2\nmax_new_tokens = 3\nmetrics = [\"rouge_l\", \"meteor\"]\n",
        p = jsonl.display()
    );
    let (run, _) = run_dir_of("multi", &(config(tiny(), LORA_ALL, "", 3, 0) + &second), &[]);
    for (bits, parts) in losses(&run) {
        let (a, b) = (parts["ro-en"].as_f64().unwrap(), parts["bool"].as_f64().unwrap());
        let total = f64::from_bits(bits);
        assert!((total - (a + 0.25 * b)).abs() < 1e-5 * total, "loss {total} is not ro-en {a} + 0.25 x bool {b}");
    }
    let results = json(&run.join("results.json"));
    // ro-en: the test part of the seeded split (task1435 draws with split seed 0 and its name).
    let split = read_task(&niv2(TASK), BadRecords::Error).unwrap();
    let s = split.split(0.8, Some(40), 0).unwrap();
    let train_ids: Vec<&str> = s.train.iter().map(|&i| split.instances[i].id.as_str()).collect();
    let test_ids: Vec<&str> = s.test.iter().map(|&i| split.instances[i].id.as_str()).collect();
    let ro = &results["eval"][0];
    assert_eq!(ro["count"].as_u64().unwrap() as usize, test_ids.len());
    for sample in ro["samples"].as_array().unwrap() {
        let id = sample["id"].as_str().unwrap();
        assert!(test_ids.contains(&id) && !train_ids.contains(&id), "{id}");
    }
    // bool (JSON Lines, 30 records): 24 train, 6 test; the first 2 training records are the
    // demonstrations; nothing evaluated was trained on.
    let b = &results["eval"][1];
    assert_eq!((b["task"].as_str(), b["count"].as_u64()), (Some("bool"), Some(6)), "{results}");
    let jsplit = polyadapt::data::niv2::split_instances(30, 0.8, Some(400), 0).unwrap();
    let jtrain: Vec<String> = jsplit.train.iter().map(|&i| task.instances[i].id.clone()).collect();
    for sample in b["samples"].as_array().unwrap() {
        assert!(!jtrain.contains(&sample["id"].as_str().unwrap().to_string()), "{sample}");
    }
    assert!(b["metrics"]["meteor"].as_f64().is_some() && b["metrics"].get("bleu").is_none(), "{results}");
}

#[test]
fn configuration_mistakes_name_the_key_or_the_model() {
    if shared_data().is_none() {
        return;
    }
    let dir = temp_dir("badcfg");
    let good = config(tiny(), LORA_ALL, "format = \"zero_shot\"", 1, 0);
    let no_template = temp_dir("no-template");
    write_tiny_decoder(&no_template, false);
    let encoder = real_model("all-minilm-l6-v2");
    let cases: Vec<(String, &str)> = vec![
        (good.replace("format = \"zero_shot\"", "format = \"chatty\""), "tasks[0].gen.format"),
        (good.replace("format = \"zero_shot\"", "format = \"few_shot\""), "tasks[0].gen.shots"),
        (good.replace("format = \"zero_shot\"", "shots = 2"), "use few_shot"),
        (good.replace("max_train = 40", "max_train = 40\ntrain_fraction = 1.5"), "tasks[0].gen.train_fraction"),
        (good.replace("metrics = [\"bleu\", \"rouge_l\"]", "metrics = [\"bleu4\"]"), "tasks[0].gen.metrics"),
        (good.replace("max_train = 40", "max_train = 40\ncolour = 1"), "unknown field `colour`"),
        (good.replace("kind = \"gen\"", "kind = \"qa\""), "generation options given to a `qa` task"),
        (good.clone() + "\n[pseudo]\nratio = 0.4\nkinds = [\"perturb\"]\n", "pseudo-data is made for qa and pair tasks"),
        (good.replace("seed = 11", "seed = 11\nevaluate_only = true") + "\n[reg]\nweight = 0.1\n", "field `reg`: given in an evaluate_only run"),
        (good.replace("format = \"zero_shot\"", "format = \"few_shot\"\nshots = 9"), "9 demonstrations asked for"),
        (good.replace(&tiny().display().to_string(), &encoder.display().to_string()), "needs a decoder model"),
        (good.replace(&tiny().display().to_string(), &no_template.display().to_string()).replace("format = \"zero_shot\"", "format = \"chat\""), "has none"),
        (good.replace("max_seq_len = 160", "max_seq_len = 10"), "no training example fits"),
    ];
    // A task file with an instance that lacks its output: the file, the record and the field.
    let mut broken: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(niv2(TASK)).unwrap()).unwrap();
    broken["Instances"][3].as_object_mut().unwrap().remove("output");
    let broken_path = dir.join("broken_task.json");
    std::fs::write(&broken_path, broken.to_string()).unwrap();
    let cases: Vec<(String, &str)> = cases
        .into_iter()
        .chain([(good.replace(&niv2(TASK).display().to_string(), &broken_path.display().to_string()), "Instances[3]: field `output`: missing")])
        .collect();
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let cfg = write_config(&dir, &text);
        let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", dir.join(format!("run{i}")).to_str().unwrap()]);
        assert!(!ok, "case {i} should fail");
        assert!(err.contains(needle), "case {i}: `{needle}` missing from: {err}");
        if needle.starts_with("Instances[") {
            assert!(err.contains("broken_task.json"), "the file is named: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    // An encoder's task on a decoder.
    let qa = fixtures_dir().join("squad/qa_small.json");
    let text = format!("[model]\nname = \"{}\"\n\n[methods.prompt]\nvirtual_tokens = 2\n\n[[tasks]]\nname = \"qa\"\nkind = \"qa\"\ntrain = {{ path = \"{}\" }}\n", tiny().display(), qa.display());
    let cfg = write_config(&dir, &text);
    let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", dir.join("qa-on-decoder").to_str().unwrap()]);
    assert!(!ok && err.contains("needs an encoder model"), "{err}");
}

/// `run.evaluate_only`: the prompting baselines, on SmolLM2 (the tiny random decoder writes the
/// same token whatever it is given, which could not tell). Nothing trains (no step, no adapter,
/// no loss curve), the seed changes nothing, a LoRA as initialised (B = 0) generates what the
/// bare model generates, and two steps of training change the generations.
#[test]
fn an_evaluate_only_run_scores_the_untrained_model() {
    if shared_data().is_none() {
        return;
    }
    let base = |methods: &str| {
        config(Path::new("smollm2-135m-instruct"), methods, "format = \"chat\"", 2, 0)
            .replace("sample = 8", "sample = 4")
            .replace("batch_size = 4", "batch_size = 2")
            .replace("lang = \"ro-en\" }", "lang = \"ro-en\", sample = 3 }")
            .replace("max_new_tokens = 6", "max_new_tokens = 8")
    };
    let text = |methods: &str, seed: u64| base(methods).replace("seed = 11", &format!("seed = {seed}\nevaluate_only = true"));
    let lora = "[methods.lora]\nr = 4\nalpha = 8\ntargets = [\"q\", \"v\"]\n";
    let (bare, stdout) = run_dir_of("eval-only", &text("", 11), &[]);
    assert!(stdout.contains("[final] ro-en / test (ro-en): bleu"), "{stdout}");
    let results = json(&bare.join("results.json"));
    assert_eq!((results["steps"].as_u64(), results["trainable_params"].as_u64()), (Some(0), Some(0)), "{results}");
    assert!(!bare.join("adapter").exists() && !bare.join("loss.png").exists() && !bare.join("checkpoints").exists());
    let predictions = json(&bare.join("predictions/ro-en.test.json"));
    assert_eq!(predictions.as_object().unwrap().len(), 3);
    let (other_seed, _) = run_dir_of("eval-only-seed", &text("", 5), &[]);
    assert_eq!(json(&other_seed.join("predictions/ro-en.test.json")), predictions, "greedy decoding of an untrained model does not depend on the seed");
    let (with_lora, _) = run_dir_of("eval-only-lora", &text(lora, 11), &[]);
    assert_eq!(json(&with_lora.join("predictions/ro-en.test.json")), predictions, "a LoRA with B = 0 changes nothing");
    let (trained, _) = run_dir_of("trained", &base(lora).replace("lr = 1e-2", "lr = 5e-2"), &[]);
    assert_ne!(json(&trained.join("predictions/ro-en.test.json")), predictions, "two steps of training changed no generation");
}

/// The instruction-tuning experiments' quick forms (experiments/niv2-*.toml, as the README
/// gives them) through the binary, on the tiny decoder (`--set model.name=...`), and the report
/// over each.
#[test]
fn the_niv2_experiment_quick_forms_run_and_report() {
    if shared_data().is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).current_dir(root).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let dir = temp_dir("niv2-quick");
    let model = format!("model.name={}", tiny().display());
    for (file, axis, points, columns) in [
        ("niv2-prompting", "prompting", &["chat", "few-shot", "instruction-tuned", "zero-shot"][..], "| prompting | seeds | e2e-nlg/test | web-nlg/test | mean |"),
        ("niv2-ro-en", "method", &["few-shot", "lora", "lora+prefix"][..], "| method | seeds | test |"),
        ("niv2-methods", "method", &["adapter", "full", "lora", "lora+prefix"][..], "| method | seeds | e2e-nlg/test | web-nlg/test | mean |"),
    ] {
        let out = dir.join(file);
        let (ok, _, err) = engine(&["sweep", "--config", &format!("experiments/{file}.toml"), "--quick", "--out", out.to_str().unwrap(), "--set", &model]);
        assert!(ok, "{file}: {err}");
        let (ok, md, err) = engine(&["report", out.to_str().unwrap(), "--by", axis]);
        assert!(ok, "{file}: {err}");
        for metric in ["## ROUGE-L", "## BLEU", "## METEOR"] {
            assert!(md.contains(metric), "{file}: {metric} missing: {md}");
        }
        assert!(md.contains(columns), "{file}: {md}");
        for p in points {
            assert!(md.contains(&format!("\n| {p} | 1 | ")), "{file}: row {p} missing: {md}");
            let results = json(&out.join(format!("{axis}={p}/seed=0/results.json")));
            let untrained = ["zero-shot", "few-shot", "chat"].contains(p);
            assert_eq!(results["steps"].as_u64(), Some(if untrained { 0 } else { 1 }), "{file} {p}: {results}");
        }
    }
    let cfg = std::fs::read_to_string(dir.join("niv2-ro-en/method=few-shot/seed=0/config.toml")).unwrap();
    assert!(cfg.contains("format = \"few_shot\"") && cfg.contains("shots = 3") && cfg.contains("task1435"), "{cfg}");
}

/// SmolLM2-135M-Instruct from its GGUF file: LoRA instruction tuning, the chat format, a few
/// steps, greedy evaluation with the adapter.
#[test]
fn smollm2_trains_with_lora_and_the_chat_template() {
    if shared_data().is_none() {
        return;
    }
    let text = config(Path::new("smollm2-135m-instruct"), "[methods.lora]\nr = 4\nalpha = 8\ntargets = [\"q\", \"v\"]\n", "format = \"chat\"", 2, 0)
        .replace("sample = 8", "sample = 4")
        .replace("batch_size = 4", "batch_size = 2")
        .replace("lang = \"ro-en\" }", "lang = \"ro-en\", sample = 2 }");
    let (run, stdout) = run_dir_of("smollm2", &text, &[]);
    assert!(stdout.contains("[final] ro-en / test (ro-en)"), "{stdout}");
    let results = json(&run.join("results.json"));
    assert_eq!(results["eval"][0]["count"], 2);
    let cfg = json(&run.join("adapter/adapter_config.json"));
    assert_eq!((cfg["task_type"].as_str(), cfg["peft_type"].as_str()), (Some("CAUSAL_LM"), Some("LORA")));
    assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    let t = polyadapt::models::weights::Weights::open_file(&run.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(t.names().any(|n| n == "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight"));
    let l = losses(&run);
    assert!(l.iter().all(|(b, _)| f64::from_bits(*b).is_finite()));
}
