//! Sentence-pair classification data in TSV (PAWS-X, XNLI): one pair per line,
//! `sentence1 <TAB> sentence2 <TAB> label`, or `id <TAB> sentence1 <TAB> sentence2 <TAB> label`,
//! with or without a header line (one whose last field is `label` or `gold_label`).
//!
//! Labels are given by the caller in order; a line with an unknown label, the wrong number of
//! fields or an empty sentence is an error naming the file, the line and the field, or under
//! [`BadRecords::Skip`] a skipped line, counted and described in [`PairSet::skipped`].

use std::path::{Path, PathBuf};

use crate::data::squad::BadRecords;
use crate::engine::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairExample {
    /// Line number in the file (1-based): the item's identity across parallel files.
    pub line: usize,
    /// The record's own id, when it has one (a 4-column TSV's first field, a JSONL `id`).
    pub id: Option<String>,
    pub first: String,
    pub second: String,
    /// Index into the label list.
    pub label: usize,
}

#[derive(Clone, Debug)]
pub struct PairSet {
    pub path: PathBuf,
    pub examples: Vec<PairExample>,
    /// One line per skipped record under [`BadRecords::Skip`]: where it is and what is wrong.
    pub skipped: Vec<String>,
}

pub fn read_pairs(path: &Path, labels: &[String], bad: BadRecords) -> Result<PairSet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    parse_pairs(&text, path, labels, bad)
}

pub fn parse_pairs(text: &str, path: &Path, labels: &[String], on_bad: BadRecords) -> Result<PairSet> {
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw, line, path, labels, examples.is_empty() && !header_seen) {
            Ok(Line::Blank) => {}
            Ok(Line::Header) => header_seen = true,
            Ok(Line::Pair(e)) => examples.push(e),
            Err(e) if on_bad == BadRecords::Skip => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(PairSet { path: path.to_path_buf(), examples, skipped })
}

enum Line {
    Blank,
    Header,
    Pair(PairExample),
}

fn parse_line(raw: &str, line: usize, path: &Path, labels: &[String], may_be_header: bool) -> Result<Line> {
    let bad = |line: usize, msg: String| Error::Input { path: path.to_path_buf(), line, msg };
    {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            return Ok(Line::Blank);
        }
        let fields: Vec<&str> = raw.split('\t').collect();
        let (id, first, second, label) = match fields.as_slice() {
            [a, b, l] => (None, *a, *b, l.trim()),
            [id, a, b, l] => (Some(id.trim().to_string()), *a, *b, l.trim()),
            _ => return Err(bad(line, format!("expected 3 or 4 tab-separated fields, found {}", fields.len()))),
        };
        if may_be_header && matches!(label, "label" | "gold_label") {
            return Ok(Line::Header);
        }
        let label = labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| bad(line, format!("field `label`: `{label}` is not one of {}", labels.join(", "))))?;
        for (name, s) in [("sentence1", first), ("sentence2", second)] {
            if s.trim().is_empty() {
                return Err(bad(line, format!("field `{name}` is empty")));
            }
        }
        Ok(Line::Pair(PairExample { line, id, first: first.to_string(), second: second.to_string(), label }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["0".into(), "1".into()]
    }

    #[test]
    fn three_and_four_columns_with_and_without_header() {
        let p = Path::new("x.tsv");
        let a = parse_pairs("s a\ts b\t1\nc\td\t0\n", p, &labels(), BadRecords::Error).unwrap();
        assert_eq!(a.examples.len(), 2);
        assert_eq!((a.examples[0].label, a.examples[1].line), (1, 2));
        let b = parse_pairs("id\tsentence1\tsentence2\tlabel\r\n7\tx\ty\t0\r\n", p, &labels(), BadRecords::Error).unwrap();
        assert_eq!(b.examples, vec![PairExample { line: 2, id: Some("7".into()), first: "x".into(), second: "y".into(), label: 0 }]);
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let p = Path::new("x.tsv");
        let e = parse_pairs("a\tb\t1\nonly one field\n", p, &labels(), BadRecords::Error).unwrap_err().to_string();
        assert!(e.contains("x.tsv:2") && e.contains("3 or 4"), "{e}");
        let e = parse_pairs("a\tb\tmaybe\n", p, &labels(), BadRecords::Error).unwrap_err().to_string();
        assert!(e.contains("x.tsv:1") && e.contains("field `label`") && e.contains("maybe"), "{e}");
        let e = parse_pairs("a\t \t1\n", p, &labels(), BadRecords::Error).unwrap_err().to_string();
        assert!(e.contains("field `sentence2`"), "{e}");
    }

    #[test]
    fn skipping_counts_and_describes_bad_lines() {
        let p = Path::new("x.tsv");
        let s = parse_pairs("sentence1\tsentence2\tlabel\na\tb\t1\nonly one\nc\td\tmaybe\ne\tf\t0\n", p, &labels(), BadRecords::Skip).unwrap();
        assert_eq!(s.examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(s.skipped.len(), 2);
        assert!(s.skipped[0].contains("x.tsv:3") && s.skipped[1].contains("x.tsv:4") && s.skipped[1].contains("maybe"), "{:?}", s.skipped);
    }
}
