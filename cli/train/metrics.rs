//! `metrics.jsonl`: one JSON object per logged step, flushed as it is written so that a killed
//! run keeps what it logged. On resume the lines after the resumed step are dropped (the killed
//! run may have logged steps its last checkpoint does not cover).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use polyadapt::models::weights::write_atomic;
use polyadapt::{Error, Result};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    /// The weighted total that was minimised.
    pub loss: f64,
    /// Each task's loss, the alignment loss and the regulariser, unweighted.
    pub losses: std::collections::BTreeMap<String, f64>,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub examples_per_s: f64,
}

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl`, keeping the lines of steps up to `keep_through` (all
    /// others are dropped; 0 starts afresh).
    pub fn open(run_dir: &Path, keep_through: usize) -> Result<MetricsLog> {
        let path = run_dir.join("metrics.jsonl");
        let kept: Vec<String> = read(&path)?.into_iter().filter(|m| m.step <= keep_through && keep_through > 0).map(|m| serde_json::to_string(&m).expect("serialises")).collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        Ok(MetricsLog { path, file })
    }

    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(m).expect("serialises");
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| Error::io("cannot write", &self.path, e))?;
        self.file.flush().map_err(|e| Error::io("cannot write", &self.path, e))
    }
}

/// Every step logged in `path` (none if it does not exist). A torn last line (the process was
/// killed mid-write) is ignored; any other bad line is an error naming it.
pub fn read(path: &Path) -> Result<Vec<StepMetrics>> {
    let Ok(file) = File::open(path) else { return Ok(Vec::new()) };
    let lines: Vec<String> = BufReader::new(file).lines().collect::<std::io::Result<_>>().map_err(|e| Error::io("cannot read", path, e))?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(Error::Input { path: path.to_path_buf(), line: i + 1, msg: e.to_string() }),
        }
    }
    Ok(out)
}
