//! The points of a sweep: the cartesian product of its axes and seeds, each with a readable
//! run directory name and a checked training configuration.
//!
//! Order: seeds outermost, then the axes with the first axis slowest, so that a sweep stopped
//! half way has every point at its first seeds (a whole table, with fewer seeds) rather than
//! every seed of half the points.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Value;

use polyadapt::{Error, Result};

use super::config::Sweep;
use crate::cli::train::config::Config;

/// One run of the sweep.
pub struct Point {
    /// Axis name and the value's label, in axis order.
    pub labels: Vec<(String, Value)>,
    pub seed: u64,
    /// `method=lora,lambda=0.5/seed=1`, relative to the sweep's output directory.
    pub dir: PathBuf,
    pub config: Config,
}

impl Point {
    /// `name/seed=N`, as shown in progress lines and errors.
    pub fn display(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Every point, each configuration checked (keys, types, values, that the data files exist).
/// Fails on the first bad point, naming the point and the key, before anything runs.
pub fn expand(sweep: &Sweep) -> Result<Vec<Point>> {
    let sizes: Vec<usize> = sweep.axes.iter().map(|a| a.choices.len()).collect();
    let combos: usize = sizes.iter().product();
    let mut points = Vec::with_capacity(combos * sweep.seeds.len());
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (seed_index, &seed) in sweep.seeds.iter().enumerate() {
        for combo in 0..combos {
            // Mixed-radix digits of `combo`, the first axis most significant.
            let mut rest = combo;
            let mut picks = vec![0; sizes.len()];
            for (i, &n) in sizes.iter().enumerate().rev() {
                picks[i] = rest % n;
                rest /= n;
            }
            // A variant with `seeds = N` runs at the sweep's first N seeds only.
            if sweep.axes.iter().zip(&picks).any(|(a, &c)| a.choices[c].first_seeds.is_some_and(|n| seed_index >= n)) {
                continue;
            }
            let labels: Vec<(String, Value)> = sweep.axes.iter().zip(&picks).map(|(a, &c)| (a.name.clone(), a.choices[c].label.clone())).collect();
            let name = labels.iter().map(|(n, v)| format!("{}={}", file_safe(n), file_safe(&label_text(v)))).collect::<Vec<_>>().join(",");
            let dir = if name.is_empty() { PathBuf::from(format!("seed={seed}")) } else { PathBuf::from(&name).join(format!("seed={seed}")) };
            let shown = dir.display().to_string();
            if let Some(other) = seen.insert(dir.clone(), labels_text(&labels)) {
                return Err(Error::Usage(format!(
                    "{}: the points {other} and {} both get the directory name {shown}: rename a variant or a value",
                    sweep.path.display(),
                    labels_text(&labels)
                )));
            }
            let config = point_config(sweep, &picks, seed).map_err(|e| e.context(format!("{}: point {shown}", sweep.path.display())))?;
            points.push(Point { labels, seed, dir, config });
        }
    }
    Ok(points)
}

/// The base configuration with the point's choices, seed and the fixed settings applied, then
/// checked as `engine-train train` checks a configuration.
fn point_config(sweep: &Sweep, picks: &[usize], seed: u64) -> Result<Config> {
    let mut doc = sweep.base.clone();
    let key_err = |key: &dyn std::fmt::Display, m: String| Error::config(&sweep.path, key.to_string(), m);
    for (axis, &c) in sweep.axes.iter().zip(picks) {
        let choice = &axis.choices[c];
        for r in &choice.remove {
            r.remove(&mut doc).map_err(|m| key_err(r, format!("{m} (variant {}={})", axis.name, label_text(&choice.label))))?;
        }
        for (k, v) in &choice.set {
            k.set(&mut doc, v).map_err(|m| key_err(k, m))?;
        }
    }
    let seed_key = crate::cli::train::key_path::KeyPath::parse("run.seed").expect("valid");
    seed_key.set(&mut doc, &Value::Integer(seed as i64)).map_err(|m| key_err(&seed_key, m))?;
    for (k, v) in &sweep.fixed {
        k.set(&mut doc, v).map_err(|m| key_err(k, m))?;
    }
    let config = Config::from_value(doc, &sweep.base_path)?;
    check_data_files(&config, &sweep.base_path)?;
    Ok(config)
}

/// The data files a point reads exist (relative paths are taken from the working directory,
/// as `engine-train train` takes them), so a typo fails now and not hours into the sweep.
fn check_data_files(cfg: &Config, base_path: &std::path::Path) -> Result<()> {
    let mut files: Vec<(String, &std::path::Path)> = Vec::new();
    for (i, t) in cfg.tasks.iter().enumerate() {
        files.push((format!("tasks[{i}].train.path"), &t.train.path));
        for (j, e) in t.eval.iter().enumerate() {
            files.push((format!("tasks[{i}].eval[{j}].path"), &e.path));
        }
    }
    if let Some(a) = &cfg.align {
        files.push(("align.source".into(), &a.source));
        files.push(("align.target".into(), &a.target));
    }
    for (field, p) in files {
        if !p.is_file() {
            return Err(Error::config(base_path, field, format!("no such file: {} (relative to {})", p.display(), cwd())));
        }
    }
    Ok(())
}

fn cwd() -> String {
    std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "the working directory".into())
}

/// A value as it reads in a run name: strings bare, arrays joined by `+`, numbers and booleans
/// as TOML writes them.
pub fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(label_text).collect::<Vec<_>>().join("+"),
        other => other.to_string(),
    }
}

fn labels_text(labels: &[(String, Value)]) -> String {
    let parts: Vec<String> = labels.iter().map(|(n, v)| format!("{n}={}", label_text(v))).collect();
    if parts.is_empty() {
        "(no axes)".into()
    } else {
        parts.join(",")
    }
}

/// Keeps letters, digits and `. _ + -`; anything else (a `/`, a space, a quote) becomes `_`.
fn file_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || ".+_-".contains(c) { c } else { '_' }).collect()
}
