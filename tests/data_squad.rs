//! The SQuAD v1.1 reader: the committed fixture, every kind of bad record (error naming the
//! file, the record and the field; or skipped and counted), and the real data sets when
//! `../shared/data` is present.

mod common;

use std::path::{Path, PathBuf};
use common::shared_data;

use polyadapt::data::squad::{parse_squad, read_squad, BadRecords, QaExample};

fn fixture() -> PathBuf {
    common::fixtures_dir().join("squad/qa_small.json")
}

/// Characters `start..start+len` of `s`.
fn chars_at(s: &str, start: usize, len: usize) -> String {
    s.chars().skip(start).take(len).collect()
}

fn parse(text: &str, bad: BadRecords) -> polyadapt::Result<polyadapt::data::squad::SquadSet> {
    parse_squad(text, Path::new("/data/bad.json"), bad)
}

fn parse_err(text: &str) -> String {
    parse(text, BadRecords::Error).unwrap_err().chain()
}

/// One article, one paragraph with `context`, and the given question objects.
fn one_paragraph(context: &str, qas: &str) -> String {
    let context = serde_json::to_string(context).unwrap();
    format!(r#"{{"version": "1.1", "data": [{{"title": "T", "paragraphs": [{{"context": {context}, "qas": [{qas}]}}]}}]}}"#)
}

#[test]
fn fixture_loads_with_character_offsets() {
    let set = read_squad(&fixture(), BadRecords::Error).unwrap();
    assert!(set.skipped.is_empty());
    assert_eq!(set.examples.len(), 18);
    for ex in &set.examples {
        for a in &ex.answers {
            assert_eq!(chars_at(&ex.context, a.start_char, a.text.chars().count()), a.text, "{}", ex.id);
            assert_eq!(a.end_char(), a.start_char + a.text.chars().count());
        }
    }
    let by_id = |id: &str| -> &QaExample { set.examples.iter().find(|e| e.id == id).unwrap() };
    // Two astral characters (𝄞, 🎵) precede the answer: as UTF-16 units it would start 2 later,
    // as bytes 6 later; the reader accepted the Python (code point) index.
    let nb = by_id("nonbmp-1");
    assert_eq!(nb.title, None);
    let byte_start = nb.context.find("Ottaviano").unwrap();
    assert_eq!(nb.answers[0].start_char, nb.context[..byte_start].chars().count());
    assert_ne!(nb.answers[0].start_char, byte_start);
    assert_eq!(by_id("en-2").answers.len(), 2);
    assert_eq!(by_id("en-3").answers[0].start_char, 0);
    assert_eq!(by_id("hi-1").title.as_deref(), Some("गंगा"));
    // File order: the first paragraph's questions first.
    assert_eq!(set.examples.iter().take(4).map(|e| e.id.as_str()).collect::<Vec<_>>(), ["en-1", "en-2", "en-3", "en-4"]);
}

#[test]
fn malformed_json_names_the_file_line_and_column() {
    let text = "{\"data\": [\n  {\"paragraphs\": [\n    }\n]}";
    let e = parse_err(text);
    assert!(e.starts_with("/data/bad.json:3: column 5: invalid JSON"), "{e}");
    // A file that stops in the middle.
    let e = parse_err("{\"data\": [{\"paragraphs\": [{\"context\": \"abc");
    assert!(e.starts_with("/data/bad.json:1: column "), "{e}");
}

#[test]
fn io_error_names_the_path() {
    let e = read_squad(Path::new("/nonexistent/xquad.xx.json"), BadRecords::Error).unwrap_err().chain();
    assert!(e.contains("/nonexistent/xquad.xx.json"), "{e}");
}

#[test]
fn missing_or_mistyped_fields_name_the_record_and_the_field() {
    let good = r#"{"id": "q1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]}"#;
    let cases: &[(String, &str)] = &[
        (
            one_paragraph("Ann left.", &format!(r#"{good}, {{"id": "q2", "answers": [{{"text": "Ann", "answer_start": 0}}]}}"#)),
            "/data/bad.json: data[0].paragraphs[0].qas[1] (question id `q2`): field `question`: missing",
        ),
        (
            one_paragraph("Ann left.", r#"{"question": "Who?", "answers": []}"#),
            "/data/bad.json: data[0].paragraphs[0].qas[0]: field `id`: missing",
        ),
        (
            one_paragraph("Ann left.", r#"{"id": "q3", "question": "Who?", "answers": [{"text": "Ann", "answer_start": "0"}]}"#),
            "data[0].paragraphs[0].qas[0] (question id `q3`): field `answers[0].answer_start`: expected a non-negative integer, found \"0\"",
        ),
        (
            one_paragraph("Ann left.", r#"{"id": "q4", "question": "Who?", "answers": [{"answer_start": 0}]}"#),
            "(question id `q4`): field `answers[0].text`: missing",
        ),
        (
            one_paragraph("Ann left.", r#"{"id": "q5", "question": "Who?", "answers": []}"#),
            "(question id `q5`): field `answers`: empty: SQuAD v1.1 questions are answerable",
        ),
        (
            one_paragraph("Ann left.", r#"{"id": "q6", "question": 7, "answers": []}"#),
            "(question id `q6`): field `question`: expected a string, found a number",
        ),
        (
            r#"{"data": [{"paragraphs": [{"qas": []}]}]}"#.to_string(),
            "/data/bad.json: data[0].paragraphs[0]: field `context`: missing",
        ),
        (r#"{"data": [{"title": 3, "paragraphs": []}]}"#.to_string(), "data[0]: field `title`: expected a string, found a number"),
        (r#"{"data": [{"title": "x"}]}"#.to_string(), "data[0]: field `paragraphs`: missing"),
        (r#"{"version": "1.1"}"#.to_string(), "/data/bad.json: the file: field `data`: missing"),
        (r#"[1, 2]"#.to_string(), "the file: field `data`: the top level must be an object"),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.contains(want), "\n got  {e}\n want {want}");
    }
}

#[test]
fn answer_not_at_its_offset_names_the_question() {
    // "Ann" is at 0; 1 is off by one; 7 runs past the end of the 9-character context.
    let text = one_paragraph("Ann left.", r#"{"id": "q-off", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 1}]}"#);
    let e = parse_err(&text);
    assert!(
        e.contains("(question id `q-off`): field `answers[0].answer_start`: the context has \"nn \" at character 1, not the answer \"Ann\""),
        "{e}"
    );
    let text = one_paragraph("Ann left.", r#"{"id": "q-far", "question": "Who?", "answers": [{"text": "left.", "answer_start": 7}]}"#);
    let e = parse_err(&text);
    assert!(e.contains("(question id `q-far`): field `answers[0].answer_start`: 7 + 5 characters runs past the context (9 characters)"), "{e}");
    let text = one_paragraph("Ann left.", r#"{"id": "q-huge", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 18446744073709551615}]}"#);
    assert!(parse_err(&text).contains("(question id `q-huge`): field `answers[0].answer_start`: 18446744073709551615 + 3 characters runs past"));
    // A byte offset where a character offset belongs: "जल" is at character 4, byte 10.
    let text = one_paragraph("नदी जल", r#"{"id": "q-bytes", "question": "?", "answers": [{"text": "जल", "answer_start": 10}]}"#);
    assert!(parse_err(&text).contains("q-bytes"));
    let text = one_paragraph("नदी जल", r#"{"id": "q-chars", "question": "?", "answers": [{"text": "जल", "answer_start": 4}]}"#);
    assert_eq!(parse(&text, BadRecords::Error).unwrap().examples[0].answers[0].start_char, 4);
}

#[test]
fn skip_bad_counts_and_describes_every_skipped_record() {
    let text = r#"{"data": [
      {"title": "A", "paragraphs": [
        {"context": "Ann left early.", "qas": [
          {"id": "ok-1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]},
          {"id": "bad-offset", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 2}]},
          {"id": "bad-missing", "answers": [{"text": "Ann", "answer_start": 0}]},
          {"id": "ok-2", "question": "When?", "answers": [{"text": "early", "answer_start": 9}]}
        ]},
        {"qas": [{"id": "lost-1", "question": "?", "answers": [{"text": "x", "answer_start": 0}]}]}
      ]},
      {"title": "B", "paragraphs": "not a list"},
      {"paragraphs": [{"context": "Bo", "qas": [{"id": "ok-3", "question": "Who?", "answers": [{"text": "Bo", "answer_start": 0}]}]}]}
    ]}"#;
    let set = parse(text, BadRecords::Skip).unwrap();
    let ids: Vec<&str> = set.examples.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["ok-1", "ok-2", "ok-3"]);
    assert_eq!(set.skipped.len(), 4, "{:#?}", set.skipped);
    assert!(set.skipped[0].contains("data[0].paragraphs[0].qas[1] (question id `bad-offset`): field `answers[0].answer_start`"));
    assert!(set.skipped[1].contains("(question id `bad-missing`): field `question`: missing"));
    assert!(set.skipped[2].contains("data[0].paragraphs[1]: field `context`: missing"));
    assert!(set.skipped[3].contains("data[1]: field `paragraphs`: expected a list, found a string"));
    // Without skipping, the first bad record stops the read.
    assert!(parse_err(text).contains("bad-offset"));
    // Syntax errors are never skipped.
    assert!(parse("{\"data\": [", BadRecords::Skip).is_err());
}

/// `../shared/data` (or `POLYADAPT_DATA`), when this machine has it.

fn load(path: &Path) -> Vec<QaExample> {
    let set = read_squad(path, BadRecords::Error).unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(set.skipped.is_empty());
    set.examples
}

#[test]
fn real_xquad_all_languages_are_parallel() {
    let Some(data) = shared_data() else { return };
    let en = load(&data.join("xquad/xquad.en.json"));
    assert_eq!(en.len(), 1190);
    for lang in ["ar", "de", "es", "hi", "ru", "vi", "zh"] {
        let ex = load(&data.join(format!("xquad/xquad.{lang}.json")));
        assert_eq!(ex.len(), 1190, "{lang}");
        // The README: the same questions, same ids, in every language.
        assert!(ex.iter().zip(&en).all(|(a, b)| a.id == b.id), "{lang}: ids differ from English");
    }
}

#[test]
fn real_tydiqa_goldp_loads() {
    let Some(data) = shared_data() else { return };
    let train = data.join("tydiqa/tydiqa-goldp-v1.1-train");
    for (lang, n) in [("en", 3696), ("ko", 1625), ("sw", 2755)] {
        let ex = load(&train.join(format!("tydiqa.goldp.{lang}.train.json")));
        assert_eq!(ex.len(), n, "{lang}");
        let unique: std::collections::HashSet<&str> = ex.iter().map(|e| e.id.as_str()).collect();
        eprintln!("tydiqa train {lang}: {n} examples, {} distinct ids", unique.len());
    }
    // The dev files on this machine have every answer blanked (`"text": ""`, start 0), so no
    // dev question can be scored: each is a bad record. Count what is there either way.
    let (mut kept, mut skipped) = (0, 0);
    for lang in ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"] {
        let set = read_squad(&data.join(format!("tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json")), BadRecords::Skip).unwrap();
        assert!(set.skipped.iter().all(|s| s.contains("field `answers[0].text`: empty")), "{lang}: {:?}", set.skipped.first());
        kept += set.examples.len();
        skipped += set.skipped.len();
    }
    eprintln!("tydiqa dev: {kept} questions with answers, {skipped} with an empty answer");
    assert_eq!(kept + skipped, 5077);
}

#[test]
fn real_mlqa_dev_loads() {
    let Some(data) = shared_data() else { return };
    let langs = ["ar", "de", "en", "es", "hi", "vi", "zh"];
    let mono = [517, 512, 1148, 500, 507, 511, 504];
    let mut files = 0;
    for c in langs {
        for q in langs {
            let ex = load(&data.join(format!("mlqa/dev/dev-context-{c}-question-{q}.json")));
            assert!(!ex.is_empty());
            files += 1;
            if c == q {
                assert_eq!(ex.len(), mono[langs.iter().position(|&l| l == c).unwrap()], "{c}");
            }
        }
    }
    assert_eq!(files, 49);
}
