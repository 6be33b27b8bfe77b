//! Pseudo-data through `engine-train train` on the real MiniLM: every kind trains for a few
//! steps on QA and on sentence pairs and reports what it made and kept; ratio 0 is the run
//! without `[pseudo]` bit for bit; the self-training threshold decides what is kept (1.01:
//! nothing, and then the run is again the plain one; 0: everything up to the quota); a run
//! resumed after the labelling step reads the kept examples and ends as the straight run;
//! configuration mistakes name the key.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures_dir, real_model};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-pseudo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(rel: &str) -> String {
    fixtures_dir().join(rel).display().to_string()
}

/// QA on MiniLM: 10 of the 18 fixture questions for training, the other 8 for evaluation.
fn qa_config(steps: usize, pseudo: &str) -> String {
    format!(
        r#"
[model]
name = "{model}"

[run]
seed = 7
steps = {steps}
batch_size = 4
max_seq_len = 96
doc_stride = 32
checkpoint_every = 2
keep_checkpoints = 5

[optim]
lr = 5e-3

[methods.lora]
r = 4
alpha = 8
targets = ["q", "v"]

[[tasks]]
name = "qa"
kind = "qa"
train = {{ path = "{data}", sample = 10 }}
eval = [{{ name = "small", path = "{data}" }}]

{pseudo}
"#,
        model = real_model("all-minilm-l6-v2").display(),
        data = fixture("squad/qa_small.json"),
    )
}

/// Every kind configured (`kinds` chooses); the German fixture is parallel to the Amazon
/// questions of the QA fixture.
fn qa_pseudo(ratio: f64, kinds: &str, threshold: f64, text: &str) -> String {
    format!(
        r#"
[pseudo]
ratio = {ratio}
kinds = {kinds}

[pseudo.self_training]
unlabelled = {{ path = "{de}", lang = "de" }}
threshold = {threshold}
after_steps = 2

[pseudo.perturb]
drop_prob = 0.2
swap_prob = 0.2

[pseudo.code_switch]
target = "{de}"
prob = 0.5
layer = 4
text = "{text}"
"#,
        de = fixture("pseudo/qa_de.json")
    )
}

fn train(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("train").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Trains `text` as `dir/<tag>.toml` into `dir/<tag>`; panics with stderr on failure.
fn run(dir: &Path, tag: &str, text: &str) -> PathBuf {
    let cfg = dir.join(format!("{tag}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join(tag);
    let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{tag}: {err}");
    out
}

fn losses(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap().to_bits())
        .collect()
}

fn adapter(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

/// `results.json`'s report of `kind`.
fn report(run: &Path, kind: &str) -> serde_json::Value {
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    r["pseudo"].as_array().unwrap_or_else(|| panic!("no pseudo report: {r}")).iter().find(|k| k["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {r}")).clone()
}

fn counts(r: &serde_json::Value) -> (u64, u64, u64) {
    (r["quota"].as_u64().unwrap(), r["made"].as_u64().unwrap(), r["kept"].as_u64().unwrap())
}

#[test]
fn ratio_zero_and_a_threshold_that_keeps_nothing_are_the_plain_run_bit_for_bit() {
    let dir = temp_dir("zero");
    let all = r#"["self_training", "perturb", "code_switch"]"#;
    let plain = run(&dir, "plain", &qa_config(4, ""));
    let zero = run(&dir, "zero", &qa_config(4, &qa_pseudo(0.0, all, 0.0, "question")));
    assert_eq!(losses(&plain), losses(&zero));
    assert!(adapter(&plain) == adapter(&zero), "ratio 0 changed the adapter");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(zero.join("results.json")).unwrap()).unwrap();
    assert!(r["pseudo"].is_null(), "{r}");
    // Self-training that keeps nothing leaves the data and its order as they were.
    let none = run(&dir, "none", &qa_config(4, &qa_pseudo(0.4, r#"["self_training"]"#, 1.01, "question")));
    assert_eq!(counts(&report(&none, "self_training")), (4, 4, 0), "the 4 German questions labelled, none kept");
    assert_eq!(report(&none, "self_training")["details"]["above_threshold"], 0);
    assert_eq!(losses(&plain), losses(&none));
    // ... and one that keeps some does change the run (so the comparisons above can fail).
    let some = run(&dir, "some", &qa_config(4, &qa_pseudo(0.4, r#"["self_training"]"#, 0.0, "question")));
    assert_eq!(counts(&report(&some, "self_training")), (4, 4, 4));
    assert_eq!(losses(&plain)[..2], losses(&some)[..2], "the first two steps come before the labelling");
    assert_ne!(losses(&plain)[2..], losses(&some)[2..]);
}

#[test]
fn every_kind_trains_on_qa_and_reports_what_it_made() {
    let dir = temp_dir("qa");
    for (tag, kinds, text) in [
        ("perturb", r#"["perturb"]"#, "question"),
        ("switch_question", r#"["code_switch"]"#, "question"),
        ("switch_context", r#"["code_switch"]"#, "context"),
        ("self_training", r#"["self_training"]"#, "question"),
    ] {
        let out = run(&dir, tag, &qa_config(4, &qa_pseudo(0.4, kinds, 0.0, text)));
        assert_eq!(losses(&out).len(), 4, "{tag}");
        let kind = kinds.trim_matches(|c| "[]\"".contains(c));
        let r = report(&out, kind);
        // 10 real questions at ratio 0.4: 4 pseudo examples.
        assert_eq!(counts(&r), (4, 4, 4), "{tag}: {r}");
        match kind {
            "perturb" => assert!(r["details"]["words_dropped"].as_u64().unwrap() > 0, "{r}"),
            "code_switch" => {
                // Only the Amazon questions have German twins.
                let c = r["details"]["candidates"].as_u64().unwrap();
                assert!((1..=4).contains(&c) && r["details"]["no_parallel"].as_u64().unwrap() == 10 - c, "{r}");
                assert!(r["details"]["words_switched"].as_u64().unwrap() > 0, "{r}");
            }
            _ => {
                let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("pseudo/self_training.json")).unwrap()).unwrap();
                let qa = saved["qa"].as_array().unwrap();
                assert_eq!(qa.len(), 4);
                for q in qa {
                    // The answer is the predicted span, cut from the (German) context.
                    let ctx: Vec<char> = q["context"].as_str().unwrap().chars().collect();
                    let (s, a) = (q["answer_start"].as_u64().unwrap() as usize, q["answer"].as_str().unwrap());
                    assert_eq!(ctx[s..s + a.chars().count()].iter().collect::<String>(), a);
                    let c = q["confidence"].as_f64().unwrap();
                    assert!(c > 0.0 && c <= 1.0, "{q}");
                }
            }
        }
    }
}

/// Sentence pairs: 8 of the 16 English fixture pairs for training, the other 8 for
/// evaluation; all three kinds at once.
#[test]
fn all_kinds_at_once_train_on_sentence_pairs() {
    let dir = temp_dir("pairs");
    let text = format!(
        r#"
[model]
name = "{model}"

[run]
seed = 3
steps = 4
batch_size = 4
max_seq_len = 64
checkpoint_every = 0

[methods.prompt]
virtual_tokens = 4

[[tasks]]
name = "paws"
kind = "pair"
labels = ["0", "1"]
train = {{ path = "{en}", sample = 8 }}
eval = [{{ name = "rest", path = "{en}" }}]

[pseudo]
ratio = 0.75
kinds = ["perturb", "code_switch", "self_training"]
task = "paws"

[pseudo.self_training]
unlabelled = {{ path = "{de}" }}
threshold = 0.0
after_steps = 1

[pseudo.code_switch]
target = "{de}"
"#,
        model = real_model("all-minilm-l6-v2").display(),
        en = fixture("pseudo/pairs_en.tsv"),
        de = fixture("pseudo/pairs_de.tsv"),
    );
    let out = run(&dir, "all", &text);
    // 8 real pairs at 0.75: 6, two per kind.
    assert_eq!(counts(&report(&out, "perturb")), (2, 2, 2));
    let cs = report(&out, "code_switch");
    assert_eq!(counts(&cs), (2, 2, 2));
    assert_eq!(cs["details"]["candidates"], 8, "every training line has its German twin");
    let st = report(&out, "self_training");
    assert_eq!(counts(&st), (2, 16, 2), "all 16 German pairs labelled, the 2 most confident kept");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("pseudo/self_training.json")).unwrap()).unwrap();
    assert!(saved["pairs"].as_array().unwrap().iter().all(|p| p["label"].as_u64().unwrap() < 2));
}

#[test]
fn a_run_resumed_after_the_labelling_step_reads_what_was_kept() {
    let dir = temp_dir("resume");
    let text = qa_config(6, &qa_pseudo(0.4, r#"["self_training", "perturb"]"#, 0.0, "question"));
    let straight = run(&dir, "straight", &text);
    // The same run killed after its step-4 checkpoint: past the labelling (after 2 steps).
    let killed = dir.join("killed");
    let cp = Command::new("cp").args(["-r", straight.to_str().unwrap(), killed.to_str().unwrap()]).status().unwrap();
    assert!(cp.success());
    std::fs::remove_dir_all(killed.join("checkpoints/step-6")).unwrap();
    std::fs::remove_dir_all(killed.join("adapter")).unwrap();
    std::fs::remove_file(killed.join("results.json")).unwrap();
    let broken = dir.join("broken");
    assert!(Command::new("cp").args(["-r", killed.to_str().unwrap(), broken.to_str().unwrap()]).status().unwrap().success());
    let (ok, _, err) = train(&["--resume", killed.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(losses(&killed), losses(&straight));
    assert!(adapter(&killed) == adapter(&straight), "the resumed run's adapter differs");
    assert_eq!(report(&killed, "self_training"), report(&straight, "self_training"));
    // Without the saved examples a resume past the labelling cannot go on: it says why.
    std::fs::remove_file(broken.join("pseudo/self_training.json")).unwrap();
    let (ok, _, err) = train(&["--resume", broken.to_str().unwrap()]);
    assert!(!ok && err.contains("self_training.json") && !err.contains("panicked"), "{err}");
}

#[test]
fn pseudo_configuration_mistakes_name_the_key() {
    let dir = temp_dir("badcfg");
    let good = qa_config(4, &qa_pseudo(0.4, r#"["perturb"]"#, 0.5, "question"));
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (good.clone(), vec!["--set", r#"pseudo.kinds=["magic"]"#], "pseudo.kinds"),
        (good.clone(), vec!["--set", "pseudo.kinds=[]"], "pseudo.kinds"),
        (good.clone(), vec!["--set", "pseudo.ratio=-0.5"], "pseudo.ratio"),
        (good.clone(), vec!["--set", "pseudo.perturb.drop_prob=1.5"], "pseudo.perturb.drop_prob"),
        (good.clone(), vec!["--set", "pseudo.perturb.max_span=0"], "pseudo.perturb.max_span"),
        (good.clone(), vec!["--set", "pseudo.task=nope"], "pseudo.task"),
        (good.clone(), vec!["--set", "pseudo.code_switch.text=title"], "pseudo.code_switch.text"),
        (good.replace("threshold = 0.5", "threshold = 0.5\nmystery = 1"), vec![], "unknown field `mystery`"),
        (qa_config(4, "[pseudo]\nratio = 0.4\nkinds = [\"code_switch\"]\n"), vec![], "pseudo.code_switch"),
        (qa_config(4, "[pseudo]\nratio = 0.4\nkinds = [\"self_training\"]\n"), vec![], "pseudo.self_training"),
        (qa_config(4, "[pseudo]\nratio = 0.4\nkinds = [\"perturb\", \"perturb\"]\n"), vec![], "pseudo.kinds"),
    ];
    for (i, (text, extra, needle)) in cases.into_iter().enumerate() {
        let cfg = dir.join("run.toml");
        std::fs::write(&cfg, &text).unwrap();
        let out = dir.join(format!("run{i}"));
        let mut args = vec!["--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let (ok, _, err) = train(&args);
        assert!(!ok, "case {i} should fail");
        assert!(err.contains(needle) && err.contains("run.toml"), "case {i}: `{needle}` missing from: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Checked at setup, where the model and the run length are known.
    for (i, (set, needle)) in [("pseudo.self_training.after_steps=4", "pseudo.self_training.after_steps"), ("pseudo.code_switch.layer=7", "pseudo.code_switch.layer")].into_iter().enumerate() {
        let cfg = dir.join("run.toml");
        std::fs::write(&cfg, &good).unwrap();
        let out = dir.join(format!("setup{i}"));
        let kinds = if i == 0 { r#"pseudo.kinds=["self_training"]"# } else { r#"pseudo.kinds=["code_switch"]"# };
        let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--set", set, "--set", kinds]);
        assert!(!ok && err.contains(needle) && !err.contains("panicked"), "{set}: {err}");
    }
}
