//! One entry point per kind of data, whatever the file's format: a training configuration names
//! a path, and the format is chosen from its extension or, failing that, its content.
//!
//! - `.jsonl` or `.ndjson`: JSON Lines ([`crate::data::jsonl`]).
//! - Otherwise the first non-blank line decides. A complete JSON object on it is a JSON Lines
//!   record, unless it has a top-level `data` (a SQuAD file written on one line, as TyDiQA's
//!   are) or `Instances` (a Super-NaturalInstructions task). A line that only starts a JSON
//!   value (`{` or `[`, and no tab: a pretty-printed file) begins a JSON document. Anything
//!   else is TSV.
//!   (Hugging Face `datasets` writes JSON Lines under a `.json` name by default, hence the
//!   look at the content.)
//!
//! | reader | JSON document | JSON Lines | TSV |
//! |---|---|---|---|
//! | [`read_qa_data`] | SQuAD v1.1 | QA records | error |
//! | [`read_pair_data`] | error | pair records | [`crate::data::pairs`] |
//! | [`read_gen_data`] | a Super-NaturalInstructions task | generation records | error |

use std::path::Path;

use serde::de::IgnoredAny;

use crate::data::jsonl::{parse_gen_jsonl, parse_pair_jsonl, parse_qa_jsonl, GenSet};
use crate::data::niv2::parse_task;
use crate::data::pairs::{parse_pairs, PairSet};
use crate::data::squad::{parse_squad, BadRecords, SquadSet};
use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// One JSON value for the whole file (SQuAD, a Super-NaturalInstructions task).
    JsonDocument,
    JsonLines,
    Tsv,
}

/// The top-level keys that make a one-line JSON object a whole document rather than a record.
/// Values are skipped without being built, so probing a 20 MB one-line SQuAD file is cheap.
#[derive(serde::Deserialize)]
struct Probe {
    data: Option<IgnoredAny>,
    #[serde(rename = "Instances")]
    instances: Option<IgnoredAny>,
}

/// The format of the file at `path` with contents `bytes` (see the module documentation).
pub fn detect_format(path: &Path, bytes: &[u8]) -> DataFormat {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("jsonl" | "ndjson")) {
        return DataFormat::JsonLines;
    }
    let first = bytes.split(|&b| b == b'\n').find(|l| !l.trim_ascii().is_empty()).unwrap_or(&[]);
    let Ok(first) = std::str::from_utf8(first) else {
        return DataFormat::Tsv;
    };
    match serde_json::from_str::<Probe>(first) {
        Ok(Probe { data: None, instances: None }) => DataFormat::JsonLines,
        Ok(_) => DataFormat::JsonDocument,
        // A tab cannot be inside a JSON string and is rare between JSON tokens: a TSV line
        // whose first sentence starts with a bracket.
        Err(_) if first.contains('\t') => DataFormat::Tsv,
        Err(_) if first.trim_start().starts_with(['{', '[']) => DataFormat::JsonDocument,
        Err(_) => DataFormat::Tsv,
    }
}

/// Extractive-QA examples from a SQuAD v1.1 JSON file or a JSON Lines file.
pub fn read_qa_data(path: &Path, bad: BadRecords) -> Result<SquadSet> {
    let bytes = read(path)?;
    match detect_format(path, &bytes) {
        DataFormat::JsonLines => parse_qa_jsonl(&bytes, path, bad),
        DataFormat::JsonDocument => parse_squad(utf8(&bytes, path)?, path, bad),
        DataFormat::Tsv => Err(not_for(path, "extractive-QA", "SQuAD v1.1 JSON or JSON Lines")),
    }
}

/// Sentence pairs from a TSV or JSON Lines file; `labels` are the task's labels in order.
pub fn read_pair_data(path: &Path, labels: &[String], bad: BadRecords) -> Result<PairSet> {
    let bytes = read(path)?;
    match detect_format(path, &bytes) {
        DataFormat::Tsv => parse_pairs(utf8(&bytes, path)?, path, labels, bad),
        // A pair file that starts like JSON but does not parse is bad JSON Lines: its
        // first line's error is the useful one.
        DataFormat::JsonLines | DataFormat::JsonDocument => parse_pair_jsonl(&bytes, path, labels, bad),
    }
}

/// Generation examples from a JSON Lines file or a Super-NaturalInstructions task file (all its
/// instances, each with the task's definition).
pub fn read_gen_data(path: &Path, bad: BadRecords) -> Result<GenSet> {
    let bytes = read(path)?;
    match detect_format(path, &bytes) {
        DataFormat::JsonLines => parse_gen_jsonl(&bytes, path, bad),
        DataFormat::JsonDocument => {
            let task = parse_task(utf8(&bytes, path)?, path, bad)?;
            let all: Vec<usize> = (0..task.instances.len()).collect();
            Ok(GenSet { path: path.to_path_buf(), examples: task.examples(&all), skipped: task.skipped })
        }
        DataFormat::Tsv => Err(not_for(path, "generation", "JSON Lines or a Super-NaturalInstructions task JSON")),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))
}

/// The file as text; invalid UTF-8 is an error naming the line.
fn utf8<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        Error::Input {
            path: path.to_path_buf(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            msg: format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() - line_start),
        }
    })
}

fn not_for(path: &Path, what: &str, expected: &str) -> Error {
    Error::format(path, format!("not {what} data: expected {expected} (a `.jsonl` name or a JSON first line)"))
}
