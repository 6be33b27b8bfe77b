//! The sweep file: a base training configuration and the axes to vary it along.
//!
//! ```toml
//! base = "qa-base.toml"            # relative to this file; or an inline [base] table
//! seeds = 5                        # seeds 0..4; or a list, seeds = [1, 7, 42]
//! set = { "run.epochs" = 4 }       # optional: settings for every point, on top of the base
//!
//! [grid]                           # any training-config keys, each with its values
//! "align.weight" = [0, 0.1, 0.5, 1, 2]
//!
//! [names]                          # optional short names for the run directories
//! "align.weight" = "lambda"
//!
//! [variants.method.lora]           # named override sets along an axis (here `method`)
//! remove = ["methods.prefix", "align"]
//! set = { "methods.lora.r" = 8 }
//!
//! [variants.method.zero-shot]      # a variant may run at the sweep's first N seeds only:
//! seeds = 1                        # for points that do not depend on the seed (evaluation only)
//! set = { "run.evaluate_only" = true }
//!
//! [quick]                          # --quick: a CI-sized form
//! seeds = [0, 1]
//! set = { "run.steps" = 2, "tasks[*].eval[*].sample" = 10 }
//! grid = { "align.weight" = [0, 1] }      # fewer values of an axis
//! variants = { method = ["lora"] }        # fewer variants of an axis
//! ```
//!
//! Keys are paths as `cli/sweep/path.rs` reads them. The axes are the variant axes (sorted by
//! name) then the grid keys (sorted); a point applies the top-level `set`, its variants
//! (removals, then settings), its grid values, `run.seed`, then `[quick].set` and `--set`. These last two may not
//! touch a grid key (that would silently collapse the axis): `[quick].grid` is for that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Value;

use polyadapt::{Error, Result};

use crate::cli::train::key_path::{overrides, parse_set, KeyPath};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    base: Value,
    #[serde(default)]
    seeds: Option<Value>,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    names: BTreeMap<String, String>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    variants: BTreeMap<String, BTreeMap<String, VariantFile>>,
    #[serde(default)]
    quick: Option<QuickFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    seeds: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickFile {
    #[serde(default)]
    seeds: Option<Value>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    variants: BTreeMap<String, Vec<String>>,
}

/// One value of an axis: its label in run names, and what it does to the base configuration.
#[derive(Clone, Debug)]
pub struct Choice {
    pub label: Value,
    pub remove: Vec<KeyPath>,
    pub set: Vec<(KeyPath, Value)>,
    /// A variant's `seeds = N`: it runs at the sweep's first N seeds only.
    pub first_seeds: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Axis {
    /// The name in run directories: a variant axis's name, a grid key or its short name.
    pub name: String,
    /// The grid key (none for a variant axis).
    pub key: Option<KeyPath>,
    pub choices: Vec<Choice>,
}

/// A sweep ready to expand: everything checked that can be checked without the points.
pub struct Sweep {
    pub path: PathBuf,
    /// The base configuration document (with the top-level `set` applied), and the file
    /// errors in it are reported against.
    pub base: Value,
    pub base_path: PathBuf,
    pub axes: Vec<Axis>,
    pub seeds: Vec<u64>,
    /// `[quick].set` (with `--quick`) and `--set`, applied to every point last.
    pub fixed: Vec<(KeyPath, Value)>,
}

impl Sweep {
    /// Reads and checks a sweep file; `quick` applies its `[quick]` table; `cli_set` are
    /// `key=value` overrides for every point.
    pub fn load(path: &Path, quick: bool, cli_set: &[String]) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        let doc: Value = toml::from_str(&text).map_err(|e| Error::format(path, e.to_string().trim().replace('\n', " ")))?;
        let file: SweepFile = serde_path_to_error::deserialize(doc).map_err(|e| Error::config(path, e.path().to_string(), e.inner().to_string()))?;
        let bad = |field: &str, msg: String| Error::config(path, field, msg);
        let (base, base_path) = match &file.base {
            Value::String(name) => {
                let p = path.parent().unwrap_or(Path::new("")).join(name);
                let t = std::fs::read_to_string(&p).map_err(|e| Error::io("cannot read", &p, e).context(format!("{}: base", path.display())))?;
                (Value::Table(toml::from_str(&t).map_err(|e| Error::format(&p, e.to_string().trim().replace('\n', " ")))?), p)
            }
            Value::Table(t) => (Value::Table(t.clone()), path.to_path_buf()),
            _ => return Err(bad("base", "expected the name of a training configuration file, or a table".into())),
        };

        let mut base = base;
        for (k, v) in overrides(&file.set, "set").map_err(|m| bad("set", m))? {
            k.set(&mut base, &v).map_err(|m| bad(&format!("set.{k}"), m))?;
        }

        let mut grid = Vec::new();
        grid_axes(&file.grid, "", &mut grid).map_err(|(k, m)| bad(&format!("grid.{k}"), m))?;
        for k in file.names.keys() {
            if !grid.iter().any(|(key, _)| key.to_string() == *k) {
                return Err(bad(&format!("names.{k}"), "not a key of [grid]".into()));
            }
        }
        let mut axes: Vec<Axis> = Vec::new();
        for (name, variants) in &file.variants {
            if variants.is_empty() {
                return Err(bad(&format!("variants.{name}"), "no variants: give at least one".into()));
            }
            let mut choices = Vec::new();
            for (vname, v) in variants {
                let field = format!("variants.{name}.{vname}");
                let remove = v.remove.iter().map(|r| KeyPath::parse(r)).collect::<std::result::Result<_, _>>().map_err(|m| bad(&format!("{field}.remove"), m))?;
                let set = overrides(&v.set, "set").map_err(|m| bad(&field, m))?;
                let first_seeds = match &v.seeds {
                    None => None,
                    Some(Value::Integer(n)) if *n >= 1 => Some(*n as usize),
                    Some(other) => {
                        return Err(bad(&format!("{field}.seeds"), format!("expected how many of the sweep's first seeds to run (at least 1), found `{other}`")))
                    }
                };
                choices.push(Choice { label: Value::String(vname.clone()), remove, set, first_seeds });
            }
            axes.push(Axis { name: name.clone(), key: None, choices });
        }
        for (key, values) in grid {
            let name = file.names.get(&key.to_string()).cloned().unwrap_or_else(|| key.to_string());
            let choices = values.into_iter().map(|v| Choice { label: v.clone(), remove: Vec::new(), set: vec![(key.clone(), v)], first_seeds: None }).collect();
            axes.push(Axis { name, key: Some(key), choices });
        }
        let mut names = BTreeSet::from(["seed".to_string()]);
        for a in &axes {
            if !names.insert(a.name.clone()) {
                return Err(bad(&a.name, format!("two axes (or an axis and the seeds) are named `{}`", a.name)));
            }
        }
        let base_seed = base.get("run").and_then(|r| r.get("seed")).and_then(Value::as_integer).unwrap_or(0);
        let mut seeds = match &file.seeds {
            Some(v) => parse_seeds(v).map_err(|m| bad("seeds", m))?,
            None => vec![base_seed.max(0) as u64],
        };

        let mut fixed = Vec::new();
        if quick {
            let q = file.quick.as_ref().ok_or_else(|| bad("quick", "this sweep has no [quick] table, which --quick needs".into()))?;
            if let Some(v) = &q.seeds {
                seeds = parse_seeds(v).map_err(|m| bad("quick.seeds", m))?;
            }
            let mut qgrid = Vec::new();
            grid_axes(&q.grid, "", &mut qgrid).map_err(|(k, m)| bad(&format!("quick.grid.{k}"), m))?;
            for (key, values) in qgrid {
                let axis = axes.iter_mut().find(|a| a.key.as_ref().is_some_and(|k| k.same_as(&key)));
                let axis = axis.ok_or_else(|| bad(&format!("quick.grid.{key}"), "not a key of [grid]".into()))?;
                axis.choices = values.into_iter().map(|v| Choice { label: v.clone(), remove: Vec::new(), set: vec![(key.clone(), v)], first_seeds: None }).collect();
            }
            for (name, keep) in &q.variants {
                let field = format!("quick.variants.{name}");
                let axis = axes.iter_mut().find(|a| a.key.is_none() && a.name == *name).ok_or_else(|| bad(&field, "no such variant axis".into()))?;
                if keep.is_empty() {
                    return Err(bad(&field, "empty list: give at least one variant".into()));
                }
                if let Some(k) = keep.iter().find(|k| !axis.choices.iter().any(|c| c.label.as_str() == Some(k.as_str()))) {
                    return Err(bad(&field, format!("no variant `{k}` in [variants.{name}]")));
                }
                axis.choices.retain(|c| keep.iter().any(|k| c.label.as_str() == Some(k.as_str())));
            }
            fixed.extend(overrides(&q.set, "quick.set").map_err(|m| bad("quick.set", m))?);
        }
        for spec in cli_set {
            fixed.push(parse_set(spec)?);
        }
        for (key, _) in &fixed {
            if key.same_as(&KeyPath::parse("run.seed").expect("valid")) {
                return Err(Error::Usage(format!("`run.seed` is set by the seeds of {}: give `seeds` instead", path.display())));
            }
            if let Some(a) = axes.iter().find(|a| a.key.as_ref().is_some_and(|k| k.same_as(key))) {
                return Err(Error::Usage(format!("`{key}` is the grid axis `{}` of {}: change its values under [quick.grid], not with a setting for every point", a.name, path.display())));
            }
        }
        Ok(Sweep { path: path.to_path_buf(), base, base_path, axes, seeds, fixed })
    }
}

/// The grid's axes: each key with a list of values. A key written unquoted (`align.weight =
/// [..]` under `[grid]`) arrives as nested tables; those are followed to the lists.
fn grid_axes(table: &toml::Table, prefix: &str, out: &mut Vec<(KeyPath, Vec<Value>)>) -> std::result::Result<(), (String, String)> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Array(values) if values.is_empty() => return Err((key, "empty list: give at least one value".into())),
            Value::Array(values) => {
                let path = KeyPath::parse(&key).map_err(|m| (key.clone(), m))?;
                if path.same_as(&KeyPath::parse("run.seed").expect("valid")) {
                    return Err((key, "give seeds with `seeds`, not as a grid key".into()));
                }
                out.push((path, values.clone()));
            }
            Value::Table(t) => grid_axes(t, &key, out)?,
            other => return Err((key, format!("expected a list of values, found `{other}`"))),
        }
    }
    Ok(())
}

/// `seeds = N` (0..N) or a list of distinct seeds.
fn parse_seeds(v: &Value) -> std::result::Result<Vec<u64>, String> {
    let seeds: Vec<u64> = match v {
        Value::Integer(n) if *n >= 1 => (0..*n as u64).collect(),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|s| s.as_integer().filter(|&n| n >= 0).map(|n| n as u64).ok_or_else(|| format!("`{s}` is not a seed (a non-negative integer)")))
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err(format!("expected a number of seeds (at least 1) or a non-empty list of seeds, found `{v}`")),
    };
    let distinct: BTreeSet<_> = seeds.iter().collect();
    if distinct.len() != seeds.len() {
        return Err("a seed is listed twice".into());
    }
    Ok(seeds)
}

