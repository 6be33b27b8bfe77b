//! `engine-train score`: EM/F1 of SQuAD and MLQA on a SQuAD-format file, accuracy on label
//! files; the last line of output is the JSON of scores; bad files are errors naming them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn score(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("score").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-score-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dataset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/squad/qa_small.json")
}

/// 18 questions: 9 answered with their first answer, `zh-1` and `zh-2` with the answer and a
/// Chinese full stop, `en-4` with an unrelated word, the rest (6) not answered.
fn predictions(d: &Path) -> PathBuf {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dataset()).unwrap()).unwrap();
    let mut preds = serde_json::Map::new();
    let mut n = 0;
    for a in v["data"].as_array().unwrap() {
        for p in a["paragraphs"].as_array().unwrap() {
            for q in p["qas"].as_array().unwrap() {
                let id = q["id"].as_str().unwrap();
                let answer = q["answers"][0]["text"].as_str().unwrap();
                let pred = match id {
                    "zh-1" | "zh-2" => format!("{answer}。"),
                    "en-4" => "nothing".to_string(),
                    _ if n < 9 => {
                        n += 1;
                        answer.to_string()
                    }
                    _ => continue,
                };
                preds.insert(id.to_string(), pred.into());
            }
        }
    }
    assert_eq!(n, 9);
    let path = d.join("pred.json");
    std::fs::write(&path, serde_json::Value::Object(preds).to_string()).unwrap();
    path
}

#[test]
fn squad_and_mlqa_scores_of_known_predictions() {
    let d = dir("qa");
    let pred = predictions(&d);
    let (p, r) = (pred.to_str().unwrap(), dataset());
    let (ok, out, err) = score(&["--metric", "squad", "--pred", p, "--ref", r.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("6 of 18 questions have no prediction"), "{err}");
    // SQuAD keeps the Chinese full stop (not ASCII punctuation): 9 of 18 exact.
    let s = last_json(&out);
    assert_eq!(s["exact_match"].as_f64().unwrap(), 50.0, "{s}");
    assert_eq!(s["f1"].as_f64().unwrap(), 50.0, "{s}");
    // MLQA (zh) removes it: 11 of 18.
    let (ok, out, err) = score(&["--metric", "mlqa", "--lang", "zh", "--pred", p, "--ref", r.to_str().unwrap()]);
    assert!(ok, "{err}");
    let s = last_json(&out);
    assert_eq!(s["exact_match"].as_f64().unwrap(), 100.0 * 11.0 / 18.0, "{s}");
    // mlqa needs a language; squad refuses one.
    let (ok, _, err) = score(&["--metric", "mlqa", "--pred", p, "--ref", r.to_str().unwrap()]);
    assert!(!ok && err.contains("--lang"), "{err}");
    let (ok, _, err) = score(&["--metric", "mlqa", "--lang", "fr", "--pred", p, "--ref", r.to_str().unwrap()]);
    assert!(!ok && err.contains("`fr`"), "{err}");
}

#[test]
fn accuracy_of_label_files() {
    let d = dir("acc");
    std::fs::write(d.join("pred.txt"), "1\n0\n1\r\n2\n").unwrap();
    std::fs::write(d.join("gold.txt"), "1\n0\n1\n1\n").unwrap();
    let (p, g) = (d.join("pred.txt"), d.join("gold.txt"));
    let (ok, out, err) = score(&["--metric", "accuracy", "--pred", p.to_str().unwrap(), "--ref", g.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(last_json(&out)["accuracy"].as_f64().unwrap(), 75.0);
    std::fs::write(d.join("gold.txt"), "1\n0\n").unwrap();
    let (ok, _, err) = score(&["--metric", "accuracy", "--pred", p.to_str().unwrap(), "--ref", g.to_str().unwrap()]);
    assert!(!ok && err.contains("gold.txt has 2") && err.contains("pred.txt has 4 lines"), "{err}");
}

#[test]
fn malformed_prediction_files_are_named() {
    let d = dir("bad");
    let r = dataset();
    for (text, want) in [("[1, 2]", "expected a JSON object"), ("{\"en-1\": 3}", "`en-1`"), ("{oops", "not valid JSON")] {
        let p = d.join("pred.json");
        std::fs::write(&p, text).unwrap();
        let (ok, _, err) = score(&["--metric", "squad", "--pred", p.to_str().unwrap(), "--ref", r.to_str().unwrap()]);
        assert!(!ok && err.contains("pred.json") && err.contains(want), "{text}: {err}");
    }
    let (ok, _, err) = score(&["--metric", "squad", "--pred", d.join("missing.json").to_str().unwrap(), "--ref", r.to_str().unwrap()]);
    assert!(!ok && err.contains("missing.json"), "{err}");
}

#[test]
fn bleu_of_line_files() {
    let d = dir("bleu");
    std::fs::write(d.join("hyp.txt"), "the cat sat on the mat.\nhello world\n").unwrap();
    std::fs::write(d.join("ref.txt"), "the cat is on the mat.\nhello world\n").unwrap();
    let (h, r) = (d.join("hyp.txt"), d.join("ref.txt"));
    let (ok, out, err) = score(&["--metric", "bleu", "--pred", h.to_str().unwrap(), "--ref", r.to_str().unwrap()]);
    assert!(ok, "{err}");
    // sacrebleu.corpus_bleu(["the cat sat on the mat.", "hello world"], [["the cat is on the mat.", "hello world"]])
    // = 50.197242487957936 (matches 8/5/2/1 of 9/7/5/4 n-grams).
    let b = last_json(&out)["bleu"].as_f64().unwrap();
    assert!((b - 50.197242487957936).abs() < 1e-9, "{b}");
    std::fs::write(d.join("ref.txt"), "one line\n").unwrap();
    let (ok, _, err) = score(&["--metric", "bleu", "--pred", h.to_str().unwrap(), "--ref", r.to_str().unwrap()]);
    assert!(!ok && err.contains("ref.txt has 1"), "{err}");
}

#[test]
fn rouge_l_of_line_files() {
    let d = dir("rouge");
    std::fs::write(d.join("pred.txt"), "the cat sat on the mat\nनई दिल्ली भारत की राजधानी है\n").unwrap();
    std::fs::write(d.join("ref.txt"), "the cat is on the mat\nभारत की राजधानी नई दिल्ली है\n").unwrap();
    let (p, r) = (d.join("pred.txt"), d.join("ref.txt"));
    // Pair 1: LCS 5 of 6 tokens each way, F = 5/6; pair 2 has no default tokens: 0.
    let (ok, out, err) = score(&["--metric", "rouge-l", "--pred", p.to_str().unwrap(), "--ref", r.to_str().unwrap()]);
    assert!(ok, "{err}");
    let f = last_json(&out)["rouge_l"].as_f64().unwrap();
    assert!((f - 100.0 * (5.0 / 6.0) / 2.0).abs() < 1e-9, "{f}");
    // Whitespace tokens: pair 2 scores 2/3.
    let (ok, out, err) = score(&["--metric", "rouge-l", "--rouge-tokens", "whitespace", "--pred", p.to_str().unwrap(), "--ref", r.to_str().unwrap()]);
    assert!(ok, "{err}");
    let f = last_json(&out)["rouge_l"].as_f64().unwrap();
    assert!((f - 100.0 * (5.0 / 6.0 + 2.0 / 3.0) / 2.0).abs() < 1e-9, "{f}");
}

#[test]
fn meteor_of_line_files() {
    let d = dir("meteor");
    let (h, r) = (d.join("hyp.txt"), d.join("ref.txt"));
    std::fs::write(
        &h,
        "It is a guide to action which ensures that the military always obeys the commands of the party\n\
         The dogs went home quickly.\n\nनई दिल्ली भारत की राजधानी है\n",
    )
    .unwrap();
    std::fs::write(
        &r,
        "It is a guide to action that ensures that the military will forever heed Party commands\n\
         a dog goes to its house fast.\nnothing here\nभारत की राजधानी नई दिल्ली है\n",
    )
    .unwrap();
    let (hs, rs) = (h.to_str().unwrap(), r.to_str().unwrap());
    let (ok, out, err) = score(&["--metric", "meteor", "--pred", hs, "--ref", rs]);
    assert!(ok, "{err}");
    assert!(err.contains("synsets, read in"), "{err}");
    // nltk 3.9.1: meteor_score([r.split()], h.split()) per line = 0.6944444444444445,
    // 0.07352941176470587, 0.0, 0.9375; their mean in points 42.63684640522876.
    let m = last_json(&out)["meteor"].as_f64().unwrap();
    assert!((m - 42.63684640522876).abs() < 1e-9, "{m}");

    // WordNet from --wordnet, else $POLYADAPT_WORDNET: a directory that is not there.
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_engine-train"));
        c.arg("score").args(args);
        if let Some(v) = env {
            c.env("POLYADAPT_WORDNET", v);
        }
        let out = c.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["--metric", "meteor", "--pred", hs, "--ref", rs, "--wordnet", "/nowhere/wn"], None);
    assert!(!ok && err.contains("/nowhere/wn") && err.contains("wordnet-base"), "{err}");
    let (ok, err) = run(&["--metric", "meteor", "--pred", hs, "--ref", rs], Some("/elsewhere/wn"));
    assert!(!ok && err.contains("/elsewhere/wn"), "{err}");

    std::fs::write(&r, "one line\n").unwrap();
    let (ok, _, err) = score(&["--metric", "meteor", "--pred", hs, "--ref", rs]);
    assert!(!ok && err.contains("ref.txt has 1") && err.contains("hyp.txt has 4"), "{err}");
}
