//! The JSON Lines forms and the format choice: real XQuAD, TyDiQA and PAWS-X data written as
//! JSON Lines read back to the same examples; every kind of bad line is an error naming the
//! file, the line and the field; `--skip-bad` counts and describes the bad lines.

mod common;
use common::shared_data;

use std::path::{Path, PathBuf};

use polyadapt::data::formats::{detect_format, read_gen_data, read_pair_data, read_qa_data, DataFormat};
use polyadapt::data::jsonl::{parse_gen_jsonl, parse_pair_jsonl, parse_qa_jsonl, GenExample};
use polyadapt::data::pairs::read_pairs;
use polyadapt::data::squad::{read_squad, BadRecords, QaExample};
use serde_json::json;


fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-jsonl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn qa_line(e: &QaExample) -> String {
    let answers: Vec<_> = e.answers.iter().map(|a| json!({"text": a.text, "answer_start": a.start_char})).collect();
    json!({"id": e.id, "title": e.title, "question": e.question, "context": e.context, "answers": answers}).to_string()
}

fn labels() -> Vec<String> {
    vec!["0".into(), "1".into()]
}

#[test]
fn real_qa_data_round_trips_through_jsonl_in_both_answer_forms() {
    let Some(data) = shared_data() else { return };
    let dir = temp_dir("qa");
    // German and Hindi: offsets are characters, and most characters here are several bytes.
    for lang in ["de", "hi"] {
        let squad = read_squad(&data.join(format!("xquad/xquad.{lang}.json")), BadRecords::Error).unwrap();
        let lines: Vec<String> = squad.examples.iter().map(qa_line).collect();
        let path = dir.join(format!("{lang}.jsonl"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let back = read_qa_data(&path, BadRecords::Error).unwrap();
        assert_eq!(back.examples, squad.examples, "{lang}");
        assert!(back.skipped.is_empty());
        // The column form of Hugging Face `datasets`, under a `.json` name: chosen by content.
        let cols: Vec<String> = squad
            .examples
            .iter()
            .map(|e| {
                let texts: Vec<&str> = e.answers.iter().map(|a| a.text.as_str()).collect();
                let starts: Vec<usize> = e.answers.iter().map(|a| a.start_char).collect();
                json!({"id": e.id, "title": e.title, "question": e.question, "context": e.context,
                       "answers": {"text": texts, "answer_start": starts}})
                .to_string()
            })
            .collect();
        let path = dir.join(format!("{lang}-columns.json"));
        std::fs::write(&path, cols.join("\r\n")).unwrap();
        assert_eq!(read_qa_data(&path, BadRecords::Error).unwrap().examples, squad.examples, "{lang} columns");
    }
    // SQuAD files, one-line (TyDiQA) and pretty-printed (XQuAD), still go to the SQuAD reader.
    let tydi = data.join("tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.sw.dev.json");
    let xquad = data.join("xquad/xquad.en.json");
    for p in [&tydi, &xquad] {
        assert_eq!(detect_format(p, &std::fs::read(p).unwrap()), DataFormat::JsonDocument, "{}", p.display());
        assert_eq!(read_qa_data(p, BadRecords::Skip).unwrap().examples, read_squad(p, BadRecords::Skip).unwrap().examples);
    }
}

#[test]
fn real_pairs_round_trip_through_jsonl_and_the_format_is_chosen_by_content() {
    let Some(data) = shared_data() else { return };
    let dir = temp_dir("pairs");
    let tsv = data.join("pawsx/dev-de.tsv");
    let set = read_pairs(&tsv, &labels(), BadRecords::Error).unwrap();
    assert!(set.examples.len() > 1000);
    let lines: Vec<String> = set
        .examples
        .iter()
        // Labels as numbers on even lines and as strings on odd ones: both forms are read.
        .map(|e| {
            let label = if e.line % 2 == 0 { json!(e.label) } else { json!(e.label.to_string()) };
            json!({"sentence1": e.first, "sentence2": e.second, "label": label}).to_string()
        })
        .collect();
    let path = dir.join("pairs.txt");
    std::fs::write(&path, lines.join("\n")).unwrap();
    assert_eq!(detect_format(&path, &std::fs::read(&path).unwrap()), DataFormat::JsonLines);
    let back = read_pair_data(&path, &labels(), BadRecords::Error).unwrap();
    assert_eq!(back.examples, set.examples);
    // TSV, also when a sentence starts with a bracket.
    assert_eq!(read_pair_data(&tsv, &labels(), BadRecords::Error).unwrap().examples, set.examples);
    let p = dir.join("brackets.tsv");
    std::fs::write(&p, "{a} b\t[c]\t1\n").unwrap();
    assert_eq!(detect_format(&p, &std::fs::read(&p).unwrap()), DataFormat::Tsv);
    assert_eq!(read_pair_data(&p, &labels(), BadRecords::Error).unwrap().examples[0].first, "{a} b");
    // An `id` is kept; TSV's fourth column is the id too.
    let p = dir.join("ids.jsonl");
    std::fs::write(&p, "{\"id\": 7, \"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": \"0\"}\n").unwrap();
    assert_eq!(read_pair_data(&p, &labels(), BadRecords::Error).unwrap().examples[0].id.as_deref(), Some("7"));
}

#[test]
fn generation_examples_round_trip() {
    let dir = temp_dir("gen");
    let examples = vec![
        GenExample { id: "a".into(), definition: Some("Translate to Japanese.".into()), input: "Bos días".into(), outputs: vec!["おはよう".into()] },
        GenExample { id: "4".into(), definition: None, input: "".into(), outputs: vec!["x".into(), "y z".into(), "18".into()] },
    ];
    let text = format!(
        "{}\n\n   \n{}\n",
        json!({"id": "a", "definition": "Translate to Japanese.", "input": "Bos días", "output": "おはよう"}),
        json!({"input": "", "output": ["x", "y z", 18]})
    );
    let p = dir.join("gen.jsonl");
    std::fs::write(&p, text).unwrap();
    // The second record is on line 4 (blank lines are skipped but counted): its id.
    assert_eq!(read_gen_data(&p, BadRecords::Error).unwrap().examples, examples);
}

/// The error of parsing `text` as each form, as the user sees it.
fn qa_err(text: &str) -> String {
    parse_qa_jsonl(text.as_bytes(), Path::new("/d/qa.jsonl"), BadRecords::Error).unwrap_err().to_string()
}
fn pair_err(text: &str) -> String {
    parse_pair_jsonl(text.as_bytes(), Path::new("/d/p.jsonl"), &labels(), BadRecords::Error).unwrap_err().to_string()
}
fn gen_err(text: &str) -> String {
    parse_gen_jsonl(text.as_bytes(), Path::new("/d/g.jsonl"), BadRecords::Error).unwrap_err().to_string()
}

const GOOD_QA: &str = r#"{"id": "q", "question": "Wer?", "context": "Café Ada schrieb es.", "answers": [{"text": "Ada", "answer_start": 5}]}"#;

#[test]
fn every_bad_qa_line_names_the_file_line_and_field() {
    assert_eq!(parse_qa_jsonl(GOOD_QA.as_bytes(), Path::new("x"), BadRecords::Error).unwrap().examples.len(), 1);
    let good: serde_json::Value = serde_json::from_str(GOOD_QA).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        format!("{GOOD_QA}\n\n{v}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (with(&|v| drop(v.as_object_mut().unwrap().remove("question"))), "field `question`: missing"),
        (with(&|v| v["context"] = json!(3)), "field `context`: expected a string, found a number"),
        (with(&|v| drop(v.as_object_mut().unwrap().remove("answers"))), "field `answers`: missing"),
        (with(&|v| v["answers"] = json!([])), "field `answers`: empty"),
        (with(&|v| v["answers"] = json!("Ada")), "field `answers`: expected a list, found a string"),
        (with(&|v| v["answers"][0] = json!(["Ada", 5])), "field `answers[0]`: expected an object"),
        (with(&|v| v["answers"][0]["text"] = json!("")), "field `answers[0].text`: empty"),
        (with(&|v| drop(v["answers"][0].as_object_mut().unwrap().remove("text"))), "field `answers[0].text`: missing"),
        (with(&|v| v["answers"][0]["answer_start"] = json!(-1)), "field `answers[0].answer_start`: expected a non-negative integer, found -1"),
        (with(&|v| v["answers"][0]["answer_start"] = json!("5")), "field `answers[0].answer_start`: expected a non-negative integer"),
        // A byte offset (Café is 5 characters, 6 bytes) is one character off.
        (with(&|v| v["answers"][0]["answer_start"] = json!(6)), "field `answers[0].answer_start`: the context has \"da \" at character 6, not the answer \"Ada\""),
        (with(&|v| v["answers"][0]["answer_start"] = json!(19)), "field `answers[0].answer_start`: 19 + 3 characters runs past the context (20 characters)"),
        (with(&|v| v["answers"] = json!({"text": ["Ada"], "answer_start": [5, 6]})), "field `answers.answer_start`: 2 entries for the 1 of `answers.text`"),
        (with(&|v| v["answers"] = json!({"text": ["Ada"]})), "field `answers.answer_start`: missing"),
        (with(&|v| v["answers"] = json!({"text": ["Ada"], "answer_start": [4]})), "field `answers.answer_start[0]`: the context has"),
        (with(&|v| v["id"] = json!([1])), "field `id`: expected a string or an integer, found a list"),
        (with(&|v| v["title"] = json!(false)), "field `title`: expected a string, found a boolean"),
        (with(&|v| *v = json!([1, 2])), "expected a JSON object, found a list"),
    ];
    for (text, needle) in cases {
        let e = qa_err(&text);
        assert!(e.starts_with("/d/qa.jsonl:3: ") && e.contains(needle), "`{needle}` not in: {e}");
    }
    // Invalid JSON: serde's column on the right line.
    let broken = r#"{"id": "q2", "question": "x",, }"#;
    let column = serde_json::from_str::<serde_json::Value>(broken).unwrap_err().column();
    let e = qa_err(&format!("{GOOD_QA}\n{broken}\n"));
    assert!(e.starts_with(&format!("/d/qa.jsonl:2: column {column}: invalid JSON: ")) && !e.contains("line 1"), "{e}");
    // Invalid UTF-8 in the middle of a line.
    let mut bytes = format!("{GOOD_QA}\n").into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"b\xffd\"}\n");
    let e = parse_qa_jsonl(&bytes, Path::new("/d/qa.jsonl"), BadRecords::Error).unwrap_err().to_string();
    assert_eq!(e, "/d/qa.jsonl:2: not valid UTF-8 (byte 9 of the line)");
    // A missing file names it.
    let e = read_qa_data(Path::new("/nonexistent/q.jsonl"), BadRecords::Error).unwrap_err();
    assert!(e.chain().contains("/nonexistent/q.jsonl"), "{}", e.chain());
}

#[test]
fn every_bad_pair_and_generation_line_names_the_file_line_and_field() {
    let pair = r#"{"sentence1": "a", "sentence2": "b", "label": "1"}"#;
    for (line, needle) in [
        (r#"{"sentence2": "b", "label": "1"}"#, "field `sentence1`: missing"),
        (r#"{"sentence1": "a", "sentence2": " ", "label": "1"}"#, "field `sentence2`: empty"),
        (r#"{"sentence1": "a", "sentence2": ["b"], "label": "1"}"#, "field `sentence2`: expected a string, found a list"),
        (r#"{"sentence1": "a", "sentence2": "b"}"#, "field `label`: missing"),
        (r#"{"sentence1": "a", "sentence2": "b", "label": "2"}"#, "field `label`: `2` is not one of 0, 1"),
        (r#"{"sentence1": "a", "sentence2": "b", "label": true}"#, "field `label`: expected a string or an integer, found a boolean"),
        (r#"{"sentence1": "a", "sentence2": "b", "label": 0.5}"#, "field `label`: expected a string or an integer, found a number"),
        (r#"{"id": {}, "sentence1": "a", "sentence2": "b", "label": 1}"#, "field `id`: expected a string or an integer, found an object"),
        (r#""sentence1""#, "expected a JSON object, found a string"),
    ] {
        let e = pair_err(&format!("{pair}\n{line}"));
        assert!(e.starts_with("/d/p.jsonl:2: ") && e.contains(needle), "`{needle}` not in: {e}");
    }
    let gen = r#"{"input": "a", "output": "b"}"#;
    for (line, needle) in [
        (r#"{"output": "b"}"#, "field `input`: missing"),
        (r#"{"input": "a"}"#, "field `output`: missing"),
        (r#"{"input": "a", "output": []}"#, "field `output`: an empty list"),
        (r#"{"input": "a", "output": ["b", false]}"#, "field `output[1]`: expected a string or a number, found a boolean"),
        (r#"{"input": "a", "output": ["b", " "]}"#, "field `output[1]`: empty"),
        (r#"{"input": "a", "output": ""}"#, "field `output`: empty"),
        (r#"{"input": "a", "output": {"text": "b"}}"#, "field `output`: expected a string, a number or a list of them, found an object"),
        (r#"{"input": "a", "output": "b", "definition": ["d"]}"#, "field `definition`: expected a string, found a list"),
    ] {
        let e = gen_err(&format!("{gen}\n{line}"));
        assert!(e.starts_with("/d/g.jsonl:2: ") && e.contains(needle), "`{needle}` not in: {e}");
    }
    // Not data for the kind asked for: TSV is neither QA nor generation data.
    let dir = temp_dir("kinds");
    let tsv = dir.join("x.tsv");
    std::fs::write(&tsv, "a\tb\t1\n").unwrap();
    let e = read_qa_data(&tsv, BadRecords::Error).unwrap_err().to_string();
    assert!(e.contains("x.tsv") && e.contains("not extractive-QA data"), "{e}");
    let e = read_gen_data(&tsv, BadRecords::Error).unwrap_err().to_string();
    assert!(e.contains("not generation data"), "{e}");
    // Invalid UTF-8 in a TSV or SQuAD file names the line.
    std::fs::write(&tsv, b"a\tb\t1\nc\td\xe9\t0\n").unwrap();
    let e = read_pair_data(&tsv, &labels(), BadRecords::Error).unwrap_err().to_string();
    assert!(e.ends_with("x.tsv:2: not valid UTF-8 (byte 3 of the line)"), "{e}");
    let squad = dir.join("s.json");
    std::fs::write(&squad, b"{\n  \"data\": [\n  \"\xc3\"]}\n").unwrap();
    let e = read_qa_data(&squad, BadRecords::Error).unwrap_err().to_string();
    assert!(e.ends_with("s.json:3: not valid UTF-8 (byte 3 of the line)"), "{e}");
}

#[test]
fn skip_bad_counts_and_describes_every_bad_line() {
    let bad_start = GOOD_QA.replace("\"answer_start\": 5", "\"answer_start\": 6");
    let mut bytes = format!("{GOOD_QA}\n{bad_start}\nnot json\n\n{GOOD_QA}\n[]\n").into_bytes();
    bytes.extend_from_slice(b"\xff\n");
    bytes.extend_from_slice(GOOD_QA.as_bytes());
    let set = parse_qa_jsonl(&bytes, Path::new("/d/qa.jsonl"), BadRecords::Skip).unwrap();
    assert_eq!(set.examples.len(), 3);
    let lines: Vec<&str> = set.skipped.iter().map(|s| s.split(": ").next().unwrap()).collect();
    assert_eq!(lines, ["/d/qa.jsonl:2", "/d/qa.jsonl:3", "/d/qa.jsonl:6", "/d/qa.jsonl:7"], "{:?}", set.skipped);
    assert!(set.skipped[0].contains("answers[0].answer_start") && set.skipped[1].contains("invalid JSON"), "{:?}", set.skipped);

    let text = "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 1}\n{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 9}\n{\"sentence1\": \"a\"}\n";
    let set = parse_pair_jsonl(text.as_bytes(), Path::new("p.jsonl"), &labels(), BadRecords::Skip).unwrap();
    assert_eq!((set.examples.len(), set.skipped.len()), (1, 2));
    assert!(set.skipped[0].contains("p.jsonl:2") && set.skipped[1].contains("p.jsonl:3: field `sentence2`: missing"), "{:?}", set.skipped);

    let text = "{\"input\": \"a\", \"output\": []}\n{\"input\": \"a\", \"output\": \"b\"}\n";
    let set = parse_gen_jsonl(text.as_bytes(), Path::new("g.jsonl"), BadRecords::Skip).unwrap();
    assert_eq!((set.examples.len(), set.skipped.len(), set.examples[0].id.as_str()), (1, 1, "2"));
}
