//! Reader for Super-NaturalInstructions v2 task files (Wang et al. 2022): one JSON object per
//! task,
//!
//! ```text
//! {"Definition": ["..."], "Categories": [..], "Input_language": [..], "Output_language": [..],
//!  "Instruction_language": [..],
//!  "Positive Examples": [{"input": .., "output": .., "explanation": ..}], "Negative Examples": [..],
//!  "Instances": [{"id": .., "input": .., "output": ["..", ..]}], ...}
//! ```
//!
//! and the split files (`splits/<name>/test_tasks.txt`: one task name per line). `Definition`,
//! `Positive Examples` and `Instances` are required; `Negative Examples`, `Categories` and the
//! language lists may be absent; other fields (Source, URL, Domains, ...) are ignored. As in the
//! official code only the first `Definition` is used. A demonstration's `output` is one string,
//! an instance's a non-empty list of references (a number among them, as the arithmetic tasks
//! have, is taken as its JSON text: `[18]` is the reference "18").
//!
//! A bad field is an error naming the file and the record (`Instances[12]`, `Positive
//! Examples[0]`) and field; under [`BadRecords::Skip`] a bad instance or demonstration is
//! skipped instead and described in [`NivTask::skipped`]. Bad task-level fields always stop.
//!
//! [`split_instances`] draws the seeded train/test split the instruction-tuning experiments use
//! (8:2 of at most a few hundred instances per task).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::data::jsonl::GenExample;
use crate::data::sampling::sample_n;
use crate::data::squad::{invalid_json, kind, BadRecords};
use crate::data::text::read_lines;
use crate::engine::error::{Error, Result};

/// A worked example shown with the instruction (few-shot prompting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demo {
    pub input: String,
    pub output: String,
    pub explanation: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub input: String,
    /// Reference outputs, at least one.
    pub outputs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct NivTask {
    pub path: PathBuf,
    /// The file name without `.json` (`task1239_ted_translation_gl_ja`).
    pub name: String,
    pub definition: String,
    pub categories: Vec<String>,
    pub input_language: Vec<String>,
    pub output_language: Vec<String>,
    pub instruction_language: Vec<String>,
    pub positive: Vec<Demo>,
    pub negative: Vec<Demo>,
    pub instances: Vec<Instance>,
    /// One line per record skipped under [`BadRecords::Skip`].
    pub skipped: Vec<String>,
}

/// Indices into a task's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSplit {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Reads a task file.
pub fn read_task(path: &Path, bad: BadRecords) -> Result<NivTask> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    parse_task(&text, path, bad)
}

/// Parses the text of a task file; `path` names it in errors and gives the task its name.
pub fn parse_task(text: &str, path: &Path, bad: BadRecords) -> Result<NivTask> {
    let root: Value = serde_json::from_str(text).map_err(|e| invalid_json(path, 0, &e))?;
    let err = |field: &str, what: String| Error::format(path, format!("field `{field}`: {what}"));
    let obj = root.as_object().ok_or_else(|| err("Definition", format!("the top level must be an object, found {}", kind(&root))))?;
    let definition = match obj.get("Definition") {
        None => return Err(err("Definition", "missing".into())),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(v)) => match v.first() {
            None => return Err(err("Definition", "an empty list".into())),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err("Definition[0]", format!("expected a string, found {}", kind(other)))),
        },
        Some(other) => return Err(err("Definition", format!("expected a list of strings, found {}", kind(other)))),
    };
    let strings = |field: &str| -> Result<Vec<String>> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(v)) => v
                .iter()
                .enumerate()
                .map(|(i, s)| s.as_str().map(str::to_string).ok_or_else(|| err(&format!("{field}[{i}]"), format!("expected a string, found {}", kind(s)))))
                .collect(),
            Some(other) => Err(err(field, format!("expected a list of strings, found {}", kind(other)))),
        }
    };
    let records = |field: &str, required: bool| -> Result<&[Value]> {
        match obj.get(field) {
            None if !required => Ok(&[]),
            None => Err(err(field, "missing".into())),
            Some(Value::Array(v)) => Ok(v),
            Some(other) => Err(err(field, format!("expected a list, found {}", kind(other)))),
        }
    };
    let mut task = NivTask {
        path: path.to_path_buf(),
        name: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        definition,
        categories: strings("Categories")?,
        input_language: strings("Input_language")?,
        output_language: strings("Output_language")?,
        instruction_language: strings("Instruction_language")?,
        positive: Vec::new(),
        negative: Vec::new(),
        instances: Vec::new(),
        skipped: Vec::new(),
    };
    let mut keep = |result: std::result::Result<(), String>, at: String| match (result, bad) {
        (Ok(()), _) => Ok(()),
        (Err(what), BadRecords::Skip) => {
            task.skipped.push(format!("{at}: {what}"));
            Ok(())
        }
        (Err(what), BadRecords::Error) => Err(Error::format(path, format!("{at}: {what}"))),
    };
    let (mut positive, mut negative, mut instances) = (Vec::new(), Vec::new(), Vec::new());
    for (field, out) in [("Positive Examples", &mut positive), ("Negative Examples", &mut negative)] {
        for (i, v) in records(field, field == "Positive Examples")?.iter().enumerate() {
            keep(demo(v).map(|d| out.push(d)), format!("{field}[{i}]"))?;
        }
    }
    for (i, v) in records("Instances", true)?.iter().enumerate() {
        keep(instance(v).map(|x| instances.push(x)), format!("Instances[{i}]"))?;
    }
    (task.positive, task.negative, task.instances) = (positive, negative, instances);
    Ok(task)
}

fn demo(v: &Value) -> std::result::Result<Demo, String> {
    let obj = record(v)?;
    let explanation = match obj.get("explanation") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string(obj, "explanation")?),
    };
    Ok(Demo { input: string(obj, "input")?, output: string(obj, "output")?, explanation })
}

fn instance(v: &Value) -> std::result::Result<Instance, String> {
    let obj = record(v)?;
    let id = string(obj, "id")?;
    let input = string(obj, "input")?;
    let outputs = match obj.get("output") {
        None => return Err("field `output`: missing".into()),
        Some(Value::Array(v)) if v.is_empty() => return Err("field `output`: an empty list: an instance needs a reference".into()),
        Some(Value::Array(v)) => v
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(s) if s.trim().is_empty() => Err(format!("field `output[{i}]`: empty")),
                Value::String(s) => Ok(s.clone()),
                // The arithmetic tasks (task1759_gsm, task1761_svamp) give bare numbers.
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("field `output[{i}]`: expected a string or a number, found {}", kind(other))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("field `output`: expected a list of strings, found {}", kind(other))),
    };
    Ok(Instance { id, input, outputs })
}

fn record(v: &Value) -> std::result::Result<&Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("expected an object, found {}", kind(v)))
}

fn string(obj: &Map<String, Value>, field: &str) -> std::result::Result<String, String> {
    match obj.get(field) {
        None => Err(format!("field `{field}`: missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field `{field}`: expected a string, found {}", kind(other))),
    }
}

impl NivTask {
    /// Instances `idx` as generation examples, each with the task's definition.
    pub fn examples(&self, idx: &[usize]) -> Vec<GenExample> {
        idx.iter()
            .map(|&i| {
                let x = &self.instances[i];
                GenExample { id: x.id.clone(), definition: Some(self.definition.clone()), input: x.input.clone(), outputs: x.outputs.clone() }
            })
            .collect()
    }

    /// [`split_instances`] of this task's instances, with the run's `seed` mixed with the task's
    /// name so that tasks of one run get unrelated draws.
    pub fn split(&self, train_fraction: f64, max_train: Option<usize>, seed: u64) -> Result<InstanceSplit> {
        // FNV-1a: a stable hash (std's is not guaranteed across releases).
        let name_hash = self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        split_instances(self.instances.len(), train_fraction, max_train, seed ^ name_hash)
            .map_err(|e| e.context(format!("splitting the instances of {}", self.path.display())))
    }
}

/// A seeded train/test split of `total` instances: `train_fraction` of them for training (8:2
/// is 0.8), rounded to the nearest count. With `max_train`, only as many instances are used as
/// keep the training part within it at the same ratio (`max_train` 400 at 0.8 uses 500
/// instances: 400 train, 100 test); the rest are in neither part. Both parts ascending.
pub fn split_instances(total: usize, train_fraction: f64, max_train: Option<usize>, seed: u64) -> Result<InstanceSplit> {
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(Error::Usage(format!("the training fraction of a split must be strictly between 0 and 1, not {train_fraction}")));
    }
    let used = match max_train {
        Some(m) => total.min((m as f64 / train_fraction).floor() as usize),
        None => total,
    };
    let n_train = ((used as f64 * train_fraction).round() as usize).min(max_train.unwrap_or(usize::MAX));
    // Which instances are used, then which of those train: two draws from one seed.
    let chosen = sample_n(total, used, seed)?.train;
    let part = sample_n(used, n_train, seed ^ 0x5e1e_c7ed)?;
    Ok(InstanceSplit { train: part.train.iter().map(|&i| chosen[i]).collect(), test: part.rest.iter().map(|&i| chosen[i]).collect() })
}

/// The task names of a split file (`test_tasks.txt`): one per line, surrounding whitespace
/// trimmed, blank lines skipped.
pub fn read_task_names(path: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        if name.contains(char::is_whitespace) {
            return Err(Error::Input { path: path.to_path_buf(), line: i + 1, msg: format!("`{name}` is not a task name (it has spaces)") });
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The file of task `name` in `tasks_dir`.
pub fn task_path(tasks_dir: &Path, name: &str) -> PathBuf {
    tasks_dir.join(format!("{name}.json"))
}
