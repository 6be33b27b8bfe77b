//! The Super-NaturalInstructions reader: every real task file on this machine loads; the split
//! files list tasks that are there; the seeded 8:2 split with a training cap; broken task files
//! written here are errors naming the file, the record and the field, or skipped and counted.

mod common;
use common::shared_data;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use polyadapt::data::formats::read_gen_data;
use polyadapt::data::niv2::{parse_task, read_task, read_task_names, split_instances, task_path, NivTask};
use polyadapt::data::squad::BadRecords;
use serde_json::json;

/// The Super-NaturalInstructions tasks of the benchmark data, or None (skipped, saying so).
fn niv2() -> Option<PathBuf> {
    shared_data().map(|d| d.join("niv2"))
}

fn all_task_files(niv2: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(niv2.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_real_task_file_loads() {
    let Some(niv2) = niv2() else { return };
    let files = all_task_files(&niv2);
    assert_eq!(files.len(), 185, "the data README lists 185 task files");
    let mut tasks = std::collections::HashMap::new();
    for f in &files {
        let t = read_task(f, BadRecords::Error).unwrap_or_else(|e| panic!("{}", e.chain()));
        assert!(t.skipped.is_empty());
        assert!(!t.definition.trim().is_empty() && !t.instances.is_empty() && !t.positive.is_empty(), "{}", t.name);
        assert!(t.instances.iter().all(|x| !x.outputs.is_empty()), "{}", t.name);
        assert!(!t.categories.is_empty(), "{}", t.name);
        tasks.insert(t.name.clone(), t);
    }
    // Spot checks against the files' text.
    let gl_ja = &tasks["task1239_ted_translation_gl_ja"];
    assert_eq!((gl_ja.input_language.as_slice(), gl_ja.output_language.as_slice()), (&["Galician".to_string()][..], &["Japanese".to_string()][..]));
    assert_eq!(gl_ja.instances.len(), 6390);
    assert_eq!(gl_ja.instances[0].outputs, vec!["大きさは人口を表現しています".to_string()]);
    assert!(gl_ja.positive[0].explanation.is_some());
    // Bare numbers as references.
    assert_eq!(tasks["task1759_gsm"].instances[0].outputs, ["18"]);
    // The test-set copies (`testset_<task>.json`) load as tasks of their own.
    assert_eq!(tasks.keys().filter(|n| n.starts_with("testset_")).count(), 93);
}

#[test]
fn split_files_name_tasks_that_are_here() {
    let Some(niv2) = niv2() else { return };
    let default = read_task_names(&niv2.join("splits/default/test_tasks.txt")).unwrap();
    let xlingual = read_task_names(&niv2.join("splits/xlingual/test_tasks.txt")).unwrap();
    assert_eq!((default.len(), xlingual.len()), (92, 2));
    // The files have trailing spaces and no final newline: names come back clean.
    assert!(default.iter().chain(&xlingual).all(|n| n.starts_with("task") && !n.contains(char::is_whitespace)));
    assert_eq!(xlingual, ["task1239_ted_translation_gl_ja", "task1435_ro_sts_parallel_language_translation_ro_to_en"]);
    let tasks = niv2.join("tasks");
    let present = |n: &str| task_path(&tasks, n).exists() || task_path(&tasks, &format!("testset_{n}")).exists();
    let found = default.iter().filter(|n| present(n)).count();
    assert!(found >= 88, "only {found} of the default split's test tasks are here");
    assert!(xlingual.iter().all(|n| task_path(&tasks, n).exists()));
    // A file that is not a list of names.
    let dir = temp_dir("names");
    let p = dir.join("bad.txt");
    std::fs::write(&p, "task1\ntask 2\n").unwrap();
    let e = read_task_names(&p).unwrap_err().to_string();
    assert!(e.ends_with("bad.txt:2: `task 2` is not a task name (it has spaces)"), "{e}");
}

#[test]
fn instances_split_eight_to_two_under_a_training_cap() {
    let Some(niv2) = niv2() else { return };
    let task = read_task(&task_path(&niv2.join("tasks"), "task1239_ted_translation_gl_ja"), BadRecords::Error).unwrap();
    let s = task.split(0.8, Some(400), 7).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (400, 100));
    let train: HashSet<usize> = s.train.iter().copied().collect();
    assert!(s.test.iter().all(|i| !train.contains(i)) && s.train.windows(2).all(|w| w[0] < w[1]));
    assert!(s.train.iter().chain(&s.test).all(|&i| i < task.instances.len()));
    assert_eq!(task.split(0.8, Some(400), 7).unwrap(), s, "the same seed gives the same split");
    assert_ne!(task.split(0.8, Some(400), 8).unwrap(), s, "another seed another split");
    // Under 500 training examples, as the instruction-tuning experiments ask.
    let s = task.split(0.8, Some(499), 7).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (498, 125));
    // Without a cap every instance is used.
    let s = split_instances(10, 0.8, None, 1).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (8, 2));
    let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    // Smaller than the cap: all of it, still 8:2.
    let s = split_instances(50, 0.8, Some(400), 1).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (40, 10));
    // Tasks of one run get different draws from the same seed.
    let mut other = task.clone();
    other.name = "another".into();
    assert_ne!(other.split(0.8, Some(400), 7).unwrap(), task.split(0.8, Some(400), 7).unwrap());
    for bad in [0.0, 1.0, f64::NAN, -0.5] {
        let e = split_instances(10, bad, None, 1).unwrap_err().to_string();
        assert!(e.contains("strictly between 0 and 1"), "{e}");
    }
    // As generation examples, with the definition.
    let ex = task.examples(&[0, 1]);
    assert_eq!((ex[0].definition.as_deref(), ex[1].id.as_str()), (Some(task.definition.as_str()), task.instances[1].id.as_str()));
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-niv2-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn good_task() -> serde_json::Value {
    json!({
        "Definition": ["Translate the sentence."],
        "Categories": ["Translation"],
        "Input_language": ["Galician"], "Output_language": ["Japanese"],
        "Positive Examples": [{"input": "a", "output": "b", "explanation": "why"}, {"input": "c", "output": "d"}],
        "Negative Examples": [{"input": "e", "output": "f"}],
        "Instances": [
            {"id": "t-0", "input": "x0", "output": ["y0"]},
            {"id": "t-1", "input": "x1", "output": ["y1", "z1"]},
            {"id": "t-2", "input": "x2", "output": ["y2"]}
        ],
        "URL": ["ignored"]
    })
}

fn parse(v: &serde_json::Value, bad: BadRecords) -> polyadapt::Result<NivTask> {
    parse_task(&serde_json::to_string_pretty(v).unwrap(), Path::new("/d/task9_fixture.json"), bad)
}

#[test]
fn broken_task_files_name_the_file_record_and_field() {
    let t = parse(&good_task(), BadRecords::Error).unwrap();
    assert_eq!((t.name.as_str(), t.positive.len(), t.negative.len(), t.instances[1].outputs.len()), ("task9_fixture", 2, 1, 2));
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|v| drop(v.as_object_mut().unwrap().remove("Definition"))), "field `Definition`: missing"),
        (Box::new(|v| v["Definition"] = json!([])), "field `Definition`: an empty list"),
        (Box::new(|v| v["Definition"] = json!([7])), "field `Definition[0]`: expected a string, found a number"),
        (Box::new(|v| v["Categories"] = json!("Translation")), "field `Categories`: expected a list of strings, found a string"),
        (Box::new(|v| v["Input_language"] = json!(["Galician", null])), "field `Input_language[1]`: expected a string, found null"),
        (Box::new(|v| drop(v.as_object_mut().unwrap().remove("Instances"))), "field `Instances`: missing"),
        (Box::new(|v| drop(v.as_object_mut().unwrap().remove("Positive Examples"))), "field `Positive Examples`: missing"),
        (Box::new(|v| v["Negative Examples"] = json!({})), "field `Negative Examples`: expected a list, found an object"),
        (Box::new(|v| v["Instances"][2]["output"] = json!("y2")), "Instances[2]: field `output`: expected a list of strings, found a string"),
        (Box::new(|v| v["Instances"][2]["output"] = json!([])), "Instances[2]: field `output`: an empty list"),
        (Box::new(|v| v["Instances"][1]["output"] = json!(["y1", {}])), "Instances[1]: field `output[1]`: expected a string or a number, found an object"),
        (Box::new(|v| v["Instances"][1]["output"] = json!(["", "z"])), "Instances[1]: field `output[0]`: empty"),
        (Box::new(|v| drop(v["Instances"][0].as_object_mut().unwrap().remove("id"))), "Instances[0]: field `id`: missing"),
        (Box::new(|v| v["Instances"][0] = json!("x0")), "Instances[0]: expected an object, found a string"),
        (Box::new(|v| v["Positive Examples"][1]["output"] = json!(["d"])), "Positive Examples[1]: field `output`: expected a string, found a list"),
        (Box::new(|v| v["Negative Examples"][0]["explanation"] = json!(3)), "Negative Examples[0]: field `explanation`: expected a string"),
        (Box::new(|v| *v = json!([1])), "the top level must be an object"),
    ];
    for (edit, needle) in cases {
        let mut v = good_task();
        edit(&mut v);
        let e = parse(&v, BadRecords::Error).unwrap_err().to_string();
        assert!(e.starts_with("/d/task9_fixture.json: ") && e.contains(needle), "`{needle}` not in: {e}");
    }
    let e = parse_task("{\n  \"Definition\": [\"d\"],\n  \"Instances\": [\n", Path::new("/d/t.json"), BadRecords::Error).unwrap_err().to_string();
    assert!(e.starts_with("/d/t.json:4: column 0: invalid JSON: EOF"), "{e}");
    let e = read_task(Path::new("/nonexistent/task1.json"), BadRecords::Error).unwrap_err().chain();
    assert!(e.contains("/nonexistent/task1.json"), "{e}");
}

#[test]
fn skip_bad_skips_bad_instances_and_examples_and_counts_them() {
    let mut v = good_task();
    v["Instances"][0]["output"] = json!([]);
    v["Instances"][2]["input"] = json!(null);
    v["Positive Examples"][0] = json!(1);
    let t = parse(&v, BadRecords::Skip).unwrap();
    assert_eq!(t.instances.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), ["t-1"]);
    assert_eq!(t.positive.len(), 1);
    assert_eq!(t.skipped.len(), 3, "{:?}", t.skipped);
    assert!(t.skipped[0].starts_with("Positive Examples[0]") && t.skipped[2].starts_with("Instances[2]: field `input`"), "{:?}", t.skipped);
    // Task-level fields are never skipped.
    v["Definition"] = json!(null);
    assert!(parse(&v, BadRecords::Skip).is_err());
    // Through the generation entry point: the task's instances with its definition, skips kept.
    let dir = temp_dir("gen");
    let mut v = good_task();
    v["Instances"][1]["output"] = json!(5);
    let p = dir.join("task9.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let set = read_gen_data(&p, BadRecords::Skip).unwrap();
    assert_eq!(set.examples.len(), 2);
    assert_eq!(set.skipped.len(), 1);
    assert_eq!(set.examples[1].definition.as_deref(), Some("Translate the sentence."));
    assert_eq!(set.examples[1].outputs, ["y2"]);
    let e = read_gen_data(&p, BadRecords::Error).unwrap_err().to_string();
    assert!(e.contains("task9.json: Instances[1]: field `output`"), "{e}");
}
