//! JSON Lines: a data form a user can write by hand or with any JSON library, one record per
//! line, for each kind of task the engine trains.
//!
//! Extractive QA (the same rules as SQuAD v1.1, see [`crate::data::squad`]):
//!
//! ```text
//! {"id": "q1", "question": "Who?", "context": "Ada wrote it.", "answers": [{"text": "Ada", "answer_start": 0}]}
//! ```
//!
//! `answer_start` counts characters (Unicode scalar values, Python's `str` index), not bytes,
//! and `context[answer_start .. answer_start + len(text)]` must be the answer's text. `answers`
//! may also be the column form that Hugging Face `datasets` writes,
//! `{"text": [..], "answer_start": [..]}`. `title` is optional.
//!
//! Sentence pairs (the label is one of the task's `labels`; a number is taken as its decimal
//! text, so `"label": 1` matches the label `"1"`):
//!
//! ```text
//! {"sentence1": "...", "sentence2": "...", "label": "1"}
//! ```
//!
//! Generation / instruction examples (`output` is one reference or a list of them, a number
//! taken as its JSON text as in Super-NaturalInstructions; `definition`, the task's
//! instruction, is optional):
//!
//! ```text
//! {"input": "...", "output": "..." or ["...", "..."], "definition": "..."}
//! ```
//!
//! In every form `id` (a string or an integer) is optional and defaults to the line number;
//! records of parallel files (the alignment loss's source and target) are paired by `id`.
//! Unknown fields are ignored. Blank lines are skipped. A bad line (invalid UTF-8 or JSON, not
//! an object, a field missing, of the wrong type or with a bad value) is an error naming the
//! file, the line and the field (with serde_json's column for invalid JSON); under
//! [`BadRecords::Skip`] it is skipped instead and described in the set's `skipped`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::data::pairs::{PairExample, PairSet};
use crate::data::squad::{answer_mismatch, char_starts, invalid_json, kind, Answer, BadRecords, QaExample, SquadSet};
use crate::engine::error::{Error, Result};

/// One generation example: an input, its reference outputs (at least one) and the task's
/// instruction when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenExample {
    pub id: String,
    pub definition: Option<String>,
    pub input: String,
    pub outputs: Vec<String>,
}

/// The generation examples of one file and the records skipped under [`BadRecords::Skip`].
#[derive(Clone, Debug)]
pub struct GenSet {
    pub path: PathBuf,
    pub examples: Vec<GenExample>,
    pub skipped: Vec<String>,
}

/// Parses extractive-QA records.
pub fn parse_qa_jsonl(bytes: &[u8], path: &Path, bad: BadRecords) -> Result<SquadSet> {
    let mut set = SquadSet { path: path.to_path_buf(), examples: Vec::new(), skipped: Vec::new() };
    for_each_record(bytes, path, bad, &mut set.skipped, |line, obj| {
        set.examples.push(qa_record(obj, line)?);
        Ok(())
    })?;
    Ok(set)
}

/// Parses sentence-pair records; `labels` are the task's labels in order.
pub fn parse_pair_jsonl(bytes: &[u8], path: &Path, labels: &[String], bad: BadRecords) -> Result<PairSet> {
    let mut set = PairSet { path: path.to_path_buf(), examples: Vec::new(), skipped: Vec::new() };
    for_each_record(bytes, path, bad, &mut set.skipped, |line, obj| {
        set.examples.push(pair_record(obj, line, labels)?);
        Ok(())
    })?;
    Ok(set)
}

/// Parses generation records.
pub fn parse_gen_jsonl(bytes: &[u8], path: &Path, bad: BadRecords) -> Result<GenSet> {
    let mut set = GenSet { path: path.to_path_buf(), examples: Vec::new(), skipped: Vec::new() };
    for_each_record(bytes, path, bad, &mut set.skipped, |line, obj| {
        set.examples.push(gen_record(obj, line)?);
        Ok(())
    })?;
    Ok(set)
}

/// Hands every non-blank line's JSON object and its (1-based) number to `record`; a line that
/// fails, here or in `record`, stops the read or is skipped and described in `skipped`.
fn for_each_record(
    bytes: &[u8],
    path: &Path,
    bad: BadRecords,
    skipped: &mut Vec<String>,
    mut record: impl FnMut(usize, &Map<String, Value>) -> std::result::Result<(), String>,
) -> Result<()> {
    let input = |line: usize, msg: String| Error::Input { path: path.to_path_buf(), line, msg };
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let result = std::str::from_utf8(raw)
            .map_err(|e| input(line, format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to())))
            .and_then(|text| {
                if text.trim().is_empty() {
                    return Ok(());
                }
                let value: Value = serde_json::from_str(text).map_err(|e| invalid_json(path, line - 1, &e))?;
                let obj = value.as_object().ok_or_else(|| input(line, format!("expected a JSON object, found {}", kind(&value))))?;
                record(line, obj).map_err(|msg| input(line, msg))
            });
        match (result, bad) {
            (Err(e), BadRecords::Skip) => skipped.push(e.to_string()),
            (r, _) => r?,
        }
    }
    Ok(())
}

fn qa_record(obj: &Map<String, Value>, line: usize) -> std::result::Result<QaExample, String> {
    let id = id_field(obj, line)?;
    let title = opt_string(obj, "title")?.map(str::to_string);
    let question = string(obj, "question")?.to_string();
    let context = string(obj, "context")?;
    let pairs = answer_pairs(obj)?;
    if pairs.is_empty() {
        return Err("field `answers`: empty: SQuAD v1.1 questions are answerable".into());
    }
    let char_bytes = char_starts(context);
    let mut answers = Vec::with_capacity(pairs.len());
    for (text_field, text, start_field, start) in pairs {
        let text = text.ok_or(format!("field `{text_field}`: missing"))?;
        let text = text.as_str().ok_or_else(|| format!("field `{text_field}`: expected a string, found {}", kind(text)))?;
        if text.is_empty() {
            return Err(format!("field `{text_field}`: empty"));
        }
        let start = start.ok_or(format!("field `{start_field}`: missing"))?;
        let start_char =
            start.as_u64().ok_or_else(|| format!("field `{start_field}`: expected a non-negative integer, found {start}"))? as usize;
        if let Some(what) = answer_mismatch(context, &char_bytes, text, start_char) {
            return Err(format!("field `{start_field}`: {what}"));
        }
        answers.push(Answer { text: text.to_string(), start_char });
    }
    Ok(QaExample { id, title, question, context: context.to_string(), answers })
}

/// Each answer's text and start with their field names, from the list form
/// (`answers[i].text`) or the column form (`answers.text[i]`).
type AnswerFields<'v> = (String, Option<&'v Value>, String, Option<&'v Value>);

fn answer_pairs(obj: &Map<String, Value>) -> std::result::Result<Vec<AnswerFields<'_>>, String> {
    match obj.get("answers") {
        None => Err("field `answers`: missing".into()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = a.as_object().ok_or_else(|| format!("field `answers[{i}]`: expected an object, found {}", kind(a)))?;
                Ok((format!("answers[{i}].text"), a.get("text"), format!("answers[{i}].answer_start"), a.get("answer_start")))
            })
            .collect(),
        Some(Value::Object(cols)) => {
            let column = |name: &str| match cols.get(name) {
                None => Err(format!("field `answers.{name}`: missing")),
                Some(Value::Array(v)) => Ok(v),
                Some(other) => Err(format!("field `answers.{name}`: expected a list, found {}", kind(other))),
            };
            let (texts, starts) = (column("text")?, column("answer_start")?);
            if texts.len() != starts.len() {
                return Err(format!("field `answers.answer_start`: {} entries for the {} of `answers.text`", starts.len(), texts.len()));
            }
            Ok((0..texts.len())
                .map(|i| (format!("answers.text[{i}]"), Some(&texts[i]), format!("answers.answer_start[{i}]"), Some(&starts[i])))
                .collect())
        }
        Some(other) => Err(format!("field `answers`: expected a list, found {}", kind(other))),
    }
}

fn pair_record(obj: &Map<String, Value>, line: usize, labels: &[String]) -> std::result::Result<PairExample, String> {
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(id_field(obj, line)?),
    };
    let mut sentences = Vec::with_capacity(2);
    for name in ["sentence1", "sentence2"] {
        let s = string(obj, name)?;
        if s.trim().is_empty() {
            return Err(format!("field `{name}`: empty"));
        }
        sentences.push(s.to_string());
    }
    let label = match obj.get("label") {
        None => return Err("field `label`: missing".into()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => return Err(format!("field `label`: expected a string or an integer, found {}", kind(other))),
    };
    let label = labels.iter().position(|l| *l == label).ok_or_else(|| format!("field `label`: `{label}` is not one of {}", labels.join(", ")))?;
    let second = sentences.pop().expect("two sentences");
    let first = sentences.pop().expect("two sentences");
    Ok(PairExample { line, id, first, second, label })
}

fn gen_record(obj: &Map<String, Value>, line: usize) -> std::result::Result<GenExample, String> {
    let id = id_field(obj, line)?;
    let definition = opt_string(obj, "definition")?.map(str::to_string);
    let input = string(obj, "input")?.to_string();
    let outputs = match obj.get("output") {
        None => return Err("field `output`: missing".into()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Number(n)) => vec![n.to_string()],
        Some(Value::Array(list)) if list.is_empty() => return Err("field `output`: an empty list: give at least one reference".into()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("field `output[{i}]`: expected a string or a number, found {}", kind(other))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("field `output`: expected a string, a number or a list of them, found {}", kind(other))),
    };
    if let Some(i) = outputs.iter().position(|o| o.trim().is_empty()) {
        return Err(if obj.get("output").is_some_and(Value::is_array) { format!("field `output[{i}]`: empty") } else { "field `output`: empty".into() });
    }
    Ok(GenExample { id, definition, input, outputs })
}

/// The record's `id` (a string, or an integer taken as its decimal text), else its line number.
fn id_field(obj: &Map<String, Value>, line: usize) -> std::result::Result<String, String> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(line.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(format!("field `id`: expected a string or an integer, found {}", kind(other))),
    }
}

fn string<'v>(obj: &'v Map<String, Value>, field: &str) -> std::result::Result<&'v str, String> {
    match obj.get(field) {
        None => Err(format!("field `{field}`: missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("field `{field}`: expected a string, found {}", kind(other))),
    }
}

fn opt_string<'v>(obj: &'v Map<String, Value>, field: &str) -> std::result::Result<Option<&'v str>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(obj, field).map(Some),
    }
}
