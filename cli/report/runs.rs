//! Finding and reading finished run directories for the report.
//!
//! A run directory is one with a `results.json`; the directories given are searched
//! recursively (a sweep's output holds one per point), in sorted order. Each run is read into
//! its scores, its seed, its labels (the sweep point's axis values from `sweep_point.json`;
//! for a run not made by a sweep, `method` from the methods it trained) and its identity: the
//! configuration without the seed and the keys that do not change results, so that runs with
//! the same identity differ only in their seed.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use polyadapt::{Error, Result};

/// Keys that change no result (or are the seed itself): left out of a run's identity.
const NOT_IDENTITY: &[&str] = &["run.seed", "run.threads", "run.log_every", "run.checkpoint_every", "run.keep_checkpoints", "run.eval_every", "run.skip_bad"];

/// A label value: compared as a number when both are numbers, else as text.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub text: String,
    pub num: Option<f64>,
}

impl Label {
    pub fn text(s: impl Into<String>) -> Label {
        Label { text: s.into(), num: None }
    }

    fn from_json(v: &serde_json::Value) -> Label {
        match v {
            serde_json::Value::String(s) => Label::text(s.clone()),
            serde_json::Value::Number(n) => Label { text: n.to_string(), num: n.as_f64() },
            serde_json::Value::Array(a) => Label::text(a.iter().map(|x| Label::from_json(x).text).collect::<Vec<_>>().join("+")),
            other => Label::text(other.to_string()),
        }
    }
}

impl Eq for Label {}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Label {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.num, other.num) {
            (Some(a), Some(b)) => a.total_cmp(&b).then_with(|| self.text.cmp(&other.text)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.text.cmp(&other.text),
        }
    }
}

/// One evaluation set's scores in a run.
#[derive(Clone, Debug, Deserialize)]
pub struct Score {
    pub task: String,
    pub set: String,
    pub metrics: BTreeMap<String, f64>,
}

pub struct Run {
    pub dir: PathBuf,
    pub labels: Vec<(String, Label)>,
    pub seed: u64,
    pub identity: String,
    /// Every configuration key (`optim.lr`, `tasks[0].train.sample`) and its value.
    pub config: BTreeMap<String, Label>,
    pub scores: Vec<Score>,
}

/// The run directories under `roots`, sorted; unfinished runs are mentioned on standard
/// error and left out.
pub fn discover(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for root in roots {
        if !root.is_dir() {
            return Err(Error::Usage(format!("{}: not a directory (give run directories or a sweep's output directory)", root.display())));
        }
        walk(root, &mut found)?;
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(Error::Usage(format!("no finished run (a directory with results.json) under {}", roots.join(", "))));
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("results.json").is_file() {
        found.push(dir.to_path_buf());
        return Ok(());
    }
    if dir.join("config.toml").is_file() {
        eprintln!("{}: unfinished run (no results.json), left out", dir.display());
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    let mut subdirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    for d in subdirs {
        walk(&d, found)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct ResultsFile {
    #[serde(default)]
    methods: Vec<String>,
    eval: Vec<Score>,
}

#[derive(Deserialize)]
struct PointFile {
    labels: Vec<PointLabel>,
}

#[derive(Deserialize)]
struct PointLabel {
    axis: String,
    value: serde_json::Value,
}

/// Reads one run directory; a malformed file is an error naming it and the field.
pub fn load(dir: &Path) -> Result<Run> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let results: ResultsFile = serde_path_to_error::deserialize(&mut de).map_err(|e| Error::config(&path, e.path().to_string(), e.inner().to_string()))?;

    let cfg_path = dir.join("config.toml");
    let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io("cannot read", &cfg_path, e))?;
    let cfg: toml::Value = toml::from_str(&cfg_text).map_err(|e| Error::format(&cfg_path, e.to_string().trim().replace('\n', " ")))?;
    let seed = match cfg.get("run").and_then(|r| r.get("seed")) {
        None => 0,
        Some(v) => v.as_integer().filter(|&s| s >= 0).ok_or_else(|| Error::config(&cfg_path, "run.seed", "not a non-negative integer"))? as u64,
    };
    let mut config = BTreeMap::new();
    flatten(&cfg, String::new(), &mut config);
    let identity: Vec<String> = config.iter().filter(|(k, _)| !NOT_IDENTITY.contains(&k.as_str())).map(|(k, v)| format!("{k}={}", v.text)).collect();

    let point_path = dir.join("sweep_point.json");
    let labels = if point_path.is_file() {
        let t = std::fs::read_to_string(&point_path).map_err(|e| Error::io("cannot read", &point_path, e))?;
        let mut de = serde_json::Deserializer::from_str(&t);
        let p: PointFile = serde_path_to_error::deserialize(&mut de).map_err(|e| Error::config(&point_path, e.path().to_string(), e.inner().to_string()))?;
        p.labels.into_iter().map(|l| (l.axis, Label::from_json(&l.value))).collect()
    } else {
        let m = if results.methods.is_empty() { "full".to_string() } else { results.methods.join("+") };
        vec![("method".to_string(), Label::text(m))]
    };
    Ok(Run { dir: dir.to_path_buf(), labels, seed, identity: identity.join("\n"), config, scores: results.eval })
}

/// `a.b = 1`, `tasks[0].train.path = ...`; arrays of plain values stay one entry.
fn flatten(v: &toml::Value, key: String, out: &mut BTreeMap<String, Label>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                flatten(x, if key.is_empty() { k.clone() } else { format!("{key}.{k}") }, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, format!("{key}[{i}]"), out);
            }
        }
        toml::Value::Integer(n) => {
            out.insert(key, Label { text: n.to_string(), num: Some(*n as f64) });
        }
        toml::Value::Float(f) => {
            // Configurations store f32 values written out as f64 (0.003000000026077032):
            // shown as the f32 they are.
            let short = *f as f32;
            let text = if short as f64 == *f { format!("{short}") } else { v.to_string() };
            out.insert(key, Label { text, num: Some(*f) });
        }
        toml::Value::String(s) => {
            out.insert(key, Label::text(s.clone()));
        }
        other => {
            out.insert(key, Label::text(other.to_string()));
        }
    }
}
