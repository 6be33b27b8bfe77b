//! Reader for extractive-QA data in the SQuAD v1.1 JSON format (SQuAD, XQuAD, MLQA,
//! TyDiQA-GoldP):
//!
//! ```text
//! {"version": ..., "data": [{"title": ..., "paragraphs": [{"context": ...,
//!     "qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}
//! ```
//!
//! `answer_start` is a character offset (a Python `str` index: Unicode scalar values, not bytes
//! and not UTF-16 units), and `context[answer_start .. answer_start + len(text)]` must be the
//! answer text. The reader checks this for every answer, because an answer that does not sit
//! where it says would silently train the model on the wrong span.
//!
//! A record that breaks a rule (a missing or mistyped field, an answer that is not at its
//! offset, a question without answers, an empty answer) is an error that names the file, the
//! record (`data[a].paragraphs[p].qas[q]` and the question id) and the field. With
//! [`BadRecords::Skip`] the smallest enclosing record is skipped instead (a question; a paragraph
//! whose `context` or `qas` is bad; an article whose `paragraphs` is bad), and each skip is
//! reported in [`SquadSet::skipped`]. JSON syntax errors are always errors, with serde_json's
//! line and column. `title` is optional (TyDiQA-GoldP has none); unknown fields are ignored.
//!
//! Question ids are not assumed unique: the TyDiQA-GoldP training files on this machine reuse
//! small integers ("0", "1", ...) across articles, so downstream code keys examples by index.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::engine::error::{Error, Result};

/// One reference answer: its text and the character offset where it starts in the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub start_char: usize,
}

impl Answer {
    /// One past the answer's last character in the context.
    pub fn end_char(&self) -> usize {
        self.start_char + self.text.chars().count()
    }
}

/// One question with its context and reference answers (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaExample {
    pub id: String,
    pub title: Option<String>,
    pub question: String,
    pub context: String,
    pub answers: Vec<Answer>,
}

/// What to do with a record that breaks the format's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecords {
    /// Stop with an error naming the file, the record and the field.
    Error,
    /// Skip the record, count and describe it in [`SquadSet::skipped`] (`--skip-bad`).
    Skip,
}

/// The examples of one file, in file order, and the records skipped under [`BadRecords::Skip`].
#[derive(Clone, Debug)]
pub struct SquadSet {
    pub path: PathBuf,
    pub examples: Vec<QaExample>,
    /// One line per skipped record: where it is and what is wrong (the error's message).
    pub skipped: Vec<String>,
}

/// Reads a SQuAD v1.1 JSON file.
pub fn read_squad(path: &Path, bad: BadRecords) -> Result<SquadSet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    parse_squad(&text, path, bad)
}

/// Parses the text of a SQuAD v1.1 JSON file; `path` names it in errors.
pub fn parse_squad(text: &str, path: &Path, bad: BadRecords) -> Result<SquadSet> {
    let root: Value = serde_json::from_str(text).map_err(|e| invalid_json(path, 0, &e))?;
    let mut reader = Reader { path, bad, set: SquadSet { path: path.to_path_buf(), examples: Vec::new(), skipped: Vec::new() } };
    // A file without a `data` list is not a SQuAD file at all: never skippable.
    let articles = root
        .as_object()
        .ok_or_else(|| reader.error("the file", "data", "the top level must be an object"))?
        .get("data")
        .ok_or_else(|| reader.error("the file", "data", "missing"))?
        .as_array()
        .ok_or_else(|| reader.error("the file", "data", "expected a list of articles"))?;
    for (a, article) in articles.iter().enumerate() {
        let at = format!("data[{a}]");
        let result = reader.article(article, &at);
        reader.keep_or_skip(result)?;
    }
    Ok(reader.set)
}

struct Reader<'a> {
    path: &'a Path,
    bad: BadRecords,
    set: SquadSet,
}

impl Reader<'_> {
    fn error(&self, record: &str, field: &str, what: impl std::fmt::Display) -> Error {
        Error::format(self.path, format!("{record}: field `{field}`: {what}"))
    }

    /// Passes an error on, or under [`BadRecords::Skip`] records it and carries on.
    fn keep_or_skip(&mut self, result: Result<()>) -> Result<()> {
        match (result, self.bad) {
            (Err(e), BadRecords::Skip) => {
                self.set.skipped.push(match &e {
                    Error::Format { msg, .. } => msg.clone(),
                    other => other.to_string(),
                });
                Ok(())
            }
            (r, _) => r,
        }
    }

    fn article(&mut self, article: &Value, at: &str) -> Result<()> {
        let obj = article.as_object().ok_or_else(|| self.error(at, "paragraphs", "the article must be an object"))?;
        let title = match obj.get("title") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(self.error(at, "title", format!("expected a string, found {}", kind(other)))),
        };
        let paragraphs = self.list(obj, "paragraphs", at)?;
        for (p, paragraph) in paragraphs.iter().enumerate() {
            let at = format!("{at}.paragraphs[{p}]");
            let result = self.paragraph(paragraph, &at, &title);
            self.keep_or_skip(result)?;
        }
        Ok(())
    }

    fn paragraph(&mut self, paragraph: &Value, at: &str, title: &Option<String>) -> Result<()> {
        let obj = paragraph.as_object().ok_or_else(|| self.error(at, "context", "the paragraph must be an object"))?;
        let context = self.string(obj, "context", at)?;
        let qas = self.list(obj, "qas", at)?;
        let char_bytes = char_starts(context);
        for (q, qa) in qas.iter().enumerate() {
            let at = format!("{at}.qas[{q}]");
            let result = self.question(qa, &at, title, context, &char_bytes).map(|ex| self.set.examples.push(ex));
            self.keep_or_skip(result)?;
        }
        Ok(())
    }

    fn question(&self, qa: &Value, at: &str, title: &Option<String>, context: &str, char_bytes: &[usize]) -> Result<QaExample> {
        let obj = qa.as_object().ok_or_else(|| self.error(at, "id", "the question must be an object"))?;
        let id = self.string(obj, "id", at)?.to_string();
        let at = format!("{at} (question id `{id}`)");
        let question = self.string(obj, "question", &at)?.to_string();
        let list = self.list(obj, "answers", &at)?;
        if list.is_empty() {
            return Err(self.error(&at, "answers", "empty: SQuAD v1.1 questions are answerable"));
        }
        let mut answers = Vec::with_capacity(list.len());
        for (i, answer) in list.iter().enumerate() {
            let field = |name: &str| format!("answers[{i}].{name}");
            let obj = answer.as_object().ok_or_else(|| self.error(&at, &format!("answers[{i}]"), "expected an object"))?;
            let text = obj
                .get("text")
                .ok_or_else(|| self.error(&at, &field("text"), "missing"))?
                .as_str()
                .ok_or_else(|| self.error(&at, &field("text"), "expected a string"))?;
            if text.is_empty() {
                return Err(self.error(&at, &field("text"), "empty"));
            }
            let start = obj.get("answer_start").ok_or_else(|| self.error(&at, &field("answer_start"), "missing"))?;
            let start_char = start
                .as_u64()
                .ok_or_else(|| self.error(&at, &field("answer_start"), format!("expected a non-negative integer, found {start}")))?
                as usize;
            if let Some(what) = answer_mismatch(context, char_bytes, text, start_char) {
                return Err(self.error(&at, &field("answer_start"), what));
            }
            answers.push(Answer { text: text.to_string(), start_char });
        }
        Ok(QaExample { id, title: title.clone(), question, context: context.to_string(), answers })
    }

    fn string<'v>(&self, obj: &'v Map<String, Value>, field: &str, at: &str) -> Result<&'v str> {
        match obj.get(field) {
            None => Err(self.error(at, field, "missing")),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(at, field, format!("expected a string, found {}", kind(other)))),
        }
    }

    fn list<'v>(&self, obj: &'v Map<String, Value>, field: &str, at: &str) -> Result<&'v Vec<Value>> {
        match obj.get(field) {
            None => Err(self.error(at, field, "missing")),
            Some(Value::Array(v)) => Ok(v),
            Some(other) => Err(self.error(at, field, format!("expected a list, found {}", kind(other)))),
        }
    }
}

/// A JSON syntax error as an input error at serde_json's line (plus `line_offset`, for text
/// that starts inside a file) and column.
pub(crate) fn invalid_json(path: &Path, line_offset: usize, e: &serde_json::Error) -> Error {
    // serde_json's message ends with the position, which the error already leads with.
    let full = e.to_string();
    let what = full.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&full).to_string();
    Error::Input { path: path.to_path_buf(), line: line_offset + e.line(), msg: format!("column {}: invalid JSON: {what}", e.column()) }
}

/// Byte position of every character of `s` and of its end, so that character offsets can be
/// checked without rescanning the text for each answer.
pub(crate) fn char_starts(s: &str) -> Vec<usize> {
    s.char_indices().map(|(b, _)| b).chain([s.len()]).collect()
}

/// Why `text` is not at character `start_char` of `context` (`char_bytes` from
/// [`char_starts`]), or `None` when it is.
pub(crate) fn answer_mismatch(context: &str, char_bytes: &[usize], text: &str, start_char: usize) -> Option<String> {
    let len = text.chars().count();
    let end = start_char.checked_add(len).and_then(|e| char_bytes.get(e));
    match char_bytes.get(start_char).zip(end).map(|(&b0, &b1)| &context[b0..b1]) {
        Some(found) if found == text => None,
        Some(found) => Some(format!("the context has {found:?} at character {start_char}, not the answer {text:?}")),
        None => Some(format!("{start_char} + {len} characters runs past the context ({} characters)", char_bytes.len() - 1)),
    }
}

/// What a JSON value is, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
